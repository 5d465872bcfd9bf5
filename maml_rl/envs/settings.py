"""The settings of every task family (the ``env`` group's schema), torch-free: the command line is
checked against them before torch is imported. Each family's module implements its settings."""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from datetime import date
from typing import Any, ClassVar

from ..registry import Registry, Settings

ENVS = Registry("env", package="maml_rl.envs")  # task families by name


@dataclass
class EnvConfig(Settings):
    """A task family and the paper's settings for it; the top-level ``meta_batch_size``,
    ``episodes_per_task`` and ``inner.lr`` default to its values. Each family subclasses it
    with its name and the settings that differ (defaults: 2D navigation, Finn et al., 2017,
    Section 5.3 and App. A.2: horizon 100, 20 tasks × 20 episodes, α = 0.1). ``eval_lr`` and
    ``eval_episodes_per_task`` are the paper's evaluation protocol for the family, the defaults of
    ``eval.lr`` / ``eval.episodes_per_task`` (navigation: step size 0.1 for the first step and 0.05
    after it, 40 episodes per update; Section 5.3)."""

    name: str = "navigation"
    horizon: int = 100
    meta_batch_size: int = 20
    episodes_per_task: int = 20
    inner_lr: float = 0.1
    eval_lr: list[float] = field(default_factory=lambda: [0.1, 0.05])
    eval_episodes_per_task: int = 40
    normalize_observations: bool = False  # running mean/std of observations in the policy
    normalize_actions: bool = True  # the policy acts in [-1, 1], rescaled to the env's bounds (rllab's normalize)
    rules: ClassVar[dict] = {
        "horizon": (lambda v: v >= 1, ">= 1"),
        "meta_batch_size": (lambda v: v >= 1, ">= 1"),
        "episodes_per_task": (lambda v: v >= 1, ">= 1"),
        "inner_lr": (lambda v: v > 0, "> 0"),
        "eval_lr": (lambda v: len(v) > 0 and min(v) > 0, "a non-empty list of step sizes > 0"),
        "eval_episodes_per_task": (lambda v: v >= 1, ">= 1"),
    }


@ENVS.declare("navigation")
@dataclass
class NavigationConfig(EnvConfig):
    """``env=navigation``: horizon 100, 20 tasks × 20 episodes, α = 0.1 (Finn et al., 2017, App. A.2);
    positions are already in [-1, 1], so observations are not normalised."""

    name: str = "navigation"


@dataclass
class LocomotionConfig(EnvConfig):
    """The MuJoCo families (Finn et al., 2017, Section 5.3, App. A.2): horizon 200, 40 tasks ×
    20 episodes, α = 0.1, running observation normalisation; evaluated with the training step size
    and episodes per update."""

    horizon: int = 200
    meta_batch_size: int = 40
    eval_lr: list[float] = field(default_factory=lambda: [0.1])
    eval_episodes_per_task: int = 20
    normalize_observations: bool = True


def family_config(name: str, **defaults) -> type:
    """The settings dataclass of one family: ``LocomotionConfig`` with its ``name`` and the
    defaults in which it differs (the ant forward/backward task used 40 episodes per task, App. A.2)."""
    values = {"name": name, **defaults}
    return make_dataclass(f"{name}_config", [(k, type(v), field(default=v)) for k, v in values.items()],
                          bases=(LocomotionConfig,))


ENVS.declare("ant")(family_config("ant"))
ENVS.declare("ant_dir")(family_config("ant_dir", episodes_per_task=40, eval_episodes_per_task=40))
ENVS.declare("halfcheetah_vel")(family_config("halfcheetah_vel"))
ENVS.declare("halfcheetah_dir")(family_config("halfcheetah_dir"))


