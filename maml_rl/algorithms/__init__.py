"""Outer loops (meta-optimisers): the OuterLoop protocol and registry (``base``), one module each."""

from ..registry import import_modules
from .base import ALGORITHMS, OuterLoop, OuterLoopConfig, build_outer_loop

__all__ = ["ALGORITHMS", "OuterLoop", "OuterLoopConfig", "build_outer_loop"]

import_modules(__name__, __path__)  # every module registers its plug-in
