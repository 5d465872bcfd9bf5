"""The config schema: every key typed and defaulted here or in its plug-in's settings dataclass,
every range checked before any work starts.

The YAML files in ``conf/`` only select: each option of a group (``conf/env/ant.yaml``) extends
the schema node ``schema/<group>/<name>`` stored in Hydra's ConfigStore by ``register``, which
takes the settings dataclass of every registered plug-in (env, policy, algorithm, tracking).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from .algorithms import ALGORITHMS, OuterLoopConfig
from .core.maml import ESTIMATORS
from .envs import ENVS, EnvConfig
from .policies import POLICIES, PolicyConfig
from .registry import Registry
from .tracking import TRACKERS, TrackingConfig


def shipped(folder: str) -> Path:
    """A top-level folder of the project (``conf``, ``experiments``): inside the installed package
    (a wheel carries them as ``maml_rl/<folder>``), else beside it in a checkout."""
    package = Path(__file__).resolve().parent
    return package / folder if (package / folder).is_dir() else package.parent / folder


CONF = shipped("conf")  # the config groups
EXPERIMENTS = shipped("experiments")  # presets: the `experiment` group
MODES = ("train", "evaluate")
SEED_LIMIT = 2**31  # training seeds lie below it, evaluation streams above (torch seeds use 32 bits)


class ConfigError(ValueError):
    """A config value outside what is allowed; the message names the key, value and rule."""


@dataclass
class InnerConfig:
    """``inner=vpg``, the adaptation step: ``num_steps`` VPG steps of size ``lr`` (α; the env's
    ``inner_lr``); ``estimator`` is the inner loss's form, which sets the meta-gradient through the
    steps (``lvc``: ProMP's low-variance curvature, ``maml``: Finn et al.)."""

    name: str = "vpg"
    lr: float = II("env.inner_lr")
    num_steps: int = 1
    first_order: bool = False
    estimator: str = "lvc"
    rules: ClassVar[dict] = {
        "lr": (lambda v: v > 0, "> 0"),
        "num_steps": (lambda v: v >= 0, ">= 0"),
        "estimator": (lambda v: v in ESTIMATORS, f"one of {list(ESTIMATORS)}"),
    }


@dataclass
class BaselineConfig:
    """What is trained (Finn et al., 2017, Section 5.3): MAML, or one of its comparison points.

    ``train`` false: no training (the random initialisation); ``inner_loop`` false: training
    without adaptation (pretrained, oracle); ``oracle``: the task parameters are appended to
    the observation and the policy is evaluated without adaptation (the one oracle switch).
    """

    name: str = MISSING
    train: bool = True
    inner_loop: bool = True
    oracle: bool = False
    rules: ClassVar[dict] = {}


@dataclass
class EvalConfig:
    """``mode=evaluate``: adaptation curves on fresh tasks (Finn et al., 2017, Section 5.3).

    Every method adapts with the step sizes ``lr`` (the env's protocol), or, with ``lr_grid``, with
    its own: for k = 1..num_steps in turn, the step size of step k is the grid value that gives the
    highest return after k steps on ``num_val_tasks`` validation tasks, the earlier steps fixed.
    """

    checkpoints: list[str] = field(default_factory=list)  # checkpoint paths, run dirs or MLflow run ids
    sweep_dir: str | None = None  # or: evaluate every <sweep_dir>/*/checkpoint.pt
    include_random: bool = True  # add the seeded random initialisation when no random checkpoint is given
    num_tasks: int = 40  # fresh evaluation (test) tasks
    num_steps: int = 3  # gradient steps: returns at k = 0..num_steps
    lr: list[float] = II("env.eval_lr")  # noqa: RUF009 (a string) — step size of each gradient step; the last one repeats
    episodes_per_task: int = II("env.eval_episodes_per_task")  # episodes per task before each step and after the last
    lr_grid: list[float] = field(default_factory=list)  # if given: each method's step sizes, chosen per step from it
    num_val_tasks: int = 40  # validation tasks (another stream than the test tasks) that choose from lr_grid
    seed: int = 0  # evaluation seed (its task stream is disjoint from every training seed)
    rules: ClassVar[dict] = {
        "num_tasks": (lambda v: v >= 2, ">= 2 (a confidence interval needs two tasks)"),
        "num_steps": (lambda v: v >= 0, ">= 0"),
        "lr": (lambda v: len(v) > 0 and min(v) > 0, "a non-empty list of step sizes > 0"),
        "episodes_per_task": (lambda v: v >= 1, ">= 1"),
        "lr_grid": (lambda v: len(v) == 0 or min(v) > 0, "a list of step sizes > 0 (empty: use eval.lr)"),
        "num_val_tasks": (lambda v: v >= 1, ">= 1"),
        "seed": (lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT})"),
    }