# name → (package, file inside it, its date column, its date format, its close column if it has no OHLCV);
# read without importing the package
BUILTIN = {
    "SP500": ("arch", "data/sp500/sp500.csv.gz", "Date", "%m/%d/%Y", None),  # daily, 1999–2018: through 2000–02, 2008
    "NASDAQ": ("arch", "data/nasdaq/nasdaq.csv.gz", "Date", "%m/%d/%Y", None),
    "WTI": ("arch", "data/wti/wti.csv.gz", "Date", "%m/%d/%Y", "DCOILWTICO"),  # daily crude oil 1986–2019 (FRED)
    "GOOGL": ("gym_anytrading", "datasets/data/STOCKS_GOOGL.csv", "Date", None, None),
    "EURUSD_1H": ("gym_anytrading", "datasets/data/FOREX_EURUSD_1H_ASK.csv", "Time", "%d.%m.%Y %H:%M:%S.%f", None),
    "GOOG": ("backtesting", "test/GOOG.csv", 0, None, None),
    "EURUSD": ("backtesting", "test/EURUSD.csv", 0, None, None),
    "BTCUSD": ("backtesting", "test/BTCUSD.csv", 0, None, None),
}
SUPPORTS = ("preceding", "in_sample")  # where the support episodes of a window trade
EXECUTIONS = ("close", "next_open")  # where a decision taken at a close is filled
SPLITS = ("train", "validation", "test")  # the calendar parts of every series, in order
SUPPORTS = ("preceding", "in_sample")  # where the support episodes of a window trade


