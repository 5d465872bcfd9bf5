"""Checkpoints: θ, optimiser and RNG states, iteration and the resolved config, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .policy import GaussianMLPPolicy

FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename.

    A crash during the write leaves any previous checkpoint at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a maml_rl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "format_version" not in state or "policy" not in state:
        raise ValueError(f"{path} is not a maml_rl checkpoint")
    return state


def load_policy(path: str | os.PathLike) -> GaussianMLPPolicy:
    """The trained policy of a checkpoint, in one call."""
    state = load_checkpoint(path)
    policy = GaussianMLPPolicy(**state["policy_kwargs"])
    policy.load_state_dict(state["policy"])
    return policy