@dataclass
class Config:
    """The whole config of ``python -m maml_rl``."""

    env: EnvConfig = MISSING
    algorithm: OuterLoopConfig = MISSING
    inner: InnerConfig = MISSING
    baseline: BaselineConfig = MISSING
    policy: PolicyConfig = MISSING
    tracking: TrackingConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    mode: str = "train"  # train | evaluate
    resume: str | None = None  # a run dir, checkpoint or MLflow run id to continue
    seed: int = 0
    meta_batch_size: int = II("env.meta_batch_size")  # tasks per meta-iteration (the env's paper setting)
    episodes_per_task: int = II("env.episodes_per_task")  # episodes per task in each support and query batch
    num_iterations: int = 500
    checkpoint_every: int = 50
    gamma: float = 0.99
    gae_lambda: float = 1.0
    threads: int = 0  # torch and MuJoCo threads; 0 = all cores
    rules: ClassVar[dict] = {
        "mode": (lambda v: v in MODES, f"one of {list(MODES)}"),
        "seed": (lambda v: 0 <= v < SEED_LIMIT, f"in [0, {SEED_LIMIT})"),
        "meta_batch_size": (lambda v: v >= 1, ">= 1"),
        "episodes_per_task": (lambda v: v >= 1, ">= 1"),
        "num_iterations": (lambda v: v >= 0, ">= 0"),
        "checkpoint_every": (lambda v: v >= 1, ">= 1"),
        "gamma": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "gae_lambda": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        "threads": (lambda v: v >= 0, ">= 0 (0 = all cores)"),
    }


PLUGINS: dict[str, Registry] = {"env": ENVS, "algorithm": ALGORITHMS, "policy": POLICIES, "tracking": TRACKERS}
FIXED = {"inner": InnerConfig, "baseline": BaselineConfig, "eval": EvalConfig}


def _schema_of(cfg: DictConfig, group: str) -> type | None:
    if group in FIXED:
        return FIXED[group]
    name = OmegaConf.select(cfg, f"{group}.name", default=None)
    return PLUGINS[group][name].config if name in PLUGINS[group] else None


def validate(cfg: DictConfig) -> None:
    """Check every ranged key of a composed config against the rules of its schema.

    Raises:
        ConfigError: ``"inner.lr=-0.1 is not allowed: must be > 0"`` for the first bad value, an
            unknown plug-in name (``"algorithm.name='sgd' is not known; available: [...]"``), or a
            plug-in's own check (``Settings.check``: e.g. a market-data file with a missing column).
    """
    for group, registry in PLUGINS.items():
        name = OmegaConf.select(cfg, f"{group}.name", default=None)
        if name is not None and name not in registry:
            raise ConfigError(f"{group}.name={name!r} is not known; available: {sorted(registry.entries)}")
    checks = [("", Config)] + [(f"{g}.", _schema_of(cfg, g)) for g in [*PLUGINS, *FIXED]]
    for prefix, schema in checks:
        for key, (ok, allowed) in (getattr(schema, "rules", None) or {}).items():
            value = OmegaConf.select(cfg, prefix + key, default=None)
            if value is not None and not ok(value):
                raise ConfigError(f"{prefix}{key}={value} is not allowed: must be {allowed}")
    for group in (g for g in PLUGINS if OmegaConf.select(cfg, f"{g}.name", default=None) is not None):
        try:
            settings(cfg, group).check()
        except ValueError as err:
            raise ConfigError(str(err)) from None
    given = bool(cfg.eval.checkpoints) or cfg.eval.sweep_dir is not None
    if cfg.mode == "train" and given:
        raise ConfigError("eval.checkpoints / eval.sweep_dir are set but mode=train: add mode=evaluate to evaluate "
                          "them (or drop them to train)")
    if cfg.mode == "evaluate" and not given:
        raise ConfigError("mode=evaluate needs eval.checkpoints=[...] (checkpoints, run dirs or MLflow run ids) "
                          "or eval.sweep_dir=<a sweep's dir>")


