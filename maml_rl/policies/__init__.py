"""Policies: the Policy protocol and its builders (``base``), every type's settings and the registry
(``settings``, torch-free), one module per policy type."""

from .settings import POLICIES, PolicyConfig

__all__ = ["POLICIES", "PolicyConfig"]