@ENVS.declare("trading")
@dataclass
class TradingConfig(EnvConfig):
    """``env=trading``: windows of ``horizon`` bars (default 100), 20 tasks × 20 episodes, α = 1.

    ``data``: built-in series (``SP500`` and ``NASDAQ`` daily 1999–2018, 5,031 bars each, and
    ``WTI`` crude oil daily 1986–2019, closes only, from arch; ``GOOGL`` daily 2009–2018 and
    ``EURUSD_1H`` hourly 2017, from gym-anytrading; ``GOOG``, ``EURUSD``, ``BTCUSD`` from
    backtesting.py) or CSV paths with columns Date/Open/High/Low/Close/Volume. The default set
    holds two equity indices and a commodity over the same calendar, through 2000–02 and 2008.
    ``lookback``: log-returns in the observation; ``commission_bps``: cost per unit of position
    traded in basis points of the equity (5 = 0.05 %), one value for every series or one per
    series (a pip of EUR/USD near 1.10 is 0.9 bps). ``split_dates``: the first day of the
    validation part and of the test part, the same calendar split for every series: training
    windows trade only bars before the first, validation windows (which choose evaluation step
    sizes) bars between them, test windows bars from the second on (their support window and
    look-back may read earlier bars: they are the past). ``support``: where a window's support episodes (the
    ones the policy adapts on) trade: ``preceding`` (default, walk-forward), the ``horizon`` bars
    just before the window, so that an adapted policy is scored only on bars it has not seen; or
    ``in_sample``, the window itself (rows labelled in-sample wherever they are shown).
    ``execution``: a position decided at a close is filled at that ``close`` (default) or at the
    ``next_open``, so that the position held overnight is the previous one (series with opens only).
    ``momentum_bars``, ``ma_bars`` (fast, slow), ``vol_bars`` and ``vol_target`` (annualised) set
    the rule-based references evaluation scores beside buy-and-hold (``Trading.references``);
    ``cost_sensitivity_bps`` the commissions at which evaluation re-scores every deterministic
    backtest (``Trading.cost_sensitivity``).
    """

    name: str = "trading"
    data: list[str] = field(default_factory=lambda: ["SP500", "NASDAQ", "WTI"])
    lookback: int = 10
    commission_bps: list[float] = field(default_factory=lambda: [5.0])
    split_dates: list[str] = field(default_factory=lambda: ["2012-01-01", "2015-01-01"])
    support: str = "preceding"
    execution: str = "close"
    cost_sensitivity_bps: list[float] = field(default_factory=lambda: [0.0, 2.0, 5.0, 10.0, 20.0])
    momentum_bars: int = 50
    ma_bars: list[int] = field(default_factory=lambda: [20, 100])
    vol_bars: int = 20
    vol_target: float = 0.10
    inner_lr: float = 1.0  # at 0.1 one step barely moves a position; see docs/trading.md
    eval_lr: list[float] = field(default_factory=lambda: [1.0])
    eval_episodes_per_task: int = 20
    rules: ClassVar[dict] = {
        **EnvConfig.rules,
        "data": (lambda v: len(v) > 0, f"a non-empty list of CSV paths or built-in series {sorted(BUILTIN)}"),
        "lookback": (lambda v: v >= 1, ">= 1"),
        "commission_bps": (lambda v: len(v) > 0 and all(0 <= c < 10_000 for c in v),
                           "a non-empty list of basis points in [0, 10000): one for every series or one per series"),
        "split_dates": (lambda v: len(v) == 2 and all(iso_date(d) for d in v) and iso_date(v[0]) < iso_date(v[1]),
                        "[validation start, test start], two dates YYYY-MM-DD in increasing order"),
        "support": (lambda v: v in SUPPORTS, f"one of {list(SUPPORTS)}"),
        "execution": (lambda v: v in EXECUTIONS, f"one of {list(EXECUTIONS)}"),
        "cost_sensitivity_bps": (lambda v: all(0 <= c < 10_000 for c in v), "basis points in [0, 10000)"),
        "momentum_bars": (lambda v: v >= 1, ">= 1"),
        "ma_bars": (lambda v: len(v) == 2 and 1 <= v[0] < v[1], "[fast, slow] with 1 <= fast < slow"),
        "vol_bars": (lambda v: v >= 2, ">= 2"),
        "vol_target": (lambda v: v > 0, "> 0 (an annualised volatility, 0.10 = 10 %)"),
    }

    def check(self) -> None:
        """Check the commissions against the series, then read every series and check that each of
        its parts holds a window.

        Raises:
            ValueError: one line naming the file, the line and the problem (see ``read_series``).
        """
        if len(self.commission_bps) not in (1, len(self.data)):
            raise ValueError(f"env.commission_bps={self.commission_bps} has {len(self.commission_bps)} values for "
                             f"{len(self.data)} series: give one for all or one per series")
        ENVS[self.name].cls(self)  # the family reads its data once, here

    def history(self) -> int:
        """Bars a window needs before its own lookback: its support window's, when it precedes, and
        what the rule-based references read before the first decision."""
        return max(self.horizon if self.support == "preceding" else 0, self.rule_bars() - self.lookback, 0)

    def commissions(self) -> list[float]:
        """Cost per unit of position traded, as a fraction of the equity, per series."""
        return [bps / 10_000 for bps in self.commission_bps] * (len(self.data) if len(self.commission_bps) == 1 else 1)

    def rule_bars(self) -> int:
        """The closes the longest rule-based reference reads before a decision."""
        return max(self.momentum_bars, self.ma_bars[-1], self.vol_bars)


VECTORS = ("sync", "async")  # how the gymnasium adapter steps its envs


@dataclass
class AdapterConfig(EnvConfig):
    """Settings of the families built on the gymnasium adapter: ``vector`` steps the envs of a
    batch in this process (``sync``, gymnasium's ``SyncVectorEnv``) or each in a process of its
    own (``async``, ``AsyncVectorEnv``: for envs slow to step, on a machine with cores to spare)."""

    vector: str = "sync"
    rules: ClassVar[dict] = {
        **EnvConfig.rules,
        "vector": (lambda v: v in VECTORS, f"one of {list(VECTORS)}"),
    }