def default_suppliers() -> set[str]:
    """Keys whose role is to supply another key's default (``meta_batch_size: ${env.meta_batch_size}``):
    ``{"env.meta_batch_size", "env.episodes_per_task", "env.inner_lr"}``."""
    found = set()
    for schema in (Config, *FIXED.values()):
        for f in fields(schema):
            if isinstance(f.default, str) and f.default.startswith("${") and f.default.endswith("}"):
                found.add(f.default[2:-1])
    return found


def settings(cfg: DictConfig, group: str) -> Any:
    """The settings dataclass of a plug-in group (``"env"``, ``"policy"``, ...) filled from ``cfg``."""
    return PLUGINS[group].settings(OmegaConf.to_container(cfg[group], resolve=True))


def register() -> None:
    """Put the schemas and the experiment presets in Hydra's ConfigStore.

    Each registered plug-in's settings dataclass becomes ``schema/<group>/<name>`` (what the
    option's YAML extends); the fixed groups are ``schema/inner/vpg`` and ``schema/baseline/base``.
    The presets in ``experiments/*.yaml`` become the ``experiment`` group (global package), so
    ``+experiment=navigation_fig4`` finds them wherever the command runs.
    """
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for group, registry in PLUGINS.items():
        for entry in registry:
            cs.store(group=f"schema/{group}", name=entry.name, node=entry.config, package=group)
    cs.store(group="schema/inner", name="vpg", node=InnerConfig, package="inner")
    cs.store(group="schema/baseline", name="base", node=BaselineConfig, package="baseline")
    for preset in sorted(EXPERIMENTS.glob("*.yaml")):
        cs.store(group="experiment", name=preset.stem, node=OmegaConf.load(preset), package="_global_")
    cs.store(group="hydra/help", name="maml_rl", node={"app_name": "maml_rl", "header": "", "footer": "",
                                                        "template": help_text()})


GROUPS = {"env": "the task distribution", "algorithm": "the outer loop (meta-optimiser)",
          "inner": "the adaptation step", "baseline": "what is trained",
          "policy": "the policy", "tracking": "where runs are recorded"}


def help_text() -> str:
    """``python -m maml_rl --help``: the groups and their options, the main keys, the presets."""
    def options(group: str) -> str:
        return ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))

    presets = []
    for preset in sorted(EXPERIMENTS.glob("*.yaml")):
        comment = " ".join(ln[2:] for ln in preset.read_text().split("\n\n")[0].splitlines()
                           if ln.startswith("# ") and "@package" not in ln)
        presets.append(f"  {preset.stem:<20} {comment.split('. ')[0].split(': ')[0]}")
    keys = "seed num_iterations meta_batch_size episodes_per_task checkpoint_every gamma gae_lambda threads"
    return "\n".join([
        "maml_rl: meta-reinforcement learning (MAML and its baselines), one Hydra app.",
        "",
        "  python -m maml_rl [group=option ...] [key=value ...]     train (mode=train)",
        "  python -m maml_rl mode=evaluate eval.checkpoints=[RUN, ...]   adaptation curves",
        "  python -m maml_rl --multirun key=a,b,c ...               a sweep (hydra/launcher=slurm for a cluster)",
        "  python -m maml_rl resume=RUN [num_iterations=N]          continue a run",
        "  python -m maml_rl --cfg job [overrides]                  print the composed config",
        "",
        "Config groups:",
        *(f"  {g:<10} {what}: {options(g)}" for g, what in GROUPS.items()),
        "  hydra/launcher  where sweep jobs run: basic (default), submitit_local, slurm",
        "",
        f"Main keys: {keys} (see --cfg job); mode (train | evaluate), resume (a run dir, checkpoint or MLflow run id),",
        "eval.* (mode=evaluate), inner.lr / inner.num_steps, algorithm.*, policy.*, tracking.uri.",
        "",
        "Presets (experiment=NAME):",
        *presets,
        "",
        "Docs: README.md and docs/ in the repository.",
    ])

