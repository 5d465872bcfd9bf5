"""The inner loop: θ'_i = θ − α ∇_θ L_VPG(θ; support episodes of task i) (Finn et al., 2017, Eq. 1 / Alg. 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from tensordict import TensorDict

from .policy import GaussianMLPPolicy, Params, expand_params


def masked_task_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid ``[episode, time]`` steps of each task: ``[task, E, H]`` → ``[task]``."""
    return (x * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


def vpg_loss(policy: GaussianMLPPolicy, params: Params, episodes: TensorDict, estimator: str = "maml") -> torch.Tensor:
    """REINFORCE loss per task, ``[task]``, whose gradient is the adaptation step's direction.

    ``"maml"``: L_i = −mean_t log π_θi(a_t|s_t) Â_t, the inner-loop objective of MAML-RL (Finn
    et al., 2017, Section 3.2), with advantages from ``compute_advantages`` in place of raw
    returns. ``"lvc"``: L_i = −mean_t π_θi(a_t|s_t) / π_b(a_t|s_t) Â_t with π_b the behaviour
    policy that sampled the episodes (``log_prob``), ProMP's low-variance curvature objective
    (Rothfuss et al., 2019, Section 5). At θ_i = b both give the same gradient, hence the
    same adaptation step; LVC's second derivatives add the term Σ_t ∇log π ∇log πᵀ Â through which
    the meta-gradient sees how θ shapes the sampling of the support episodes, a term the first
    form drops. Only the meta-gradient through the step differs.
    """
    loc, log_std = policy.per_task(params, episodes["observation"])
    log_prob = policy.log_prob(loc, log_std, episodes["action"])
    weight = torch.exp(log_prob - episodes["log_prob"]) if estimator == "lvc" else log_prob
    return -masked_task_mean(weight * episodes["advantage"], episodes["mask"])


@dataclass
class Adaptation:
    """The inner-loop trajectory θ_0 → θ_1 → … → θ_K of every task, kept for differentiation.

    ``params[k]`` is θ_k with a leading task dim (``params[0]`` is θ expanded per task);
    ``grads[k]`` is ∇L(θ_k; support_k) with the graph kept (empty for first-order MAML, whose
    adaptation Jacobian is the identity).
    """

    params: list[Params]
    grads: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    lr: float = 0.0
    estimator: str = "maml"  # the inner loss's form, see ``vpg_loss``

    @property
    def adapted(self) -> Params:
        """θ'_i = θ_K, ``[task, ...]`` per parameter."""
        return self.params[-1]

    def jvp(self, v: Params) -> Params:
        """J v with J = dθ_K/dθ_0 = Π_k (I − α H_k); per-task ``v`` ``[task, ...]``."""
        for k, g in enumerate(self.grads):
            v = self._step(k, g, v)
        return v

    def vjp(self, v: Params) -> Params:
        """Jᵀ v; each factor I − α H_k is symmetric, so Jᵀ applies them in reverse order."""
        for k in reversed(range(len(self.grads))):
            v = self._step(k, self.grads[k], v)
        return v

    def _step(self, k: int, g: tuple[torch.Tensor, ...], v: Params) -> Params:
        inputs = list(self.params[k].values())
        hv = torch.autograd.grad(g, inputs, list(v.values()), retain_graph=True)
        return {name: x - self.lr * h for (name, x), h in zip(v.items(), hv)}


def inner_step(policy: GaussianMLPPolicy, adaptation: Adaptation, episodes: TensorDict,
               first_order: bool) -> Adaptation:
    """Append one VPG step on ``episodes`` (support episodes of every task) to ``adaptation``.

    The step is differentiable w.r.t. θ (second-order MAML) unless ``first_order``, which
    treats ∇L as a constant (first-order MAML, Finn et al., 2017, Section 5.2).
    """
    # parameters that carry no graph (evaluation of a fixed θ) become leaves to differentiate
    params = {k: p if p.requires_grad else p.detach().requires_grad_() for k, p in adaptation.params[-1].items()}
    with torch.enable_grad():
        loss = vpg_loss(policy, params, episodes, adaptation.estimator).sum()
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    adaptation.params.append({k: p - adaptation.lr * g for (k, p), g in zip(params.items(), grads)})
    if not first_order:
        adaptation.grads.append(grads)
    return adaptation


def adapt(policy: GaussianMLPPolicy, theta: Params, supports: list[TensorDict], lr: float,
          first_order: bool, num_tasks: int, estimator: str = "maml") -> Adaptation:
    """Run the whole inner loop on already collected support episodes (one batch per step)."""
    adaptation = Adaptation([expand_params(theta, num_tasks)], lr=lr, estimator=estimator)
    for episodes in supports:
        inner_step(policy, adaptation, episodes, first_order)
    return adaptation

