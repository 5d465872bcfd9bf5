"""Outer loops (meta-optimisers): the OuterLoop protocol (``base``), every option's settings and the
registry (``settings``, torch-free), one module each."""

from .settings import ALGORITHMS, OuterLoopConfig

__all__ = ["ALGORITHMS", "OuterLoopConfig"]
