"""Gaussian MLP policy whose parameters are used functionally, one copy per task."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, vmap

Params = dict[str, torch.Tensor]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


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


class GaussianMLPPolicy(nn.Module):
    """π(a|s) = N(μ_θ(s), diag(σ²)) with an MLP mean and a state-independent log-std.

    The policy of Finn et al. (ICML 2017, Section 5.3): an MLP with ``hidden_sizes`` units
    per layer (paper: two layers of 100 ReLU units) and a learned log-std vector, as in
    rllab's ``GaussianMLPPolicy``.

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

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes=(100, 100), activation: str = "relu",
                 init_std: float = 1.0, normalize_observations: bool = False):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        layers, size = [], obs_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(size, hidden), ACTIVATIONS[activation]()]
            size = hidden
        layers.append(nn.Linear(size, act_dim))
        self.mean = nn.Sequential(*layers)
        for layer in self.mean:
            if isinstance(layer, nn.Linear):  # rllab's MLP init (Glorot uniform, zero bias)
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.obs_norm = ObservationNormalizer(obs_dim) if normalize_observations else None
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.kwargs = {"obs_dim": obs_dim, "act_dim": act_dim, "hidden_sizes": tuple(hidden_sizes),
                       "activation": activation, "init_std": init_std,
                       "normalize_observations": normalize_observations}  # rebuilds this policy

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[..., act_dim]`` and log-std ``[act_dim]`` for observations ``[..., obs_dim]``."""
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        return self.mean(obs), self.log_std

    def params(self) -> Params:
        """The parameters θ as a name → tensor dict (the live ``nn.Parameter`` objects)."""
        return dict(self.named_parameters())

    def per_task(self, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate one parameter copy per task.

        Args:
            params: θ_i with a leading task dim, e.g. ``mean.0.weight`` of ``[task, 100, obs_dim]``.
            obs: ``[task, ..., obs_dim]``.

        Returns:
            mean ``[task, ..., act_dim]`` and log-std ``[task, act_dim]``.
        """
        return vmap(lambda p, o: functional_call(self, p, (o,)))(params, obs)

    @staticmethod
    def log_prob(mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log N(action; mean, diag(exp(log_std)²)) summed over the action dim.

        Shapes: mean and action ``[task, ..., act_dim]``, log_std ``[task, act_dim]``;
        returns ``[task, ...]``.
        """
        log_std = log_std.reshape(log_std.shape[0], *([1] * (mean.dim() - 2)), -1)
        z = (action - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * mean.shape[-1] * math.log(2 * math.pi)

    @staticmethod
    def kl(old_mean, old_log_std, mean, log_std) -> torch.Tensor:
        """KL(N_old ‖ N_new) per sample, summed over the action dim; shapes as in ``log_prob``."""
        shape = (old_log_std.shape[0], *([1] * (mean.dim() - 2)), -1)
        old_log_std, log_std = old_log_std.reshape(shape), log_std.reshape(shape)
        var_ratio = torch.exp(2 * (old_log_std - log_std))
        mahalanobis = ((old_mean - mean) * torch.exp(-log_std)).pow(2)
        return 0.5 * (var_ratio + mahalanobis - 1).sum(-1) + (log_std - old_log_std).sum(-1)


def expand_params(params: Params, num_tasks: int) -> Params:
    """θ → one copy per task, ``[num_tasks, *shape]`` (views that keep the graph to θ)."""
    return {k: v.expand(num_tasks, *v.shape) for k, v in params.items()}
