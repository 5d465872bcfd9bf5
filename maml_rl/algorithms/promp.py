"""ProMP: Proximal Meta-Policy Search (Rothfuss et al., 2019)."""

from __future__ import annotations

import torch

from ..core.maml import Adaptation
from ..core.objective import MetaObjective
from ..core.params import Params
from .ppo import PPO
from .settings import ALGORITHMS, ProMPConfig


@ALGORITHMS.register("promp")
class ProMP(PPO):
    """ProMP's meta-update: PPO's epochs on J(θ) = J^CLIP(θ'(θ)) − η · D̄_KL(π_θo ‖ π_θ).

    Rothfuss et al. (2019), Section 6 (the ProMP objective): the clipped surrogate of the adapted policies
    on the query episodes (``PPO``), minus η times the KL between the pre-update policies that
    sampled each inner step's support episodes and the current ones, on the support states
    (``MetaObjective.inner_kl``). The clipping bounds the post-update policies, the penalty the
    pre-update ones, whose change the clipped surrogate does not see. η and Adam's moments are
    checkpointed.
    """

    def __init__(self, config: ProMPConfig):
        super().__init__(config)
        self.kl_coef = config.kl_coef

    def loss(self, objective: MetaObjective, adaptation: Adaptation) -> tuple[torch.Tensor, torch.Tensor]:
        """(−clipped surrogate − entropy bonus + η · inner KL, clipped surrogate)."""
        loss, surrogate = super().loss(objective, adaptation)
        return loss + self.kl_coef * objective.inner_kl(adaptation), surrogate

    def step(self, objective: MetaObjective, params: Params, adaptation: Adaptation,
             generator: torch.Generator) -> dict:
        """PPO's step on the penalised objective; adds ``inner_kl`` (after the update) and ``kl_coef``."""
        stats = super().step(objective, params, adaptation, generator)
        with torch.no_grad(), torch.enable_grad():
            inner_kl = objective.inner_kl(objective.adapt(params, differentiable=False)).item()
        stats.update(inner_kl=inner_kl, kl_coef=self.kl_coef)
        if self.config.adaptive_kl:
            if inner_kl < self.config.target_kl / 1.5:
                self.kl_coef /= 2
            elif inner_kl > self.config.target_kl * 1.5:
                self.kl_coef *= 2
        return stats

    def state_dict(self) -> dict:
        """Adam's state and η."""
        return {"optimizer": super().state_dict(), "kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        """Restore Adam's state and η."""
        super().load_state_dict(state["optimizer"])
        self.kl_coef = state["kl_coef"]