@ENVS.declare("gymnasium")
@dataclass
class GymnasiumConfig(AdapterConfig):
    """``env=gymnasium``: ``id`` a registered gymnasium id or an entry point ``module:Class`` whose env
    implements ``sample_tasks`` / ``set_task`` (see the module), built with ``kwargs``;
    ``horizon`` the steps per episode (the sampler's time limit; the env's own may end it sooner);
    ``vector``: see ``AdapterConfig``."""

    name: str = "gymnasium"
    id: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    rules: ClassVar[dict] = {
        **AdapterConfig.rules,
        "id": (lambda v: bool(v), "a registered gymnasium id or an entry point module:Class"),
    }

    def check(self) -> None:
        """Build one env and check the protocol and its spaces.

        Raises:
            ValueError: an id that cannot be built, an env without ``sample_tasks`` / ``set_task``,
                spaces that are not flat boxes, or unbounded actions with ``normalize_actions``.
        """
        ENVS[self.name].cls(self)  # the family builds one env


def iso_date(text: str) -> date | None:
    """``text`` as a date if it is one in ISO form (``2015-01-01``), else None."""
    try:
        return date.fromisoformat(str(text))
    except ValueError:
        return None


REWARD_VERSIONS = ("v1", "v2")  # Meta-World's reward functions (v2: Meta-World+, its default)
SIMULATORS = ("auto", "batched", "official")  # Meta-World: the batched Sawyer (envs/sawyer.py) or the official envs
BATCHED_SKILLS = ("reach-v3", "push-v3", "pick-place-v3")  # the skills envs/sawyer.py steps in batch


@dataclass
class MetaWorldConfig(AdapterConfig):
    """Meta-World's meta-learning benchmarks on the official envs (Yu et al., CoRL 2019; v3,
    McLean et al., 2025), through the gymnasium adapter: horizon 500 (Meta-World's
    ``max_path_length``, the most an episode may last), 20 tasks × 10 episodes (garage's MAML-TRPO
    scripts for Meta-World), α = 0.1 on normalised advantages (see docs/metaworld.md);
    ``reward_version`` Meta-World's reward functions; ``goal_seed`` the seed of Meta-World's goal
    sets (fixed, so every run trains and tests on the same goals); ``simulator``: ``batched`` steps
    ML1's reach, push and pick-place in batch (``envs/sawyer.py``, the official env's numbers),
    ``official`` the official envs, ``auto`` the batch where there is one."""

    horizon: int = 500
    meta_batch_size: int = 20
    episodes_per_task: int = 10
    eval_lr: list[float] = field(default_factory=lambda: [0.1])
    eval_episodes_per_task: int = 10
    reward_version: str = "v2"
    goal_seed: int = 0
    simulator: str = "auto"
    rules: ClassVar[dict] = {
        **AdapterConfig.rules,
        "simulator": (lambda v: v in SIMULATORS, f"one of {list(SIMULATORS)}"),
        "horizon": (lambda v: 1 <= v <= 500, "in [1, 500] (Meta-World's episodes end at 500 steps)"),
        "reward_version": (lambda v: v in REWARD_VERSIONS, f"one of {list(REWARD_VERSIONS)}"),
        "goal_seed": (lambda v: v >= 0, ">= 0"),
    }

    def check(self) -> None:
        """Build the benchmark and one env (Meta-World installed, a known skill).

        Raises:
            ValueError: metaworld not installed, or an unknown ``env_name`` (the valid ones listed).
        """
        ENVS[self.name].cls(self)


@ENVS.declare("ml1")
@dataclass
class ML1Config(MetaWorldConfig):
    """``env=ml1 env.env_name=<skill>``: one manipulation skill, 50 training and 50 test goals."""

    name: str = "ml1"
    env_name: str = "reach-v3"


@ENVS.declare("ml10")
@dataclass
class ML10Config(MetaWorldConfig):
    """``env=ml10``: 10 training skills, 5 held-out test skills, 50 goals each."""

    name: str = "ml10"


@ENVS.declare("ml45")
@dataclass
class ML45Config(MetaWorldConfig):
    """``env=ml45``: 45 training skills, 5 held-out test skills (slow to build: 2,500 goals)."""

    name: str = "ml45"
