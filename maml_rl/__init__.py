"""maml_rl: an experiment platform for meta-reinforcement learning (see README.md and docs/)."""

from __future__ import annotations

import os
from pathlib import Path


def load_policy(reference: str | os.PathLike, tracking_uri: str | None = None, tracking: str = "mlflow"):
    """The trained policy of a run, in one call: ``reference`` is a checkpoint file, a run dir or a
    run id of the ``tracking`` backend (MLflow: ``<32 hex>`` or ``runs:/<id>``, fetched from
    ``tracking_uri``, by default ``sqlite:///./mlflow.db``). The policy acts in the action space it
    was trained in: [-1, 1] per coordinate when ``env.normalize_actions`` was on (the default), the
    env's own otherwise.

    Raises:
        FileNotFoundError: nothing at ``reference``, or a run without a checkpoint.
        ValueError: the file is not a maml_rl checkpoint, or ``tracking`` names no backend.
    """
    from .policies.base import load_policy as load
    from .run.build import resolve_checkpoint
    from .tracking import TRACKERS

    settings = TRACKERS.settings({"name": tracking, "uri": tracking_uri})
    return load(resolve_checkpoint(str(reference), settings, Path.cwd()))
