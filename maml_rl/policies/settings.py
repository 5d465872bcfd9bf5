"""The settings of every policy type (the ``policy`` group's schema), torch-free: the command line is
checked against them before torch is imported. Each policy's module implements its settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..registry import Registry, Settings

POLICIES = Registry("policy", package="maml_rl.policies")
ACTIVATIONS = ("relu", "tanh")  # hidden-layer nonlinearities (gaussian_mlp.ACTIVATION_LAYERS)
ADAPT = ("all", "gating", "experts")  # which parameters of a mixture of experts the inner loop adapts


@dataclass
class PolicyConfig(Settings):
    """Settings of a policy type; each type subclasses it with its name, fields and defaults."""


@POLICIES.declare("mlp")
@dataclass
class GaussianMLPConfig(PolicyConfig):
    """``policy=mlp``: two layers of 100 ReLU units and initial std 1 (Finn et al., 2017, Section 5.3)."""

    name: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100])
    activation: str = "relu"
    init_std: float = 1.0
    rules: ClassVar[dict] = {
        "hidden_sizes": (lambda v: len(v) >= 1 and all(h >= 1 for h in v), "a non-empty list of sizes >= 1"),
        "activation": (lambda v: v in ACTIVATIONS, f"one of {list(ACTIVATIONS)}"),
        "init_std": (lambda v: v > 0, "> 0"),
    }


@POLICIES.declare("moe")
@dataclass
class MixtureOfExpertsConfig(PolicyConfig):
    """``policy=moe``: 4 experts of two 64-unit ReLU layers, a gate of one 32-unit layer at
    temperature 1, every parameter adapted in the inner loop, no load-balancing term."""

    name: str = "moe"
    num_experts: int = 4
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])  # each expert's mean network
    gate_hidden_sizes: list[int] = field(default_factory=lambda: [32])  # the gating network
    activation: str = "relu"
    temperature: float = 1.0  # τ of softmax(logits / τ); lower: sharper gates
    init_std: float = 1.0
    adapt: str = "all"  # which parameters the inner loop adapts: all | gating | experts
    balance_coef: float = 0.0  # weight of the load-balancing loss in the outer objective
    rules: ClassVar[dict] = {
        "num_experts": (lambda v: v >= 1, ">= 1"),
        "hidden_sizes": (lambda v: len(v) >= 1 and all(h >= 1 for h in v), "a non-empty list of sizes >= 1"),
        "gate_hidden_sizes": (lambda v: all(h >= 1 for h in v), "a list of sizes >= 1 (empty: a linear gate)"),
        "activation": (lambda v: v in ACTIVATIONS, f"one of {list(ACTIVATIONS)}"),
        "temperature": (lambda v: v > 0, "> 0"),
        "init_std": (lambda v: v > 0, "> 0"),
        "adapt": (lambda v: v in ADAPT, f"one of {list(ADAPT)}"),
        "balance_coef": (lambda v: v >= 0, ">= 0"),
    }
