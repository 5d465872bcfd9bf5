"""Advantages: a linear feature baseline (Duan et al., 2016) per task and GAE (Schulman et al., 2016)."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.objectives.value.functional import generalized_advantage_estimate


def baseline_features(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rllab's ``LinearFeatureBaseline`` features: [o, o², t, t², t³, 1] with t = step / 100.

    Shapes: obs ``[task, episode, time, obs_dim]``, mask ``[task, episode, time]``; returns
    ``[task, episode, time, 2 * obs_dim + 4]``, zero on padded steps.
    """
    o = obs.clamp(-10, 10)
    t = torch.arange(obs.shape[2], dtype=obs.dtype).div(100.0)[None, None, :, None].expand(*obs.shape[:3], 1)
    feats = torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], dim=-1)
    return feats * mask[..., None]


def fit_linear_baseline(features: torch.Tensor, targets: torch.Tensor, reg_coeff: float = 1e-5) -> torch.Tensor:
    """Ridge regression per task: w_i = argmin ‖X_i w − y_i‖² + reg ‖w‖².

    As rllab's baseline, the regulariser grows ×10 (up to 5 times) while the solution is not
    finite. Shapes: features ``[task, episode, time, F]``, targets ``[task, episode, time]``;
    returns the fitted values ``[task, episode, time]``.
    """
    x = features.flatten(1, 2).double()
    y = targets.flatten(1, 2).double()
    xtx, xty = x.transpose(1, 2) @ x, (x.transpose(1, 2) @ y[..., None])
    eye = torch.eye(x.shape[-1], dtype=x.dtype)
    for _ in range(5):
        w = torch.linalg.solve(xtx + reg_coeff * eye, xty)
        if torch.isfinite(w).all():
            break
        reg_coeff *= 10
    return (x @ w)[..., 0].reshape(targets.shape).to(targets.dtype)


def _gae(rewards, values, done, gamma, lam) -> torch.Tensor:
    next_values = torch.nn.functional.pad(values[..., 1:], (0, 1))
    adv, _ = generalized_advantage_estimate(gamma, lam, values[..., None], next_values[..., None],
                                            rewards[..., None], done[..., None], done[..., None])
    return adv[..., 0]


def discounted_returns(rewards: torch.Tensor, done: torch.Tensor, gamma: float) -> torch.Tensor:
    """Discounted return-to-go ``[task, episode, time]`` (GAE with λ = 1 and zero values)."""
    return _gae(rewards, torch.zeros_like(rewards), done, gamma, 1.0)


def compute_advantages(episodes: TensorDict, gamma: float, gae_lambda: float, normalize: bool = True) -> TensorDict:
    """Add ``advantage`` ``[task, episode, time]`` to a batch of episodes, in place.

    The linear baseline is fitted on the same episodes (per task, on discounted returns) and
    GAE(γ, λ) is computed with torchrl's functional estimator. With ``normalize``, the
    advantages of each task are standardised over its valid steps, as in the MAML code.
    """
    mask, done, rewards = episodes["mask"], episodes["done"], episodes["reward"]
    returns = discounted_returns(rewards, done, gamma)
    values = fit_linear_baseline(baseline_features(episodes["observation"], mask), returns * mask)
    adv = _gae(rewards, values * mask, done, gamma, gae_lambda) * mask
    if normalize:
        n = mask.sum((1, 2), keepdim=True).clamp_min(1)
        mean = adv.sum((1, 2), keepdim=True) / n
        std = (((adv - mean) * mask).pow(2).sum((1, 2), keepdim=True) / n).sqrt()
        adv = (adv - mean) / (std + 1e-8) * mask
    episodes["advantage"] = adv
    return episodes
