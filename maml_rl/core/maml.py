"""The inner loop and the one adaptation API: θ'_i = θ − α_k ∇_θ L(θ; support episodes of task i).

Finn et al. (2017), Eq. 1 and Algorithm 3. ``InnerLoop`` owns the step sizes, the number of
steps, first-order and the inner loss's form; training, evaluation and every script adapt
through it, so support → step → query is written once (``InnerLoop.meta_batch``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDict

from . import ESTIMATORS
from .params import Params, expand_params, masked_task_mean
from .sampler import episode_returns, valid_steps

if TYPE_CHECKING:
    from ..policies.base import Policy


def vpg_loss(policy: Policy, params: Params, episodes: TensorDict, estimator: str = "maml") -> torch.Tensor:
    """REINFORCE loss per task, ``[task]``, whose gradient is the adaptation step's direction.

    ``"maml"``: L_i = −mean_t log π_θi(a_t|s_t) Â_t, the inner-loop objective of MAML-RL (Finn
    et al., 2017, Section 3.2), with advantages from ``compute_advantages`` in place of raw
    returns. ``"lvc"``: L_i = −mean_t π_θi(a_t|s_t) / π_b(a_t|s_t) Â_t with π_b the behaviour
    policy that sampled the episodes (``log_prob``), ProMP's low-variance curvature objective
    (Rothfuss et al., 2019, Section 5). At θ_i = b both give the same gradient, hence the
    same adaptation step; LVC's second derivatives add the term Σ_t ∇log π ∇log πᵀ Â through which
    the meta-gradient sees how θ shapes the sampling of the support episodes, a term the first
    form drops. Only the meta-gradient through the step differs. ``episodes`` ``[task, episode,
    time]`` or packed by ``valid_steps``.
    """
    episodes = valid_steps(episodes)  # the policy sees no padding
    log_prob = policy.log_prob(policy.distribution(params, episodes["observation"]), episodes["action"])
    weight = torch.exp(log_prob - episodes["log_prob"]) if estimator == "lvc" else log_prob
    return -masked_task_mean(weight * episodes["advantage"], episodes["mask"])


@dataclass
class Adaptation:
    """The inner-loop trajectory θ_0 → θ_1 → … → θ_K of every task, kept for differentiation.

    ``params[k]`` is θ_k with a leading task dim (``params[0]`` is θ expanded per task);
    ``grads[k]`` is ∇L(θ_k; support_k) with the graph kept (empty for first-order MAML, whose
    adaptation Jacobian is the identity); ``lrs[k]`` the step size of step k.
    """

    params: list[Params]
    grads: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    fixed: frozenset[str] = frozenset()  # parameters the inner loop leaves at θ (``Policy.adapts``)
    # False: built for its values only (∇L taken as a constant); an outer loop that differentiates
    # θ'(θ) re-runs the inner loop instead (``MetaObjective.gradient``)
    differentiable: bool = True

    @property
    def adapted(self) -> Params:
        """θ'_i = θ_K, ``[task, ...]`` per parameter."""
        return self.params[-1]

    def jvp(self, v: Params) -> Params:
        """J v with J = dθ_K/dθ_0 = Π_k (I − α_k P H_k); per-task ``v`` ``[task, ...]``. P keeps
        the adapted parameters' rows (the identity unless some are ``fixed``)."""
        for k in range(len(self.grads)):
            hv = self._hvp(k, v)
            v = {name: x if name in self.fixed else x - self.lrs[k] * h for (name, x), h in zip(v.items(), hv)}
        return v

    def vjp(self, v: Params) -> Params:
        """Jᵀ v = Π_k (I − α_k H_k Pᵀ) v in reverse order (H_k is symmetric)."""
        for k in reversed(range(len(self.grads))):
            adapted = {name: torch.zeros_like(x) if name in self.fixed else x for name, x in v.items()}
            v = {name: x - self.lrs[k] * h for (name, x), h in zip(v.items(), self._hvp(k, adapted))}
        return v

    def _hvp(self, k: int, v: Params) -> tuple[torch.Tensor, ...]:
        """H_k v, the Hessian of step k's inner loss times ``v``."""
        inputs = list(self.params[k].values())
        return torch.autograd.grad(self.grads[k], inputs, list(v.values()), retain_graph=True)


@dataclass
class MetaBatch:
    """One meta-batch: the tasks, one support batch per inner step, the query batch (each
    ``[task, episode, time]``), the adaptation from θ (see ``collect_and_adapt``), and seconds spent
    sampling and adapting (``time_sampling``, ``time_inner``)."""

    tasks: torch.Tensor
    supports: list[TensorDict]
    query: TensorDict
    adaptation: Adaptation
    timings: dict[str, float]

    def returns(self) -> torch.Tensor:
        """Mean return per task after k = 0..K steps, ``[K + 1, task]`` (the adaptation curve)."""
        return torch.stack([episode_returns(b).mean(1) for b in [*self.supports, self.query]])


