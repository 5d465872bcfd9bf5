"""Checkpoints: θ, optimiser and RNG states, iteration and the resolved config, written atomically.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (``torch.save``) with keys
``format_version``, ``policy`` (state dict), ``policy_kwargs``, ``optimizer``, ``rng``,
``iteration``, ``config``, ``env``, ``baseline``, ``oracle``, ``tracking`` (the backend's name),
``tracked_run_id`` and ``tracking_uri`` (the tracked run; ``mlflow_run_id`` in earlier
checkpoints), ``recent_post``, ``recent_tasks``, ``history`` and ``run_dir``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
# config keys added after checkpoints were first written → the value those checkpoints were trained with
ADDED_KEYS = {("env", "normalize_actions"): False, ("inner", "estimator"): "maml", ("policy", "name"): "mlp",
              ("tracking", "name"): "mlflow"}


def tracked_run(state: dict[str, Any]) -> tuple[str, str] | None:
    """``(store uri, run id)`` of the tracked run a checkpoint belongs to, or None."""
    run_id = state.get("tracked_run_id", state.get("mlflow_run_id"))  # the key's earlier name
    return (state["tracking_uri"], run_id) if run_id else None


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
    """Read a checkpoint written by ``save_checkpoint`` (or by earlier versions of it).

    The file is unpickled with ``weights_only=True``: tensors and plain containers only, so a
    crafted file cannot run code. Configs written before a key existed get the value they were
    trained with (``ADDED_KEYS``), and the oracle switch they kept in ``env.oracle`` moves to
    ``baseline.oracle``, the one switch today.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: ``"not a maml_rl checkpoint: <path> (...)"`` for any other file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ValueError(f"not a maml_rl checkpoint: {path} ({str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or "format_version" not in state or "policy" not in state:
        raise ValueError(f"not a maml_rl checkpoint: {path}")
    config = state.get("config")
    if isinstance(config, dict):
        for (group, key), value in ADDED_KEYS.items():  # resume and evaluate an older checkpoint as it was trained
            config.setdefault(group, {}).setdefault(key, value)
        if "oracle" in config.get("env", {}):
            config.setdefault("baseline", {})["oracle"] = bool(config["env"].pop("oracle")
                                                              or config["baseline"].get("oracle", False))
    return state
