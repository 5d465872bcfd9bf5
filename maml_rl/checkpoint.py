"""Checkpoints: θ, optimiser and RNG states, iteration and the resolved config, written atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .policy import GaussianMLPPolicy

FORMAT_VERSION = 1
RUN_ID = re.compile(r"^(runs:/)?([0-9a-f]{32})/?$")
# config keys added after checkpoints were first written → the value those checkpoints were trained with
ADDED_KEYS = {("env", "normalize_actions"): False, ("inner", "estimator"): "maml"}


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
    """Read a checkpoint written by ``save_checkpoint``; config keys it predates get ``ADDED_KEYS``.

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
    for (group, key), value in ADDED_KEYS.items():  # resume and evaluate an older checkpoint as it was trained
        state.get("config", {}).get(group, {}).setdefault(key, value)
    return state


def resolve_checkpoint(reference: str, tracking_uri: str) -> Path:
    """A checkpoint path, or an MLflow run id (``<32 hex>`` or ``runs:/<id>``) → its final checkpoint.

    Raises:
        FileNotFoundError: if the path does not exist and is not a run id, or the run has no checkpoint.
    """
    path = Path(reference)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if path.is_file():
        return path
    match = RUN_ID.match(reference)
    if not match:
        raise FileNotFoundError(f"checkpoint {reference}: no such file, and not an MLflow run id")
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(run_id=match.group(2), artifact_path="checkpoint/checkpoint.pt",
                                                    tracking_uri=tracking_uri)
    except Exception as err:  # mlflow raises several types for a missing run or artifact
        raise FileNotFoundError(f"checkpoint of MLflow run {match.group(2)}: cannot be fetched ({err})") from err
    return Path(local)


def load_policy(path: str | os.PathLike) -> GaussianMLPPolicy:
    """The trained policy of a checkpoint, in one call."""
    state = load_checkpoint(path)
    policy = GaussianMLPPolicy(**state["policy_kwargs"])
    policy.load_state_dict(state["policy"])
    return policy
