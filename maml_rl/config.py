"""Structured-config schemas: every key typed, every range checked before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed; the message names the key, value and rule."""


@dataclass
class EnvConfig:
    """A task family and the paper's settings for it (the top-level keys default to these)."""

    name: str = MISSING
    horizon: int = 100
    oracle: bool = False
    meta_batch_size: int = 20
    episodes_per_task: int = 20
    inner_lr: float = 0.1
    normalize_observations: bool = False
    normalize_actions: bool = True


@dataclass
class NavigationConfig(EnvConfig):
    """2D navigation (Finn et al., 2017, Section 5.3): horizon 100, 20 tasks × 20 episodes, α = 0.1."""

    name: str = "navigation"


@dataclass
class LocomotionConfig(EnvConfig):
    """MuJoCo locomotion (Finn et al., 2017, Section 5.3, App. A.2): horizon 200, 40 tasks, α = 0.1."""

    horizon: int = 200
    meta_batch_size: int = 40
    normalize_observations: bool = True


@dataclass
class AlgorithmConfig:
    name: str = MISSING


@dataclass
class TRPOConfig(AlgorithmConfig):
    """TRPO outer loop; defaults of the MAML code (max_kl 0.01, 10 CG steps, 15 backtracks ×0.8)."""

    name: str = "trpo"
    max_kl: float = 0.01
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack_ratio: float = 0.8
    fvp_subsample: float = 0.1


@dataclass
class PPOConfig(AlgorithmConfig):
    """PPO outer loop (Schulman et al., 2017); defaults of ProMP's MAML-PPO (Rothfuss et al., 2019)."""

    name: str = "ppo"
    epochs: int = 5
    lr: float = 1e-3
    clip_eps: float = 0.3
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5


@dataclass
class InnerConfig:
    """The adaptation step: ``num_steps`` VPG steps of size ``lr`` (α, the env's default);
    ``estimator`` is the inner loss's form, which sets the meta-gradient through the steps."""

    name: str = "vpg"
    lr: float = II("env.inner_lr")
    num_steps: int = 1
    first_order: bool = False
    estimator: str = "lvc"


@dataclass
class BaselineConfig:
    """What is trained (Finn et al., 2017, Section 5.3): MAML, or one of its comparison points.

    ``train`` false: no training (the random initialisation); ``inner_loop`` false: training
    without adaptation (pretrained, oracle); ``oracle``: the task parameters are appended to
    the observation and the policy is evaluated without adaptation.
    """

    name: str = MISSING
    train: bool = True
    inner_loop: bool = True
    oracle: bool = False


@dataclass
class EvalConfig:
    """``mode=evaluate``: adaptation curves on fresh tasks (Finn et al., 2017, Section 5.3)."""

    checkpoints: list[str] = field(default_factory=list)
    sweep_dir: str | None = None
    include_random: bool = True
    num_tasks: int = 40
    num_steps: int = 3
    seed: int = 0


@dataclass
class PolicyConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [100, 100])
    activation: str = "relu"
    init_std: float = 1.0


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "maml_rl"


@dataclass
class Config:
    env: EnvConfig = MISSING
    algorithm: AlgorithmConfig = MISSING
    inner: InnerConfig = MISSING
    baseline: BaselineConfig = MISSING
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    mode: str = "train"
    resume: str | None = None
    seed: int = 0
    meta_batch_size: int = II("env.meta_batch_size")
    episodes_per_task: int = II("env.episodes_per_task")
    num_iterations: int = 500
    checkpoint_every: int = 50
    gamma: float = 0.99
    gae_lambda: float = 1.0
    threads: int = 0


MODES = ("train", "evaluate")
SEED_LIMIT = 2**31  # training seeds lie below it, evaluation streams above (torch seeds use 32 bits)
ACTIVATIONS = ("relu", "tanh")
ESTIMATORS = ("maml", "lvc")  # forms of the inner loss, see maml_rl.inner.vpg_loss

# key → (rule, allowed-text); checked in this order after Hydra's own type checks
RULES: dict[str, tuple[Any, str]] = {
    "mode": (lambda v: v in MODES, f"one of {list(MODES)}"),
    "seed": (lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT})"),
    "meta_batch_size": (lambda v: v >= 1, ">= 1"),
    "episodes_per_task": (lambda v: v >= 1, ">= 1"),
    "num_iterations": (lambda v: v >= 0, ">= 0"),
    "checkpoint_every": (lambda v: v >= 1, ">= 1"),
    "gamma": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "gae_lambda": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "threads": (lambda v: v >= 0, ">= 0 (0 = all cores)"),
    "env.horizon": (lambda v: v >= 1, ">= 1"),
    "env.meta_batch_size": (lambda v: v >= 1, ">= 1"),
    "env.episodes_per_task": (lambda v: v >= 1, ">= 1"),
    "env.inner_lr": (lambda v: v > 0, "> 0"),
    "inner.lr": (lambda v: v > 0, "> 0"),
    "inner.num_steps": (lambda v: v >= 0, ">= 0"),
    "inner.estimator": (lambda v: v in ESTIMATORS, f"one of {list(ESTIMATORS)}"),
    "algorithm.max_kl": (lambda v: v > 0, "> 0"),
    "algorithm.cg_iters": (lambda v: v >= 1, ">= 1"),
    "algorithm.cg_damping": (lambda v: v >= 0, ">= 0"),
    "algorithm.ls_max_steps": (lambda v: v >= 1, ">= 1"),
    "algorithm.ls_backtrack_ratio": (lambda v: 0 < v < 1, "in (0, 1)"),
    "algorithm.fvp_subsample": (lambda v: 0 < v <= 1, "in (0, 1] (1 = exact Fisher-vector products)"),
    "algorithm.epochs": (lambda v: v >= 1, ">= 1"),
    "algorithm.lr": (lambda v: v > 0, "> 0"),
    "algorithm.clip_eps": (lambda v: 0 < v < 1, "in (0, 1)"),
    "algorithm.entropy_coef": (lambda v: v >= 0, ">= 0"),
    "algorithm.max_grad_norm": (lambda v: v > 0, "> 0"),
    "policy.hidden_sizes": (lambda v: len(v) >= 1 and all(h >= 1 for h in v), "a non-empty list of sizes >= 1"),
    "policy.activation": (lambda v: v in ACTIVATIONS, f"one of {list(ACTIVATIONS)}"),
    "policy.init_std": (lambda v: v > 0, "> 0"),
    "tracking.experiment": (lambda v: bool(v.strip()), "a non-empty name"),
    "eval.num_tasks": (lambda v: v >= 2, ">= 2 (a confidence interval needs two tasks)"),
    "eval.num_steps": (lambda v: v >= 0, ">= 0"),
    "eval.seed": (lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT})"),
}


def validate(cfg: DictConfig) -> None:
    """Check every ranged key of a composed config.

    Raises:
        ConfigError: ``"inner.lr=-0.1 is not allowed: must be > 0"`` for the first bad value.
    """
    for key, (ok, allowed) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value} is not allowed: must be {allowed}")


def register() -> None:
    """Put the schemas in Hydra's ConfigStore; the YAML files in ``conf/`` extend them."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, name, node in [("env", "navigation", NavigationConfig), ("env", "locomotion", LocomotionConfig),
                              ("algorithm", "trpo", TRPOConfig), ("algorithm", "ppo", PPOConfig),
                              ("inner", "vpg", InnerConfig), ("baseline", "base", BaselineConfig)]:
        cs.store(group=f"schema/{group}", name=name, node=node, package=group)
