"""Functional parameters: θ as a name → tensor dict, one copy per task."""

from __future__ import annotations

import torch

Params = dict[str, torch.Tensor]
Dist = dict[str, torch.Tensor]  # a policy's action-distribution parameters, leading dims [task, ...]


def expand_params(params: Params, num_tasks: int) -> Params:
    """θ → one copy per task, ``[num_tasks, *shape]`` (views that keep the graph to θ)."""
    return {k: v.expand(num_tasks, *v.shape) for k, v in params.items()}


def masked_task_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid steps of each task: ``[task, E, H]`` (or packed ``[task, R]``) → ``[task]``."""
    dims = tuple(range(1, mask.dim()))
    return (x * mask).sum(dims) / mask.sum(dims).clamp_min(1)
