"""Mixture-of-experts policy (``policy=moe``): a gating network over specialised Gaussian experts."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict
from torch import nn

from ..core.params import Dist
from ..core.sampler import episode_returns
from .base import FunctionalPolicy, rows_per_chunk
from .gaussian_mlp import ACTIVATION_LAYERS, DiagonalGaussian
from .settings import ADAPT, POLICIES, MixtureOfExpertsConfig


class ExpertLayer(nn.Module):
    """K linear maps applied side by side: ``[..., K, in] → [..., K, out]`` (one weight per expert)."""

    def __init__(self, num_experts: int, size_in: int, size_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, size_out, size_in))
        self.bias = nn.Parameter(torch.zeros(num_experts, size_out))
        for w in self.weight.data:  # rllab's init per expert (Glorot uniform, zero bias)
            nn.init.xavier_uniform_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ki,koi->...ko", x, self.weight) + self.bias


@POLICIES.register("moe")
class MixtureOfExpertsPolicy(DiagonalGaussian, FunctionalPolicy):
    """π(a|s) = N(Σ_k g_k(s) μ_k(s), diag(σ²)): a gated mean of K expert means.

    Each expert k is an MLP mean μ_k(s); the gate is g(s) = softmax(MLP(s) / τ) (Jacobs et al.,
    1991, soft gating). The distribution is one diagonal Gaussian whose mean is the gate-weighted
    mean of the experts' and whose log-std is a learned state-independent vector, so its
    log-likelihood, entropy and KL are the MLP policy's closed forms: TRPO's Fisher-vector product
    and trust region, PPO, the inner loop (first and second order) and evaluation work unchanged.
    (A true mixture would need a sampled KL.) Gating is soft and computed for every expert, so
    per-task parameters go through ``vmap`` without data-dependent control flow. ``Dist`` is
    ``{"loc", "log_std", "gate": [task, ..., K]}``; the gate weights travel with the episodes, from
    which ``diagnostics`` reports expert activation.

    ``adapt`` selects what the inner loop adapts (``adapts``): ``all``; ``gating`` (the gate
    only: fast adaptation by re-weighting fixed experts); ``experts`` (the experts' means and the
    log-std, the gate fixed). ``balance_coef`` > 0 adds the load-balancing loss of sparse MoE
    layers (Shazeer et al., 2017, Section 4: the squared coefficient of variation of the experts'
    importance Σ_steps g_k) to the outer objective (``penalty``).

    Args:
        obs_dim, act_dim: observation and action sizes.
        num_experts: K ≥ 1.
        hidden_sizes: units per hidden layer of each expert; gate_hidden_sizes: of the gate.
        activation: ``"relu"`` or ``"tanh"``; temperature: τ > 0; init_std: σ at the start.
        adapt: ``"all"``, ``"gating"`` or ``"experts"``; balance_coef: ≥ 0.
        normalize_observations: running-normalised observations for gate and experts.

    Raises:
        ValueError: for a value outside those ranges.
    """

    def __init__(self, obs_dim: int, act_dim: int, num_experts: int, hidden_sizes, gate_hidden_sizes,
                 activation: str, temperature: float, init_std: float, adapt: str = "all",
                 balance_coef: float = 0.0, normalize_observations: bool = False):
        checks = {"num_experts": num_experts >= 1, "activation": activation in ACTIVATION_LAYERS,
                  "temperature": temperature > 0, "init_std": init_std > 0, "adapt": adapt in ADAPT,
                  "balance_coef": balance_coef >= 0}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name}={locals()[name]!r} is not allowed: {MixtureOfExpertsConfig.rules[name][1]}")
        super().__init__(obs_dim, act_dim, normalize_observations, num_experts=num_experts,
                         hidden_sizes=tuple(hidden_sizes), gate_hidden_sizes=tuple(gate_hidden_sizes),
                         activation=activation, temperature=temperature, init_std=init_std, adapt=adapt,
                         balance_coef=balance_coef)
        self.num_experts, self.temperature, self.adapt, self.balance_coef = num_experts, temperature, adapt, balance_coef
        layers, size = [], obs_dim
        for hidden in hidden_sizes:
            layers += [ExpertLayer(num_experts, size, hidden), ACTIVATION_LAYERS[activation]()]
            size = hidden
        self.experts = nn.Sequential(*layers, ExpertLayer(num_experts, size, act_dim))
        gate, size = [], obs_dim
        for hidden in gate_hidden_sizes:
            gate += [nn.Linear(size, hidden), ACTIVATION_LAYERS[activation]()]
            size = hidden
        self.gate = nn.Sequential(*gate, nn.Linear(size, num_experts))
        for layer in self.gate:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.chunk_rows = rows_per_chunk(num_experts * max(hidden_sizes))

    def forward(self, obs: torch.Tensor) -> Dist:
        """The distribution for observations ``[..., obs_dim]`` of one parameter copy."""
        x = self.normalize(obs)
        gate = torch.softmax(self.gate(x) / self.temperature, dim=-1)  # [..., K]
        means = self.experts(x.unsqueeze(-2).expand(*x.shape[:-1], self.num_experts, x.shape[-1]))  # [..., K, act]
        loc = (gate.unsqueeze(-1) * means).sum(-2)
        return {"loc": loc, "log_std": self.log_std.reshape(*([1] * (obs.dim() - 1)), -1), "gate": gate}

    def adapts(self, name: str) -> bool:
        """Whether the inner loop adapts parameter ``name`` (``adapt``)."""
        if self.adapt == "gating":
            return name.startswith("gate.")
        if self.adapt == "experts":
            return not name.startswith("gate.")
        return True

    def penalty(self, dist: Dist, mask: torch.Tensor) -> torch.Tensor | None:
        """``balance_coef`` · CV²(importance), importance_k = Σ g_k over the valid steps of every task of
        the meta-batch (Shazeer et al., 2017, Section 4: the batch's importance); ``None`` when
        ``balance_coef`` is 0. Over the whole meta-batch, not per task: experts that each serve
        some of the tasks (one per running direction) are balanced; only a gate that sends every
        task to the same experts pays."""
        if not self.balance_coef:
            return None
        gate = dist["gate"] * mask.unsqueeze(-1)
        importance = gate.reshape(-1, gate.shape[-1]).sum(0)  # [K]
        cv2 = importance.var(unbiased=False) / (importance.mean().pow(2) + 1e-10)
        return self.balance_coef * cv2

    def tasks_per_pass(self, rows_per_task: int) -> int | None:
        """All tasks at once while the balance penalty couples them; a chunk's worth otherwise."""
        return None if self.balance_coef else super().tasks_per_pass(rows_per_task)

    def diagnostics(self, pre: TensorDict, post: TensorDict) -> dict[str, float]:
        """σ, and expert activation before (``pre``) and after adaptation (``post``): per expert k
        the mean gate weight ``moe/usage_k_*`` and the fraction of steps it has the largest weight
        ``moe/top_k_*`` (valid steps), the mean gate entropy ``moe/gate_entropy_*`` (nats), and
        ``moe/return_k``: the mean return of the adapted episodes that expert k dominated (highest
        mean gate weight over the episode; absent when it dominated none)."""
        metrics = {"policy_std": self.log_std.detach().exp().mean().item()}
        for when, episodes in (("pre", pre), ("post", post)):
            metrics.update({f"moe/{k}_{when}": v for k, v in activation(episodes["dist"]["gate"], episodes["mask"]).items()})
        dominant = dominant_expert(post["dist"]["gate"], post["mask"])
        returns = episode_returns(post)
        for k in range(self.num_experts):
            if (dominant == k).any():
                metrics[f"moe/return_{k}"] = returns[dominant == k].mean().item()
        return metrics

    def activation_by_condition(self, episodes: TensorDict, conditions: list[str]) -> dict[str, dict[str, float]]:
        """``{"expert k": {condition: mean gate weight of expert k on the valid steps of that
        condition's tasks}}``; each condition's column sums to 1."""
        gate, mask = episodes["dist"]["gate"], episodes["mask"]
        table: dict[str, dict[str, float]] = {f"expert {k}": {} for k in range(self.num_experts)}
        for condition in sorted(set(conditions)):
            rows = torch.tensor([c == condition for c in conditions])
            usage = activation(gate[rows], mask[rows])
            for k in range(self.num_experts):
                table[f"expert {k}"][condition] = usage[f"usage_{k}"]
        return table


def activation(gate: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``usage_k`` (mean gate weight), ``top_k`` (share of steps where k weighs most) and
    ``gate_entropy`` over the valid steps of ``gate`` ``[..., K]`` (``mask`` ``[...]``)."""
    valid = mask.bool()
    g = gate[valid]  # [steps, K]
    top = torch.bincount(g.argmax(-1), minlength=g.shape[-1]).to(g.dtype) / max(g.shape[0], 1)
    entropy = -(g * g.clamp_min(1e-12).log()).sum(-1).mean()
    out = {f"usage_{k}": u.item() for k, u in enumerate(g.mean(0))}
    out.update({f"top_{k}": t.item() for k, t in enumerate(top)})
    out["gate_entropy"] = entropy.item()
    return out


def dominant_expert(gate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The expert with the highest mean gate weight over each episode's valid steps, ``[task, episode]``
    (``gate`` ``[task, episode, time, K]``)."""
    weights = (gate * mask.unsqueeze(-1)).sum(-2) / mask.sum(-1, keepdim=True).clamp_min(1)
    return weights.argmax(-1)
