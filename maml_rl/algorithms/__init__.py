"""Outer loops (meta-optimisers): the OuterLoop protocol and registry (``base``), one module each."""

from ..registry import import_modules
from .base import ALGORITHMS, AlgorithmConfig, OuterLoop, build_algorithm

__all__ = ["ALGORITHMS", "AlgorithmConfig", "OuterLoop", "build_algorithm"]

import_modules(__name__, __path__)  # every module registers its plug-in
