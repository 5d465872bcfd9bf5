"""The outer-loop objective shared by every meta-optimiser: the query surrogate of θ'_i(θ)."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from .inner import Adaptation, adapt, masked_task_mean
from .policy import GaussianMLPPolicy, Params


class MetaObjective:
    """L(θ) = mean_i mean_t [π_θ'_i(a|s) / π_old(a|s) · Â] on the query episodes of task i.

    θ'_i(θ) is the inner loop re-run from θ on the (fixed) support episodes, so the gradient
    flows through the adaptation (Finn et al., 2017, Alg. 3, line 10). The KL term is
    mean_i mean_t KL(π_old ‖ π_θ'_i) on the query states, TRPO's trust-region measure
    (Schulman et al., 2015, Eq. 12).

    Args:
        policy: the policy.
        supports: one batch of support episodes ``[task, episode, time]`` per inner step.
        query: query episodes ``[task, episode, time]`` with ``advantage``, ``log_prob`` and
            ``loc``/``log_std`` of the behaviour policy θ'_old.
        lr: inner learning rate α.
        first_order: drop the second-order terms of the adaptation.
        estimator: the inner loss's form, ``"maml"`` or ``"lvc"`` (see ``inner.vpg_loss``).
    """

    def __init__(self, policy: GaussianMLPPolicy, supports: list[TensorDict], query: TensorDict,
                 lr: float, first_order: bool, estimator: str = "maml"):
        self.policy, self.supports, self.query = policy, supports, query
        self.lr, self.first_order, self.estimator = lr, first_order, estimator

    def adapt(self, theta: Params, supports: list[TensorDict] | None = None,
              differentiable: bool = True) -> Adaptation:
        """θ'(θ) on the support episodes (or a subsample of them).

        With ``differentiable=False`` the inner gradients are constants (same values, no
        second-order graph), for evaluations that are never differentiated.
        """
        supports = self.supports if supports is None else supports
        first_order = self.first_order or not differentiable
        return adapt(self.policy, theta, supports, self.lr, first_order, self.query.shape[0], self.estimator)

    def surrogate_and_kl(self, adapted: Params, query: TensorDict | None = None, clip_eps: float | None = None):
        """Surrogate and mean KL (scalars) of adapted parameters ``[task, ...]`` on the query.

        With ``clip_eps`` the surrogate is PPO's clipped one, mean of
        min(r Â, clip(r, 1 − ε, 1 + ε) Â) (Schulman et al., 2017, Eq. 7): a ratio r past 1 ± ε
        in the direction that Â rewards earns nothing more.
        """
        q = self.query if query is None else query
        loc, log_std = self.policy.per_task(adapted, q["observation"])
        log_prob = self.policy.log_prob(loc, log_std, q["action"])
        ratio = torch.exp(log_prob - q["log_prob"])
        gain = ratio * q["advantage"]
        if clip_eps is not None:
            gain = torch.minimum(gain, ratio.clamp(1 - clip_eps, 1 + clip_eps) * q["advantage"])
        surrogate = masked_task_mean(gain, q["mask"]).mean()
        kl = self.policy.kl(q["loc"], q["log_std"][:, 0, 0], loc, log_std)
        return surrogate, masked_task_mean(kl, q["mask"]).mean()

    @torch.no_grad()
    def evaluate(self, theta: Params) -> tuple[float, float]:
        """Surrogate and KL at θ, the inner loop run without building a graph."""
        with torch.enable_grad():
            adapted = {k: v.detach() for k, v in self.adapt(theta, differentiable=False).adapted.items()}
        surrogate, kl = self.surrogate_and_kl(adapted)
        return surrogate.item(), kl.item()
