"""Task distributions: the TaskFamily and TaskEnv bases and their builder (``base``), every family's
settings and the registry (``settings``, torch-free), one module per family."""

from .settings import ENVS, EnvConfig

__all__ = ["ENVS", "EnvConfig"]
