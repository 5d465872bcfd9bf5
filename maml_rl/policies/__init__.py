"""Policies: the Policy protocol and registry (``base``) and one module per policy type."""

from ..registry import import_modules
from .base import POLICIES, Policy, PolicyConfig, build_policy, load_policy, policy_from_state

__all__ = ["POLICIES", "Policy", "PolicyConfig", "build_policy", "load_policy", "policy_from_state"]

import_modules(__name__, __path__)  # every module registers its plug-in