@dataclass
class InnerLoop:
    """MAML's adaptation: ``num_steps`` VPG steps from θ on fresh support episodes per step.

    Args:
        policy: the policy (``Policy`` protocol).
        lr: the step size α, or one per step (a list whose last value repeats; the MAML paper's
            evaluation takes 0.1 then 0.05, Section 5.3).
        num_steps: inner steps K (0: no adaptation, the pretrained and oracle baselines).
        first_order: drop the second-order terms (first-order MAML, Finn et al., 2017, Section 5.2).
        estimator: the inner loss's form, ``"maml"`` or ``"lvc"`` (see ``vpg_loss``).

    Raises:
        ValueError: for an unknown estimator, a negative ``num_steps`` or a non-positive step size.
    """

    policy: Policy
    lr: float | Sequence[float]
    num_steps: int = 1
    first_order: bool = False
    estimator: str = "lvc"

    def __post_init__(self):
        self.lrs = [float(a) for a in self.lr] if isinstance(self.lr, Sequence) else [float(self.lr)]
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {list(ESTIMATORS)}, got {self.estimator!r}")
        if self.num_steps < 0 or not self.lrs or min(self.lrs) <= 0:
            raise ValueError(f"need num_steps >= 0 and step sizes > 0, got {self.num_steps} and {self.lr}")

    def step_size(self, k: int) -> float:
        """α_k, the step size of inner step k (0-based)."""
        return self.lrs[min(k, len(self.lrs) - 1)]

    def start(self, theta: Params, num_tasks: int) -> Adaptation:
        """θ_0: θ expanded to one copy per task; the parameters the policy does not adapt are ``fixed``."""
        return Adaptation([expand_params(theta, num_tasks)],
                          fixed=frozenset(n for n in theta if not self.policy.adapts(n)))

    def step(self, adaptation: Adaptation, support: TensorDict, differentiable: bool = True) -> Adaptation:
        """Append one VPG step on ``support`` (episodes of every task) to ``adaptation``.

        The step is differentiable w.r.t. θ (second-order MAML) unless ``first_order`` or not
        ``differentiable`` (evaluation), which treat ∇L as a constant.
        """
        first_order = self.first_order or not differentiable
        lr = self.step_size(len(adaptation.params) - 1)
        # parameters that carry no graph (evaluation of a fixed θ) become leaves to differentiate
        params = {k: p if p.requires_grad else p.detach().requires_grad_() for k, p in adaptation.adapted.items()}
        with torch.enable_grad():
            loss = vpg_loss(self.policy, params, support, self.estimator).sum()
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        # a fixed parameter gets a node of its own (a clone), so that H_{k+1} is the partial Hessian at θ_{k+1}
        adaptation.params.append({k: p.clone() if k in adaptation.fixed else p - lr * g
                                  for (k, p), g in zip(params.items(), grads)})
        if not first_order:
            adaptation.grads.append(grads)
            adaptation.lrs.append(lr)
        return adaptation

    def adapt(self, theta: Params, supports: list[TensorDict], num_tasks: int,
              differentiable: bool = True) -> Adaptation:
        """θ'(θ) on already collected support episodes (one batch per step)."""
        adaptation = self.start(theta, num_tasks)
        adaptation.differentiable = differentiable
        for support in supports:
            self.step(adaptation, support, differentiable)
        return adaptation

    def collect_and_adapt(self, sample: Callable[[Params], TensorDict], theta: Params, tasks: torch.Tensor,
                          differentiable: bool = True) -> tuple[list[TensorDict], Adaptation, dict[str, float]]:
        """Support episodes → inner step, ``num_steps`` times, from θ in the tasks ``tasks`` (the
        support tasks: ``meta_batch`` may adapt on other tasks than it queries).

        ``sample`` rolls out per-task parameters (a ``Sampler``; its ``set_tasks`` is called
        first). Each step collects fresh support episodes with the current θ_k (Finn et al., 2017,
        Algorithm 3). The adaptation keeps its graph if ``differentiable`` and the tasks fit one
        pass of the outer objective (``fits_one_pass``); ``Adaptation.differentiable`` says which.
        Returns the support batches, the adaptation and the seconds spent sampling and adapting
        (``time_sampling``, ``time_inner``).
        """
        sample.set_tasks(tasks)
        adaptation = self.start(theta, tasks.shape[0])
        supports, t_sample, t_inner = [], 0.0, 0.0
        for _ in range(self.num_steps):
            t0 = time.perf_counter()
            supports.append(sample(adaptation.adapted))
            t1 = time.perf_counter()
            if len(supports) == 1:
                adaptation.differentiable = differentiable and self.fits_one_pass(supports[0])
            self.step(adaptation, supports[-1], adaptation.differentiable)
            t_sample, t_inner = t_sample + t1 - t0, t_inner + time.perf_counter() - t1
        return supports, adaptation, {"time_sampling": t_sample, "time_inner": t_inner}

    def fits_one_pass(self, episodes: TensorDict) -> bool:
        """Whether the outer objective over these tasks' episodes ``[task, episode, time]`` is
        differentiated in one pass (``Policy.tasks_per_pass``). When it is not, the inner loop of
        a meta-batch keeps no graph while sampling: the outer loop re-runs it group by group
        (``MetaObjective.gradient``), and a graph of every task would only hold memory."""
        size = self.policy.tasks_per_pass(episodes["mask"][0].numel())
        return size is None or size >= episodes.shape[0]

    def meta_batch(self, sample: Callable[[Params], TensorDict], theta: Params, tasks: torch.Tensor,
                   differentiable: bool = True, support_tasks: torch.Tensor | None = None) -> MetaBatch:
        """``collect_and_adapt``, then the query episodes of θ' in ``tasks``. The support episodes are
        collected in ``support_tasks`` (one per task; by default ``tasks``): e.g. the market data
        before each traded window (``TaskFamily.support_tasks``)."""
        elsewhere = support_tasks is not None and support_tasks is not tasks
        supports, adaptation, timings = self.collect_and_adapt(sample, theta, support_tasks if elsewhere else tasks,
                                                               differentiable)
        if elsewhere:
            sample.set_tasks(tasks)
        t0 = time.perf_counter()
        query = sample(adaptation.adapted)
        timings["time_sampling"] += time.perf_counter() - t0
        return MetaBatch(tasks, supports, query, adaptation, timings)
