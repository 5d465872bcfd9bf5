"""The outer-loop objective shared by every meta-optimiser: the query surrogate of θ'_i(θ)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict

from .maml import Adaptation, InnerLoop
from .params import Params, masked_task_mean
from .sampler import valid_steps


class MetaObjective:
    """L(θ) = mean_i mean_t [π_θ'_i(a|s) / π_old(a|s) · Â] on the query episodes of task i.

    θ'_i(θ) is the inner loop re-run from θ on the (fixed) support episodes, so the gradient
    flows through the adaptation (Finn et al., 2017, Alg. 3, line 10). The KL term is
    mean_i mean_t KL(π_old ‖ π_θ'_i) on the query states, TRPO's trust-region measure
    (Schulman et al., 2015, Eq. 12).

    Args:
        inner_loop: the adaptation (policy, step sizes, first-order, estimator).
        supports: one batch of support episodes ``[task, episode, time]`` per inner step.
        query: query episodes ``[task, episode, time]`` with ``advantage``, ``log_prob`` and
            ``dist`` of the behaviour policy θ'_old.
    """

    def __init__(self, inner_loop: InnerLoop, supports: list[TensorDict], query: TensorDict):
        self.inner_loop, self.policy, self.supports, self.query = inner_loop, inner_loop.policy, supports, query
        # every loss reads the valid steps only (``valid_steps``), packed once per batch
        self._packed = {id(b): valid_steps(b) for b in (*supports, query)}

    @property
    def num_tasks(self) -> int:
        return self.query.shape[0]

    def packed(self, batch: TensorDict) -> TensorDict:
        """``valid_steps(batch)``, computed once for the objective's own batches."""
        packed = self._packed.get(id(batch))
        return valid_steps(batch) if packed is None else packed

    def adapt(self, theta: Params, supports: list[TensorDict] | None = None,
              differentiable: bool = True) -> Adaptation:
        """θ'(θ) on the support episodes (or a subsample of them).

        With ``differentiable=False`` the inner gradients are constants (same values, no
        second-order graph), for evaluations that are never differentiated.
        """
        supports = [self.packed(s) for s in (self.supports if supports is None else supports)]
        return self.inner_loop.adapt(theta, supports, self.query.shape[0], differentiable)

    def groups(self) -> list[MetaObjective]:
        """The objective split into consecutive groups of ``Policy.tasks_per_pass`` tasks (one
        chunk of the policy's forward each), or ``[self]`` when the tasks fit one pass or the
        policy couples them."""
        batches = [self.packed(b) for b in (*self.supports, self.query)]
        rows = max(b["mask"][0].numel() for b in batches)
        size = self.policy.tasks_per_pass(rows)
        if size is None or size >= self.num_tasks:
            return [self]
        return [MetaObjective(self.inner_loop, [b[start:start + size] for b in batches[:-1]],
                              batches[-1][start:start + size]) for start in range(0, self.num_tasks, size)]

    def gradient(self, theta: Params, loss: Callable[[MetaObjective, Adaptation], torch.Tensor],
                 adaptation: Adaptation | None = None, retain_graph: bool = False) -> tuple[float, tuple[torch.Tensor, ...]]:
        """``loss(self, θ'(θ))`` and its gradient w.r.t. θ, for a loss that is a mean over tasks.

        One pass when the tasks fit one (``groups``), reusing ``adaptation`` (the inner loop built
        while sampling) if it is differentiable, its graph kept with ``retain_graph``. Larger
        meta-batches are differentiated group by group, each group's inner loop re-run from θ and
        its loss weighted by its share of the tasks: the same mean and gradient (summed in
        another order), with only one group's second-order graph alive at a time, which bounds
        the peak memory of the backward pass (docs/speed.md).

        Returns:
            the loss (a float) and ∇_θ loss, one tensor per entry of ``theta`` in its order and shape.
        """
        groups = self.groups()
        if len(groups) == 1:
            reuse = adaptation is not None and adaptation.differentiable
            with torch.enable_grad():
                value = loss(self, adaptation if reuse else self.adapt(theta))
                grads = torch.autograd.grad(value, list(theta.values()), retain_graph=retain_graph)
            return value.item(), grads
        total, grads = 0.0, None
        for group in groups:
            with torch.enable_grad():
                value = loss(group, group.adapt(theta)) * (group.num_tasks / self.num_tasks)
                part = torch.autograd.grad(value, list(theta.values()))
            total += value.item()
            grads = part if grads is None else tuple(a + b for a, b in zip(grads, part))
        return total, grads

    def surrogate_and_kl(self, adapted: Params, query: TensorDict | None = None, clip_eps: float | None = None):
        """Surrogate and mean KL (scalars) of adapted parameters ``[task, ...]`` on the query.

        With ``clip_eps`` the surrogate is PPO's clipped one, mean of
        min(r Â, clip(r, 1 − ε, 1 + ε) Â) (Schulman et al., 2017, Eq. 7): a ratio r past 1 ± ε
        in the direction that Â rewards earns nothing more. The policy's ``penalty`` on the
        query steps, if any, is subtracted.
        """
        q = self.packed(self.query if query is None else query)
        dist = self.policy.distribution(adapted, q["observation"])
        ratio = torch.exp(self.policy.log_prob(dist, q["action"]) - q["log_prob"])
        gain = ratio * q["advantage"]
        if clip_eps is not None:
            gain = torch.minimum(gain, ratio.clamp(1 - clip_eps, 1 + clip_eps) * q["advantage"])
        surrogate = masked_task_mean(gain, q["mask"]).mean()
        penalty = self.policy.penalty(dist, q["mask"])
        if penalty is not None:  # the policy's auxiliary loss (e.g. a mixture's load balancing)
            surrogate = surrogate - penalty
        kl = self.policy.kl(dict(q["dist"].items()), dist)
        return surrogate, masked_task_mean(kl, q["mask"]).mean()

    def inner_kl(self, adaptation: Adaptation) -> torch.Tensor:
        """Mean over inner steps k of mean_i mean_t KL(π_old,k ‖ π_θk,i) on the support states of step k.

        π_old,k is the policy that sampled support k (its stored ``dist``), θ_k the adaptation's
        parameters before step k (θ_0 = θ): the KL between the pre-update policies of ProMP's
        penalty (Rothfuss et al., 2019, Section 6). A scalar, 0 without support episodes.
        """
        kls = []
        for params, support in zip(adaptation.params, map(self.packed, self.supports)):
            kl = self.policy.kl(dict(support["dist"].items()), self.policy.distribution(params, support["observation"]))
            kls.append(masked_task_mean(kl, support["mask"]).mean())
        return torch.stack(kls).mean() if kls else torch.zeros(())

    def entropy(self, adapted: Params) -> torch.Tensor:
        """Mean entropy of the adapted policies over the valid query steps (a scalar)."""
        q = self.packed(self.query)
        entropy = self.policy.entropy(self.policy.distribution(adapted, q["observation"]))
        return masked_task_mean(entropy.expand_as(q["mask"]), q["mask"]).mean()

    @torch.no_grad()
    def evaluate(self, theta: Params) -> tuple[float, float]:
        """Surrogate and KL at θ, the inner loop run without building a graph."""
        with torch.enable_grad():
            adapted = {k: v.detach() for k, v in self.adapt(theta, differentiable=False).adapted.items()}
        surrogate, kl = self.surrogate_and_kl(adapted)
        return surrogate.item(), kl.item()
