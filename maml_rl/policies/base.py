"""The Policy protocol, the policy registry, shared building blocks and ``load_policy``.

A policy is used functionally: θ is a name → tensor dict, and every method that evaluates it
takes one parameter copy per task (``[task, ...]`` leading dim). Its action distribution is a
dict of tensors (``Dist``) whose leading dims broadcast to the observation's batch dims
``[task, ...]``; only the policy reads it. Everything else (sampler, inner loop, objective,
outer loops, evaluation) goes through the protocol, so a new policy type is one module that
registers itself plus its ``conf/policy/<name>.yaml``.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDict
from torch import nn
from torch.func import functional_call, vmap

from ..core.checkpoint import load_checkpoint
from ..core.params import Dist, Params
from .settings import POLICIES, PolicyConfig


@runtime_checkable
class Policy(Protocol):
    """What the platform asks of a policy π_θ(a|s).

    Shapes: ``params`` θ_i ``[task, ...param shape]``; ``obs`` ``[task, ..., obs_dim]``;
    ``action`` ``[task, ..., act_dim]``; per-sample outputs ``[task, ...]``.
    """

    obs_dim: int
    act_dim: int
    kwargs: dict[str, Any]  # rebuilds the policy: ``type(policy)(**policy.kwargs)``

    def params(self) -> Params:
        """θ as a name → live ``nn.Parameter`` dict."""

    def distribution(self, params: Params, obs: torch.Tensor) -> Dist:
        """π_θi(·|s) for every task's observations, one parameter copy per task."""

    def sample(self, dist: Dist, generator: torch.Generator) -> torch.Tensor:
        """An action drawn from ``dist`` with the noise of ``generator``."""

    def mode(self, dist: Dist) -> torch.Tensor:
        """The deterministic action of ``dist`` (evaluation plots, backtests)."""

    def log_prob(self, dist: Dist, action: torch.Tensor) -> torch.Tensor:
        """log π(a|s), ``[task, ...]``."""

    def kl(self, old: Dist, new: Dist) -> torch.Tensor:
        """KL(old ‖ new) per sample, ``[task, ...]``, differentiable w.r.t. ``new``."""

    def entropy(self, dist: Dist) -> torch.Tensor:
        """Entropy per sample, broadcastable to ``[task, ...]``."""

    def observe(self, obs: torch.Tensor, mask: torch.Tensor) -> None:
        """Update observation statistics with the valid steps (``mask`` 1) of ``obs``."""

    def adapts(self, name: str) -> bool:
        """Whether the inner loop adapts parameter ``name`` (the others keep θ's value in θ')."""

    def penalty(self, dist: Dist, mask: torch.Tensor) -> torch.Tensor | None:
        """An auxiliary loss of the adapted policies on the query steps (``mask`` ``[task, ...]``),
        subtracted from the outer objective; ``None`` for none."""

    def tasks_per_pass(self, rows_per_task: int) -> int | None:
        """How many tasks of ``rows_per_task`` observation rows each one forward and backward pass
        of the outer objective should hold (larger meta-batches are differentiated group by
        group, which bounds memory); ``None``: all at once, because the outer objective couples
        the tasks (e.g. a penalty over the whole meta-batch)."""

    def diagnostics(self, pre: TensorDict, post: TensorDict) -> dict[str, float]:
        """Scalars logged every iteration (e.g. ``policy_std``), given the episodes of θ before
        adaptation (``pre``) and of θ' after it (``post``), ``[task, episode, time]``."""

    def activation_by_condition(self, episodes: TensorDict, conditions: list[str]) -> dict[str, dict[str, float]] | None:
        """Which part of the policy acts under which task conditions (``conditions``: one bucket per
        task of ``episodes``, see ``TaskFamily.task_conditions``): ``{part: {condition: activation}}``,
        drawn as a heatmap at each checkpoint and evaluation; ``None`` for a policy without parts."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Any: ...




class ObservationNormalizer(nn.Module):
    """o ↦ clip((o − μ) / √(σ² + ε), ±clip) with running μ, σ² of every observation seen.

    Statistics are buffers (saved in the checkpoint with the policy, frozen at evaluation)
    and change only through ``update``, called between meta-iterations so that every batch of
    one iteration is scored by the same policy. The identity until the first update.
    Merging uses the parallel mean/variance formula (Chan, Golub & LeVeque, 1979).
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalised observations, shape and dtype of ``obs`` ``[..., dim]``."""
        if self.count == 0:
            return obs
        z = (obs - self.mean.to(obs.dtype)) * torch.rsqrt(self.var.to(obs.dtype) + self.eps)
        return z.clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, obs: torch.Tensor, mask: torch.Tensor) -> None:
        """Merge the valid steps of ``obs`` ``[..., dim]`` (``mask`` ``[...]``, 1 = valid)."""
        x = obs[mask.bool()].double()
        n = x.shape[0]
        if n == 0:
            return
        mean, var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = mean - self.mean
        self.var.copy_((self.var * self.count + var * n + delta.pow(2) * self.count * n / total) / total)
        self.mean.add_(delta * n / total)
        self.count.fill_(total)


# activations per chunk: 16 MB of float32, half the L3 cache of a 2-core development machine. Every
# chunk is one more call of every op, so smaller chunks cost more than they save (docs/speed.md);
# the default 20-task navigation batch is one chunk.
CHUNK_ELEMENTS = 2 ** 22


def rows_per_chunk(width: int) -> int:
    """Rows per chunk of tasks for a network whose widest layer has ``width`` units."""
    return max(1, CHUNK_ELEMENTS // max(1, width))


class FunctionalPolicy(nn.Module):
    """Shared plumbing of the policies: θ as a dict, one copy per task through ``tasks_forward``
    (``vmap`` unless the policy batches its own layers), and an optional ``ObservationNormalizer``
    in front of the network.

    A subclass implements ``forward(obs) -> Dist`` for one parameter copy and the distribution's
    methods (``sample``, ``mode``, ``log_prob``, ``kl``, ``entropy``, ``diagnostics``); by default
    the inner loop adapts every parameter and the outer objective has no penalty.
    """

    chunk_rows = rows_per_chunk(100)  # rows per chunk of tasks; a subclass sets it from its widest layer

    def __init__(self, obs_dim: int, act_dim: int, normalize_observations: bool, **kwargs: Any):
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.obs_norm = ObservationNormalizer(obs_dim) if normalize_observations else None
        self.kwargs = {"obs_dim": obs_dim, "act_dim": act_dim, **kwargs,
                       "normalize_observations": normalize_observations}

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_norm is None else self.obs_norm(obs)

    def params(self) -> Params:
        return dict(self.named_parameters())

    def distribution(self, params: Params, obs: torch.Tensor) -> Dist:
        """π_θi for every task (``tasks_forward``), over the task dim in chunks of at most ``chunk_rows`` rows.

        Each chunk is its own node of the graph, so every op — forward, backward and the double
        backward of the inner loop — touches a cache-sized slice: one [80 tasks × 2,000 steps ×
        100] activation is 64 MB, past a 32 MB L3, and elementwise ops then run at memory speed
        (docs/speed.md). Tasks are independent, so chunking changes no value (the autograd
        engine may sum second-order terms of several chunks in another order: float32 results
        of a chunked batch differ in the last bits from an unchunked one).
        """
        num_tasks, step = obs.shape[0], self.tasks_per_chunk(obs[0].numel() // obs.shape[-1])
        if step >= num_tasks:
            return self.tasks_forward(params, obs)
        # split, not slicing: its backward concatenates the chunks' gradients once instead of
        # padding each to the full task dim
        chunks = zip(*(v.split(step) for v in params.values()), obs.split(step))
        parts = [self.tasks_forward(dict(zip(params, chunk[:-1])), chunk[-1]) for chunk in chunks]
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

    def tasks_forward(self, params: Params, obs: torch.Tensor) -> Dist:
        """``forward`` of task i's parameters on its observations ``[task, ..., obs_dim]``, for every
        task at once: ``vmap`` of ``functional_call`` over the task dim. A policy may replace it with
        the same math on batched tensors (``GaussianMLPPolicy``), which spares vmap's overhead per op."""
        return vmap(lambda p, o: functional_call(self, p, (o,)))(params, obs)

    def tasks_per_chunk(self, rows_per_task: int) -> int:
        """Tasks of ``rows_per_task`` rows per chunk (at least one)."""
        return max(1, self.chunk_rows // max(1, rows_per_task))

    def tasks_per_pass(self, rows_per_task: int) -> int | None:
        """A chunk's worth of tasks: the tasks of one pass are then one chunk of ``distribution``."""
        return self.tasks_per_chunk(rows_per_task)

    def observe(self, obs: torch.Tensor, mask: torch.Tensor) -> None:
        if self.obs_norm is not None:
            self.obs_norm.update(obs, mask)

    def adapts(self, name: str) -> bool:
        return True  # every parameter, as in MAML

    def penalty(self, dist: Dist, mask: torch.Tensor) -> torch.Tensor | None:
        return None

    def activation_by_condition(self, episodes: TensorDict, conditions: list[str]) -> dict[str, dict[str, float]] | None:
        return None


def build_policy(settings: PolicyConfig, obs_dim: int, act_dim: int, normalize_observations: bool) -> Policy:
    """The policy named ``settings.name`` for observations of ``obs_dim`` and actions of ``act_dim``.

    Raises:
        ValueError: for an unknown policy name (lists the known ones).
    """
    entry = POLICIES[settings.name]
    fields = {k: v for k, v in vars(settings).items() if k != "name"}
    return entry.cls(obs_dim=obs_dim, act_dim=act_dim, normalize_observations=normalize_observations, **fields)


def policy_from_state(state: dict[str, Any]) -> Policy:
    """The trained policy stored in a checkpoint's ``state`` as ``load_checkpoint`` returns it (its type
    from ``config.policy.name``)."""
    policy = POLICIES[state["config"]["policy"]["name"]].cls(**state["policy_kwargs"])
    policy.load_state_dict(state["policy"])
    return policy


def load_policy(path: str | os.PathLike) -> Policy:
    """The trained policy of a checkpoint file, in one call (every expert, network and observation
    statistic it holds); it acts in the action space it was trained in (see ``env.normalize_actions``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a maml_rl checkpoint or names an unknown policy type.
    """
    return policy_from_state(load_checkpoint(path))

