"""MAML-PPO: Adam epochs on the clipped query surrogate (Schulman et al., 2017; Rothfuss et al., 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..core.maml import Adaptation
from ..core.objective import MetaObjective
from ..core.params import Params
from .settings import ALGORITHMS, PPOConfig


@ALGORITHMS.register("ppo")
class PPO:
    """The PPO meta-update on ``MetaObjective``.

    For ``epochs`` epochs: rebuild θ'_i(θ) with the differentiable inner loop from the current θ
    (the first epoch reuses the one built while sampling, if it kept its graph), maximise the clipped surrogate
    (Schulman et al., 2017, Eq. 7) plus ``entropy_coef`` times the mean entropy of the adapted
    policies, clip the gradient's global norm to ``max_grad_norm`` and take an Adam step of
    size ``lr``. Adam's moments persist across meta-iterations and are checkpointed.
    """

    progress: ClassVar[dict[str, str]] = {}

    def __init__(self, config: PPOConfig):
        self.config = config
        self._optimizer: torch.optim.Adam | None = None
        self._pending_state: dict | None = None

    def loss(self, objective: MetaObjective, adaptation: Adaptation) -> tuple[torch.Tensor, torch.Tensor]:
        """(−clipped surrogate − entropy bonus, clipped surrogate), scalars differentiable w.r.t. θ."""
        adapted = adaptation.adapted
        surrogate, _ = objective.surrogate_and_kl(adapted, clip_eps=self.config.clip_eps)
        bonus = self.config.entropy_coef * objective.entropy(adapted) if self.config.entropy_coef else 0.0
        return -(surrogate + bonus), surrogate

    def step(self, objective: MetaObjective, params: Params, adaptation: Adaptation,
             generator: torch.Generator) -> dict:
        """Update ``params`` in place; return the step's statistics (surrogates, KL, gradient norm)."""
        optimizer = self._bind(params)
        for epoch in range(self.config.epochs):
            with torch.enable_grad():
                if epoch or not adaptation.differentiable:
                    adaptation = objective.adapt(params)
                loss, surrogate = self.loss(objective, adaptation)
                optimizer.zero_grad()
                loss.backward()
            if epoch == 0:
                surrogate_before = surrogate.item()
            grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), self.config.max_grad_norm).item()
            optimizer.step()
        surrogate_after, kl = objective.evaluate(params)
        return {"surrogate_before": surrogate_before, "surrogate_after": surrogate_after, "kl": kl,
                "grad_norm": grad_norm}

    def _bind(self, params: Params) -> torch.optim.Adam:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(list(params.values()), lr=self.config.lr)
            if self._pending_state:
                self._optimizer.load_state_dict(self._pending_state)
        return self._optimizer

    def state_dict(self) -> dict:
        """Adam's state (empty before the first step)."""
        return self._optimizer.state_dict() if self._optimizer else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore Adam's state (applied when the optimiser is bound to θ)."""
        if self._optimizer:
            self._optimizer.load_state_dict(state)
        else:
            self._pending_state = state
