"""Task distributions: the TaskFamily and TaskEnv bases and the registry (``base``), one module per family."""

from ..registry import import_modules
from .base import ENVS, EnvConfig, TaskEnv, TaskFamily, build_family

__all__ = ["ENVS", "EnvConfig", "TaskEnv", "TaskFamily", "build_family"]

import_modules(__name__, __path__)  # every module registers its plug-in
