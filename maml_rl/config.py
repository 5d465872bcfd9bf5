"""The config schema: every key typed and defaulted here or in its plug-in's settings dataclass,
every range checked before any work starts.

The YAML files in ``conf/`` only select: each option of a group (``conf/env/ant.yaml``) extends
the schema node ``schema/<group>/<name>`` stored in Hydra's ConfigStore by ``register``, which
takes the settings dataclass of every registered plug-in (env, policy, algorithm, tracking).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from .algorithms import ALGORITHMS, OuterLoopConfig
from .core import ESTIMATORS
from .envs import ENVS, EnvConfig
from .help import CONF, EXPERIMENTS, GROUPS, help_text
from .policies import POLICIES, PolicyConfig
from .registry import Registry
from .tracking import TRACKERS, TrackingConfig

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
    return PLUGINS[group].schema(name)


def declared(schema: type) -> list[str]:
    """The keys a schema dataclass declares (``name`` included)."""
    return sorted(f.name for f in fields(schema))


def unknown_key(key: str, schemas: dict[str, type | None]) -> str | None:
    """Why ``key`` (``inner.lrr``, ``seeds``) is not a key of the config, or None if it is one.

    ``schemas`` maps each group to the schema of the option it selects (None: an option with no
    registered schema, left to the name check). A key of another option of the same group is
    answered with the selected option's keys (``algorithm.max_kl`` on PPO); a near miss with the
    nearest keys (``did you mean inner.lr?``).
    """
    group, _, sub = key.partition(".")
    if not sub:
        top = [*declared(Config), *GROUPS]
        if group in top or group == "hydra":  # Hydra's own node, when a config is composed with it
            return None
        near = difflib.get_close_matches(group, top, n=3)
        return f"unknown key {key}" + (f": did you mean {' or '.join(near)}?" if near else f"; the keys: {', '.join(top)}")
    if group not in schemas:  # a top-level key with a dot: judged as a top-level key
        return unknown_key(group, schemas)
    schema = schemas[group]
    first = sub.split(".")[0]
    if schema is None or first in declared(schema):
        return None
    option = getattr(schema, "name", "") if group in PLUGINS else ""
    keys = [k for k in declared(schema) if k != "name"]
    where = f"{group}={option}" if option else group
    others = [e.name for e in PLUGINS[group] if first in declared(e.config)] if group in PLUGINS else []
    if others:
        return f"{key} is not a key of {where} (it is one of {group}={','.join(others)}); {where} has {', '.join(keys)}"
    near = difflib.get_close_matches(first, keys, n=3)
    if near:
        return f"unknown key {key}: did you mean {' or '.join(f'{group}.{k}' for k in near)}?"
    return f"unknown key {key}; {where}'s keys: {', '.join(keys)}"


def check_keys(cfg: DictConfig) -> None:
    """Refuse a key no schema declares (a ``+key=...`` override, a typo in a preset): it would be
    saved with the run and used nowhere.

    Raises:
        ConfigError: ``"unknown key inner.lrr: did you mean inner.lr?"``.
    """
    schemas = {g: _schema_of(cfg, g) for g in [*PLUGINS, *FIXED]}
    keys = [str(k) for k in cfg if str(k) not in schemas]
    keys += [f"{g}.{k}" for g in schemas if isinstance(cfg.get(g), DictConfig) for k in cfg[g]]
    for key in keys:
        problem = unknown_key(key, schemas)
        if problem:
            raise ConfigError(problem)


def check_overrides(overrides: list[str]) -> None:
    """Check the command line's keys before Hydra composes (Hydra refuses an unknown key with a hint
    to add it with ``+``, which would then be ignored). Each group's option is the command line's
    (every value of a sweep), else the preset's (``experiment=``), else ``conf/config.yaml``'s.
    Overrides Hydra cannot parse are left to it.

    Raises:
        ConfigError: as ``check_keys``.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:  # Hydra reports its own syntax errors
        return
    chosen = selected_options(CONF / "config.yaml")
    for o in parsed:
        if o.key_or_group == "experiment" and not o.is_sweep_override():
            chosen.update(selected_options(EXPERIMENTS / f"{o.get_value_element_as_str()}.yaml"))
    for o in parsed:
        if o.key_or_group in GROUPS and not o.is_delete():
            chosen[o.key_or_group] = (list(o.sweep_string_iterator()) if o.is_sweep_override()
                                      else [o.get_value_element_as_str()])
    schemas: dict[str, type | None] = {**FIXED, **{g: option_schema(g, names[0]) for g, names in chosen.items()
                                                   if g in PLUGINS}}
    for o in parsed:
        key = o.key_or_group
        if key.startswith(("hydra", "experiment")) or "/" in key or key in GROUPS or o.is_delete():
            continue
        group = key.split(".")[0]
        for option in chosen.get(group, [None]) if group in PLUGINS else [None]:  # every option a sweep selects
            problem = unknown_key(key, {**schemas, group: option_schema(group, option)} if option else schemas)
            if problem:
                raise ConfigError(problem)


def option_schema(group: str, option: str) -> type | None:
    """The settings dataclass of a plug-in group's option (None for an unknown one, left to Hydra)."""
    return PLUGINS[group].schema(option)


def selected_options(path: Path) -> dict[str, list[str]]:
    """The group options a defaults list selects: ``conf/config.yaml``'s (``- env: navigation``) or a
    preset's (``- override /env: trading``); none for a file that does not exist (an unknown preset,
    left to Hydra)."""
    defaults = OmegaConf.load(path).get("defaults", []) if path.is_file() else []
    return {k.split("/")[-1]: [v] for d in defaults if isinstance(d, DictConfig) for k, v in d.items()
            if v and k.split("/")[-1] in GROUPS and "hydra" not in k}


def validate(cfg: DictConfig) -> None:
    """Check every key of a composed config against its schema (``check_keys``), then every ranged
    key against the rules of its schema.

    Raises:
        ConfigError: ``"inner.lr=-0.1 is not allowed: must be > 0"`` for the first bad value, an
            unknown plug-in name (``"algorithm.name='sgd' is not known; available: [...]"``), or a
            plug-in's own check (``Settings.check``: e.g. a market-data file with a missing column).
    """
    for group, registry in PLUGINS.items():
        name = OmegaConf.select(cfg, f"{group}.name", default=None)
        if name is not None and name not in registry:
            raise ConfigError(f"{group}.name={name!r} is not known; available: {sorted(registry.entries)}")
    check_keys(cfg)
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
