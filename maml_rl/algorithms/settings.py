"""The settings of every outer loop (the ``algorithm`` group's schema), torch-free: the command line is
checked against them before torch is imported. Each algorithm's module implements its settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import Registry, Settings

ALGORITHMS = Registry("algorithm", package="maml_rl.algorithms")


@dataclass
class OuterLoopConfig(Settings):
    """Settings of an outer loop; each algorithm subclasses it with its name, fields and defaults."""


@ALGORITHMS.declare("trpo")
@dataclass
class TRPOConfig(OuterLoopConfig):
    """``algorithm=trpo``: the settings of the MAML code (max_kl 0.01, 10 CG steps, 15 backtracks ×0.8)."""

    name: str = "trpo"
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    fvp_subsample: float = 0.1  # fraction of episodes per task in Fisher-vector products; 1 = exact
    rules: ClassVar[dict] = {
        "max_kl": (lambda v: v > 0, "> 0"),
        "cg_iters": (lambda v: v >= 1, ">= 1"),
        "cg_damping": (lambda v: v >= 0, ">= 0"),
        "ls_max_steps": (lambda v: v >= 1, ">= 1"),
        "ls_backtrack_ratio": (lambda v: 0 < v < 1, "in (0, 1)"),
        "fvp_subsample": (lambda v: 0 < v <= 1, "in (0, 1] (1 = exact Fisher-vector products)"),
    }


@ALGORITHMS.declare("ppo")
@dataclass
class PPOConfig(OuterLoopConfig):
    """``algorithm=ppo``: the settings of ProMP's MAML-PPO (Rothfuss et al., 2019): 5 Adam epochs
    of step 1e-3, clip 0.3."""

    name: str = "ppo"
    epochs: int = 5
    lr: float = 1e-3
    clip_eps: float = 0.3
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    rules: ClassVar[dict] = {
        "epochs": (lambda v: v >= 1, ">= 1"),
        "lr": (lambda v: v > 0, "> 0"),
        "clip_eps": (lambda v: 0 < v < 1, "in (0, 1)"),
        "entropy_coef": (lambda v: v >= 0, ">= 0"),
        "max_grad_norm": (lambda v: v > 0, "> 0"),
    }


@ALGORITHMS.declare("promp")
@dataclass
class ProMPConfig(PPOConfig):
    """``algorithm=promp``: the settings of ProMP's experiments (Rothfuss et al., 2019, App. and
    their run scripts): 5 Adam steps of 1e-3 per batch, clip 0.3, KL penalty coefficient η = 5e-4
    between the pre-update policies, not adapted (``adaptive_kl``: halve η when the KL is below
    ``target_kl`` / 1.5, double it above 1.5 ``target_kl``). Use it with the LVC inner loss
    (``inner.estimator=lvc``, the default), which is ProMP's."""

    name: str = "promp"
    kl_coef: float = 5e-4
    adaptive_kl: bool = False
    target_kl: float = 0.01
    rules: ClassVar[dict] = {
        **PPOConfig.rules,
        "kl_coef": (lambda v: v >= 0, ">= 0"),
        "target_kl": (lambda v: v > 0, "> 0"),
    }
