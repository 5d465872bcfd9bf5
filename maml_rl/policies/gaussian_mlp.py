"""Gaussian MLP policy (``policy=mlp``): the policy of the MAML paper."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict
from torch import nn

from ..core.params import Dist, Params
from .base import FunctionalPolicy, rows_per_chunk
from .settings import POLICIES

ACTIVATION_LAYERS = {"relu": nn.ReLU, "tanh": nn.Tanh}  # the layer of each name in settings.ACTIVATIONS


class DiagonalGaussian:
    """The distribution methods of a diagonal Gaussian with a state-independent log-std: ``Dist``
    ``{"loc": [task, ..., act_dim], "log_std": [task, 1, …, 1, act_dim]}`` (other keys ignored)."""

    def sample(self, dist: Dist, generator: torch.Generator) -> torch.Tensor:
        loc = dist["loc"]
        noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
        return loc + noise * dist["log_std"].exp()

    def mode(self, dist: Dist) -> torch.Tensor:
        return dist["loc"]

    def log_prob(self, dist: Dist, action: torch.Tensor) -> torch.Tensor:
        """log N(action; loc, diag(exp(log_std)²)) summed over the action dim, ``[task, ...]``."""
        loc, log_std = dist["loc"], dist["log_std"]
        z = (action - loc) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)

    def kl(self, old: Dist, new: Dist) -> torch.Tensor:
        """KL(N_old ‖ N_new) per sample, summed over the action dim, ``[task, ...]``.

        The log-std is state-independent, so a stored ``old`` one (broadcast to every step) is
        read at the shape of ``new``'s.
        """
        log_std = new["log_std"]
        old_log_std = old["log_std"][tuple(slice(0, 1) if n == 1 else slice(None) for n in log_std.shape)]
        var_ratio = torch.exp(2 * (old_log_std - log_std))
        mahalanobis = ((old["loc"] - new["loc"]) * torch.exp(-log_std)).pow(2)
        return 0.5 * (var_ratio + mahalanobis - 1).sum(-1) + (log_std - old_log_std).sum(-1)

    def entropy(self, dist: Dist) -> torch.Tensor:
        return (dist["log_std"] + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)


@POLICIES.register("mlp")
class GaussianMLPPolicy(DiagonalGaussian, FunctionalPolicy):
    """π(a|s) = N(μ_θ(s), diag(σ²)) with an MLP mean and a state-independent log-std.

    The policy of Finn et al. (ICML 2017, Section 5.3), as rllab's ``GaussianMLPPolicy``: an
    MLP with ``hidden_sizes`` units per layer (Glorot-uniform weights, zero biases) and a
    learned log-std vector. Its ``Dist`` is ``{"loc": [task, ..., act_dim], "log_std": [task,
    1, …, 1, act_dim]}`` (the log-std broadcast over the batch dims).

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden_sizes: units per hidden layer.
        activation: ``"relu"`` or ``"tanh"``.
        init_std: initial standard deviation of every action dimension (> 0).
        normalize_observations: feed the MLP running-normalised observations
            (``ObservationNormalizer``; its statistics travel in ``state_dict``).

    Raises:
        ValueError: for an unknown activation or a non-positive ``init_std``.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes, activation: str, init_std: float,
                 normalize_observations: bool = False):
        if activation not in ACTIVATION_LAYERS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATION_LAYERS)}, got {activation!r}")
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        super().__init__(obs_dim, act_dim, normalize_observations, hidden_sizes=tuple(hidden_sizes),
                         activation=activation, init_std=init_std)
        layers, size = [], obs_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(size, hidden), ACTIVATION_LAYERS[activation]()]
            size = hidden
        layers.append(nn.Linear(size, act_dim))
        self.mean = nn.Sequential(*layers)
        for layer in self.mean:
            if isinstance(layer, nn.Linear):  # rllab's MLP init (Glorot uniform, zero bias)
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.chunk_rows = rows_per_chunk(max(hidden_sizes))

    def forward(self, obs: torch.Tensor) -> Dist:
        """The distribution for observations ``[..., obs_dim]`` of one parameter copy."""
        dist = self.tasks_forward({k: v.unsqueeze(0) for k, v in self.params().items()}, obs.unsqueeze(0))
        return {k: v.squeeze(0) for k, v in dist.items()}

    def tasks_forward(self, params: Params, obs: torch.Tensor) -> Dist:
        """The MLP of task i's parameters ``params[...][i]`` on ``obs[i]`` ``[task, ..., obs_dim]``, as
        batched matrix products over the task dim: the ops ``vmap`` of ``nn.Linear`` runs (``x Wᵀ + b``
        per task), so values and derivatives of every order are the same bits, without vmap's
        overhead per op (3× faster for a sampling step's 10 observations per task; docs/speed.md)."""
        rows = math.prod(obs.shape[1:-1])  # explicit: -1 is ambiguous for an empty batch
        x = self.normalize(obs).reshape(obs.shape[0], rows, obs.shape[-1])  # [task, rows, obs_dim]
        for name, layer in self.mean.named_children():
            if isinstance(layer, nn.Linear):
                x = torch.matmul(x, params[f"mean.{name}.weight"].transpose(-1, -2)) + params[f"mean.{name}.bias"].unsqueeze(1)
            else:
                x = layer(x)
        log_std = params["log_std"].reshape(obs.shape[0], *([1] * (obs.dim() - 2)), -1)
        return {"loc": x.reshape(*obs.shape[:-1], x.shape[-1]), "log_std": log_std}

    def diagnostics(self, pre: TensorDict, post: TensorDict) -> dict[str, float]:
        return {"policy_std": self.log_std.detach().exp().mean().item()}
