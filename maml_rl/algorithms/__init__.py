"""Outer loops (meta-optimisers): the OuterLoop protocol and registry (``base``), one module each."""

from . import ppo, trpo  # noqa: F401  (register algorithm=ppo, algorithm=trpo)
from .base import ALGORITHMS, AlgorithmConfig, OuterLoop, build_algorithm

__all__ = ["ALGORITHMS", "AlgorithmConfig", "OuterLoop", "build_algorithm"]
