"""Task distributions: the TaskEnv base and registry (``base``), one module per family."""

from . import locomotion, navigation  # noqa: F401  (register the families)
from .base import ENVS, EnvConfig, TaskEnv, make_env

__all__ = ["ENVS", "EnvConfig", "TaskEnv", "make_env"]
