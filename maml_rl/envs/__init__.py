"""Task distributions: the TaskEnv base and registry (``base``), one module per family."""

from ..registry import import_modules
from .base import ENVS, EnvConfig, TaskEnv, make_env

__all__ = ["ENVS", "EnvConfig", "TaskEnv", "make_env"]

import_modules(__name__, __path__)  # every module registers its plug-in
