"""Policies: the Policy protocol and registry (``base``) and one module per policy type."""

from . import gaussian_mlp  # noqa: F401  (registers policy=mlp)
from .base import POLICIES, Policy, PolicyConfig, build_policy, load_policy, policy_from_state

__all__ = ["POLICIES", "Policy", "PolicyConfig", "build_policy", "load_policy", "policy_from_state"]
