"""Trading on recorded market data: a task is an asset and a window of bars, every episode stepped at once.

The agent sets a target position in [-1, 1] (short … long) at the close of each bar, filled at
that close or the next open, and earns the exact log-return of its equity, less a commission on
every change of position. One calendar split (``env.split_dates``) divides every series into
training, validation and test parts; a window trades bars of one part only. The series are
files shipped in well-kept packages (arch's, gym-anytrading's and backtesting.py's data) or the
user's own OHLCV CSVs.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded

from ..figures import pyplot
from .base import TaskEnv, TaskFamily
from .settings import BUILTIN, ENVS, SPLITS, TradingConfig

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ("Date", "Open", "High", "Low", "Close", "Volume")
PERCENT = 100.0  # rewards are in percent of log-return: a window's return reads as "+1.3 %"


def _builtin_path(name: str) -> Path:
    package, relative = BUILTIN[name][:2]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"env.data: built-in series {name} needs the package {package!r}, which is not installed")
    return Path(spec.submodule_search_locations[0]) / relative


def read_series(source: str) -> pd.DataFrame:
    """One OHLCV series as a frame with columns ``COLUMNS`` (dates parsed), checked.

    ``source`` is a built-in name (``BUILTIN``) or a CSV path. Line numbers in errors are the
    file's (the header is line 1).

    Raises:
        ValueError: ``"env.data: prices.csv line 7: Close is NaN"`` — a missing file or column, an
            unparseable date, a NaN or a price ≤ 0, dates that go back or repeat.
    """
    import pandas as pd  # only where series are read: a command that reads none starts faster

    if source in BUILTIN:
        _, _, date_column, date_format, close = BUILTIN[source]
        frame = pd.read_csv(_builtin_path(source))
        frame = frame.rename(columns={frame.columns[date_column] if isinstance(date_column, int) else date_column:
                                      "Date"})
        if close:  # closes only (FRED marks a holiday "."): no opens, so only fills at the close
            frame = frame[frame[close] != "."].reset_index(drop=True)
            frame = frame.assign(**{c: frame[close] for c in ("Open", "High", "Low", "Close")}, Volume=0)
    else:
        if not Path(source).is_file():
            raise ValueError(f"env.data: {source}: no such file, and not a built-in series {sorted(BUILTIN)}")
        frame, date_format = pd.read_csv(source), None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"env.data: {source}: missing column(s) {missing}; needs {list(COLUMNS)}")
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    dates = pd.to_datetime(frame["Date"], format=date_format, errors="coerce")
    for column in COLUMNS:
        values = dates if column == "Date" else pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ((values <= 0) if column in ("Open", "High", "Low", "Close") else False)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raw = frame[column][row]
            problem = (f"is not a date: {raw}" if column == "Date" else "is NaN" if pd.isna(raw)
                       else f"is not a number: {raw}" if pd.isna(values[row]) else f"is not > 0: {raw}")
            raise ValueError(f"env.data: {source} line {row + 2}: {column} {problem}")
    step = dates.diff().dt.total_seconds().to_numpy()[1:]
    if (step <= 0).any():
        row = int(np.flatnonzero(step <= 0)[0]) + 1
        problem = "repeats the previous row's date" if step[row - 1] == 0 else "is before the previous row's date"
        raise ValueError(f"env.data: {source} line {row + 2}: Date {dates[row]} {problem} (dates must increase)")
    return frame.assign(Date=dates)


@dataclass
class Market:
    """The series of a trading env, per asset: log-returns close to close ``log_returns`` ``[asset,
    bar]`` and overnight gaps ``gaps`` (log open − log previous close; 0 for a series without
    opens), both float64, padded with 0, bar 0 without either; bars ``num_bars``; the first
    validation and first test bar ``bounds`` ``[asset, 2]``; bars per year; the dates; whether the
    series has opens of its own."""

    names: list[str]
    log_returns: torch.Tensor
    gaps: torch.Tensor
    num_bars: torch.Tensor
    bounds: torch.Tensor
    bars_per_year: torch.Tensor
    dates: list[np.ndarray]
    has_opens: list[bool]

    def earned(self, asset: torch.Tensor, start: torch.Tensor, horizon: int, gaps: bool = False) -> torch.Tensor:
        """The log-returns a window of ``asset`` whose first decision bar is ``start`` earns, bars
        ``start + 1 … start + horizon``: ``[n, horizon]`` (with ``gaps``, their overnight part)."""
        return (self.gaps if gaps else self.log_returns)[asset[:, None], start[:, None] + 1 + torch.arange(horizon)]

    def part(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The bars of ``split`` (``SPLITS``) per asset, ``[lo, hi)``."""
        edges = torch.cat([torch.zeros_like(self.num_bars)[:, None], self.bounds, self.num_bars[:, None]], 1)
        i = SPLITS.index(split)
        return edges[:, i], edges[:, i + 1]

    def window_starts(self, split: str, lookback: int, horizon: int, history: int = 0) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
        """The first and last decision bar of a window of ``split``, per asset: the window trades bars
        ``d + 1 … d + horizon``, all in that part, and reads bars from ``d − history − lookback + 1``
        (its support window and the rules' history: earlier bars, possibly of an earlier part)."""
        lo, hi = self.part(split)
        return torch.clamp(lo - 1, min=lookback + history), hi - 1 - horizon

    def period(self, asset: int, split: str) -> str:
        """The dates of ``split``'s bars of ``asset`` (``"2015-01-02 … 2018-12-31"``; ``"none"`` if empty)."""
        lo, hi = (int(x[asset]) for x in self.part(split))
        return f"{str(self.dates[asset][lo])[:10]} … {str(self.dates[asset][hi - 1])[:10]}" if hi > lo else "none"


@functools.lru_cache(maxsize=8)
def load_market(data: tuple[str, ...], split_dates: tuple[str, str], lookback: int, horizon: int,
                history: int = 0) -> Market:
    """Read and check ``data`` (see ``read_series``) for windows of ``history`` + ``lookback`` +
    ``horizon`` bars, split by the calendar dates ``split_dates`` (validation start, test start).

    Raises:
        ValueError: a bad file, or a series one of whose parts holds no window.
    """
    import pandas as pd

    frames = [read_series(source) for source in data]
    closes = [f["Close"].to_numpy(dtype=np.float64) for f in frames]
    num_bars = torch.tensor([len(c) for c in closes])
    bounds = torch.tensor([[int(np.searchsorted(f["Date"].to_numpy(), pd.Timestamp(d).to_datetime64()))
                            for d in split_dates] for f in frames])
    log_returns = torch.zeros(len(closes), int(num_bars.max()), dtype=torch.float64)
    gaps = torch.zeros_like(log_returns)
    for i, (frame, c) in enumerate(zip(frames, closes)):
        log_returns[i, 1:len(c)] = torch.from_numpy(np.diff(np.log(c)))
        gaps[i, 1:len(c)] = torch.from_numpy(np.log(frame["Open"].to_numpy(dtype=np.float64)[1:]) - np.log(c[:-1]))
    years = [(f["Date"].iloc[-1] - f["Date"].iloc[0]).total_seconds() / (365.25 * 86400) for f in frames]
    bars_per_year = torch.tensor([(len(c) - 1) / max(y, 1e-9) for c, y in zip(closes, years)], dtype=torch.float64)
    has_opens = [not (source in BUILTIN and BUILTIN[source][4]) for source in data]
    market = Market(list(data), log_returns, gaps, num_bars, bounds, bars_per_year,
                    [f["Date"].to_numpy() for f in frames], has_opens)
    for split in SPLITS:
        first, last = market.window_starts(split, lookback, horizon, history)
        for i in torch.nonzero(last < first).flatten().tolist():
            raise ValueError(f"env.data: {data[i]} ({str(market.dates[i][0])[:10]} … "
                             f"{str(market.dates[i][-1])[:10]}): its {split} part ({market.period(i, split)}) with "
                             f"env.split_dates={list(split_dates)} holds no window of {horizon} bars after "
                             f"{lookback + history} bars of look-back and support; move env.split_dates")
    return market


class TradingEnv(TaskEnv):
    """Batched trading in windows of recorded prices, one window per task.

    A task is ``[asset, d, drift, log_vol]``: the asset's index in ``env.data``, the window's
    first decision bar d, and (for the oracle and the task conditions) the window's realised
    drift as a t-statistic Σr / (σ √horizon) and log σ of its log-returns r. At step t the agent
    sees bar d + t:

    - observation ``[task, episode, lookback + 2]``: the last ``lookback`` log-returns divided by
      their root mean square (scale-free across assets; never a later bar), the current position,
      the fraction of the window left; the oracle appends a one-hot asset and (drift, log_vol),
      which are foresight — an upper bound, not a strategy;
    - action ``[task, episode, 1]``: the target position, clipped to [-1, 1];
    - reward ``[task, episode, 1]``: the log-return of the equity in percent, exactly
      (``log_equity_return``): the position is a fraction of equity held over the next bar, and a
      change of position pays the asset's ``commission`` per unit of equity traded, p_{−1} = 0;
      with ``next_open`` the new position is filled at the next bar's open, the previous one held
      over the night's gap;
    - done after ``horizon`` steps.

    Args:
        market: the series (``load_market``).
        num_tasks, episodes_per_task: the batch ``[task, episode]`` (≥ 1 each).
        horizon: bars per window; lookback: log-returns in the observation.
        commission: per unit traded, a fraction of the equity: one for all assets or ``[asset]``.
        oracle: append the task parameters to the observation.
        next_open: fill each decision at the next bar's open instead of the close.
        dtype: dtype of observations and rewards.

    Raises:
        ValueError: if ``num_tasks`` or ``episodes_per_task`` is below 1.
    """

    task_shape = (4,)

    def __init__(self, market: Market, num_tasks: int, episodes_per_task: int, horizon: int, lookback: int,
                 commission: float | torch.Tensor, oracle: bool = False, dtype: torch.dtype = torch.float32,
                 next_open: bool = False):
        super().__init__(num_tasks, episodes_per_task, oracle)
        self.market, self.horizon, self.lookback, self.next_open = market, horizon, lookback, next_open
        self.commissions = torch.as_tensor(commission, dtype=torch.float64).expand(len(market.names))
        self.dtype_ = dtype
        shape = self.batch_size
        obs_dim = lookback + 2 + (len(market.names) + 2 if oracle else 0)
        self.observation_spec = Composite(observation=Unbounded(shape=(*shape, obs_dim), dtype=dtype), shape=shape)
        self.action_spec = Bounded(-1.0, 1.0, shape=(*shape, 1), dtype=dtype)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=dtype)
        self.t = 0
        self.position = torch.zeros(*shape, dtype=torch.float64)
        self._windows()

    def set_tasks(self, tasks: torch.Tensor) -> None:
        """Set the windows, ``[num_tasks, 4]`` (``sample_tasks``).

        Raises:
            ValueError: if the shape is not ``[num_tasks, 4]``.
        """
        super().set_tasks(tasks)
        self._windows()

    def _windows(self) -> None:
        """Per task: the observed returns at each step ``[task, horizon + 1, lookback]`` and the
        returns earned ``[task, horizon]``."""
        self.seen, self.earned = window_returns(self.market, self.tasks, self.horizon, self.lookback)
        self.asset = self.tasks[:, 0].long()
        self.gaps = (self.market.earned(self.asset, self.tasks[:, 1].long(), self.horizon, gaps=True)
                     if self.next_open else torch.zeros_like(self.earned))
        self.commission = self.commissions[self.asset][:, None]  # [task, 1]

    def _observation(self) -> torch.Tensor:
        seen = self.seen[:, self.t]
        scaled = seen / seen.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)
        parts = [scaled[:, None].expand(*self.batch_size, -1), self.position[..., None],
                 torch.full((*self.batch_size, 1), 1 - self.t / self.horizon, dtype=torch.float64)]
        if self.oracle:
            one_hot = torch.nn.functional.one_hot(self.asset, len(self.market.names)).double()
            parts.append(torch.cat([one_hot, self.tasks[:, 2:]], -1)[:, None].expand(*self.batch_size, -1))
        return torch.cat(parts, -1).to(self.dtype_)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        self.t = 0
        self.position = torch.zeros(*self.batch_size, dtype=torch.float64)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict({"observation": self._observation(), "done": done, "terminated": done.clone()},
                          batch_size=self.batch_size)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.t >= self.horizon:
            raise RuntimeError(f"the window has {self.horizon} bars; reset the env before stepping again")
        position = tensordict["action"][..., 0].double().clamp(-1.0, 1.0)
        pnl = bar_log_return(self.position, position, self.earned[:, self.t, None], self.gaps[:, self.t, None],
                             self.commission)
        self.position, self.t = position, self.t + 1
        done = torch.full((*self.batch_size, 1), self.t == self.horizon, dtype=torch.bool)
        return TensorDict({"observation": self._observation(), "reward": (PERCENT * pnl)[..., None].to(self.dtype_),
                           "done": done, "terminated": done.clone()}, batch_size=self.batch_size)

    def _set_seed(self, seed: int | None) -> None:  # recorded prices: nothing random
        return None


def window_returns(market: Market, tasks: torch.Tensor, horizon: int, lookback: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (``tasks`` ``[task, 4]``): the log-returns seen at each decision ``[task, horizon + 1,
    lookback]`` and the log-returns earned ``[task, horizon]``."""
    asset, start = tasks[:, 0].long(), tasks[:, 1].long()
    steps = start[:, None] + torch.arange(horizon + 1)  # the bar of each decision (and the last close)
    seen = steps[:, :, None] - torch.arange(lookback - 1, -1, -1)
    return market.log_returns[asset[:, None, None], seen], market.earned(asset, start, horizon)


@ENVS.register("trading")
class Trading(TaskFamily):
    """Trading's task family: windows of recorded prices (``load_market``, read once), simulated by
    ``TradingEnv``; each episode is backtested (``episode_statistics``) beside buy-and-hold and
    flat (``references``), and evaluation draws the equity curves and pools the backtests (``reports``)."""

    task_shape = (4,)
    statistics = ("annual_return", "sharpe", "sortino", "max_drawdown", "turnover")
    statistics_name = "backtest"
    benchmark = "buy-and-hold"
    action_size = 1

    def __init__(self, config: TradingConfig, threads: int = 0):
        """Read the series once (``load_market``).

        Raises:
            ValueError: a bad series or split (``load_market``), or ``execution=next_open`` on a
                series without opens of its own.
        """
        super().__init__(config, threads)
        self.market = load_market(tuple(config.data), tuple(config.split_dates), config.lookback, config.horizon,
                                  config.history())
        closes_only = [n for n, has in zip(self.market.names, self.market.has_opens) if not has]
        if config.execution == "next_open" and closes_only:
            raise ValueError(f"env.execution=next_open: {', '.join(closes_only)} has closes only; use "
                             "env.execution=close, or series with opens")
        self.commissions = torch.tensor(config.commissions(), dtype=torch.float64)

    def sample_tasks(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> torch.Tensor:
        """Windows ``[num_tasks, 4]`` that trade bars of ``split``'s part of the calendar. ``"train"``
        and ``"validation"``: an asset uniformly, then a first decision bar uniformly among that
        part's. ``"test"``: the first ``num_tasks`` of ``test_windows`` (no generator), which do not
        overlap.

        Raises:
            ValueError: ``num_tasks`` above the number of test windows.
        """
        if split == "test":
            windows = self.test_windows()
            if num_tasks > windows.shape[0]:
                counts = ", ".join(f"{n} {int((windows[:, 0] == i).sum())}" for i, n in enumerate(self.market.names))
                raise ValueError(f"eval.num_tasks={num_tasks}: the test part (from {self.config.split_dates[1]}) holds "
                                 f"{windows.shape[0]} windows of {self.config.horizon} bars that do not overlap "
                                 f"({counts}); set eval.num_tasks <= {windows.shape[0]}")
            return windows[:num_tasks]
        first, last = self.window_range(split)
        asset = torch.randint(len(self.market.names), (num_tasks,), generator=generator)
        u = torch.rand(num_tasks, generator=generator, dtype=torch.float64)
        return self.windows(asset, first[asset] + (u * (last[asset] - first[asset] + 1)).long())

    def window_range(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The first and last decision bar of ``split``'s windows, per asset (``Market.window_starts``)."""
        c = self.config
        return self.market.window_starts(split, c.lookback, c.horizon, c.history())

    def test_windows(self) -> torch.Tensor:
        """Every test window that does not overlap another of its asset, ``[n, 4]``: per asset from
        the first one of the test part, one every ``horizon`` bars, in calendar order (slot by slot,
        the assets in ``env.data``'s order within a slot)."""
        first, last = self.window_range("test")
        horizon = self.config.horizon
        slots = int(((last - first) // horizon).max()) + 1
        start = first[None, :] + horizon * torch.arange(slots)[:, None]  # [slot, asset]
        asset = torch.arange(len(self.market.names)).expand_as(start)
        keep = start <= last[None, :]
        return self.windows(asset[keep], start[keep])

    def overnight(self, asset: torch.Tensor, start: torch.Tensor) -> torch.Tensor | None:
        """The overnight gaps ``[n, horizon]`` a window's positions earn before each fill when fills are
        at the next open (``env.execution=next_open``); None when they are at the close."""
        if self.config.execution != "next_open":
            return None
        return self.market.earned(asset, start, self.config.horizon, gaps=True)

    def task_groups(self, tasks: torch.Tensor) -> list[str]:
        """The asset of each window."""
        return [self.market.names[i] for i in tasks[:, 0].long().tolist()]

    def task_blocks(self, tasks: torch.Tensor) -> torch.Tensor:
        """The calendar slot of each window: its first decision bar's distance from its asset's first
        test window, in windows (assets on one calendar trade the same dates in a slot, and their
        returns move together)."""
        first, _ = self.window_range("test")
        asset = tasks[:, 0].long()
        return torch.div(tasks[:, 1].long() - first[asset], self.config.horizon, rounding_mode="floor")

    def windows(self, asset: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Tasks ``[n, 4]`` of the windows of ``asset`` whose first decision bar is ``start``: with the
        drift t-statistic and log σ of the log-returns they earn."""
        horizon = self.config.horizon
        r = self.market.earned(asset, start, horizon)
        sigma = r.std(dim=1).clamp_min(1e-12)
        drift = r.sum(dim=1) / (sigma * math.sqrt(horizon))
        return torch.stack([asset.double(), start.double(), drift, sigma.log()], dim=1)

    def support_tasks(self, tasks: torch.Tensor) -> torch.Tensor:
        """Walk-forward (``support=preceding``): the window of ``horizon`` bars that ends where each
        window starts, on the same asset: its last earned return is the close the window's first
        decision sees, so the support episodes read and earn only bars before the traded ones.
        ``support=in_sample``: the windows themselves."""
        if self.config.support == "in_sample":
            return tasks
        return self.windows(tasks[:, 0].long(), tasks[:, 1].long() - self.config.horizon)

    def support_note(self) -> str:
        return "in-sample" if self.config.support == "in_sample" else ""

    def task_conditions(self, tasks: torch.Tensor) -> list[str]:
        """The window's regime: ``"up"`` or ``"down"`` by the sign of its drift."""
        return ["up" if d >= 0 else "down" for d in tasks[:, 2].tolist()]

    def observation_size(self, oracle: bool = False) -> int:
        """``lookback`` scaled returns, the position, the time left; the oracle's one-hot asset, drift, log σ."""
        return self.config.lookback + 2 + (len(self.market.names) + 2 if oracle else 0)

    def env(self, num_tasks, episodes_per_task, oracle=False, generator=None) -> TradingEnv:
        c = self.config
        return TradingEnv(self.market, num_tasks, episodes_per_task, c.horizon, c.lookback, self.commissions, oracle,
                          next_open=c.execution == "next_open")

    def references(self, tasks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rewards ``[task, horizon]`` on the windows ``tasks``, in the env's units and accounting
        (``rule_rewards``), of the strategies a quant compares with, each deciding at every close
        from that close and earlier ones only:

        - ``buy-and-hold``: long from the first bar; ``flat``: no position;
        - ``momentum <L>``: long (short) when the last ``momentum_bars`` log-returns sum above
          (below) zero, time-series momentum (Moskowitz, Ooi & Pedersen, 2012);
        - ``ma <fast>/<slow>``: long while the mean log price of the last ``fast`` closes is above
          that of the last ``slow`` ones, flat otherwise (a moving-average crossover);
        - ``vol-target <t>``: long ``min(1, t / σ)`` with σ the last ``vol_bars`` bars' volatility,
          annualised with the asset's bars per year (a volatility-targeted long).
        """
        c = self.config
        asset, start = tasks[:, 0].long(), tasks[:, 1].long()
        earned = self.market.earned(asset, start, c.horizon)
        past = c.rule_bars()
        bars = start[:, None] + torch.arange(-past + 1, c.horizon)  # every close a rule reads, up to the last decision
        r = self.market.log_returns[asset[:, None], bars]  # [task, past - 1 + horizon]
        log_price = r.cumsum(-1)

        def trailing(x: torch.Tensor, n: int) -> torch.Tensor:
            """Means of the last ``n`` values at each decision, ``[task, horizon]``."""
            return x.unfold(-1, n, 1)[:, -c.horizon:].mean(-1)

        fast, slow = c.ma_bars
        sigma = r.unfold(-1, c.vol_bars, 1)[:, -c.horizon:].std(-1) * self.market.bars_per_year[asset, None].sqrt()
        positions = {
            "buy-and-hold": torch.ones_like(earned),
            "flat": torch.zeros_like(earned),
            f"momentum {c.momentum_bars}": torch.sign(trailing(r, c.momentum_bars)),
            f"ma {fast}/{slow}": (trailing(log_price, fast) > trailing(log_price, slow)).double(),
            f"vol-target {c.vol_target:g}": (c.vol_target / sigma.clamp_min(1e-12)).clamp(max=1.0),
        }
        commission, gaps = self.commissions[asset][:, None], self.overnight(asset, start)
        return {name: TensorDict({"reward": rule_rewards(p, earned, commission, gaps), "action": p[..., None]},
                                 batch_size=p.shape) for name, p in positions.items()}

    def episode_statistics(self, tasks: torch.Tensor, episodes: TensorDictBase) -> dict[str, torch.Tensor]:
        """Backtest statistics of every episode ``[task, episode]`` from its per-bar P&L, computed
        with empyrical: ``annual_return`` and ``max_drawdown`` (fractions), ``sharpe`` and
        ``sortino`` (annualised with the asset's bars per year, risk-free rate 0); and
        ``turnover``, the equity traded per year, Σ|Δp| annualised (p_{−1} = 0: buy-and-hold over
        100 daily bars trades 1 per 100 bars, 2.5 a year)."""
        bars_per_year = self.market.bars_per_year[tasks[:, 0].long()]
        statistics = backtest_statistics(episodes["reward"], bars_per_year)
        position = episodes["action"][..., 0].double().clamp(-1.0, 1.0)  # what the env holds
        traded = torch.diff(position, dim=-1, prepend=torch.zeros_like(position[..., :1])).abs().sum(-1)
        statistics["turnover"] = traded * bars_per_year[:, None] / position.shape[-1]
        return statistics

    def reports(self, evaluation, out_dir: Path) -> tuple[str, list[Path]]:
        """``equity_curves.png`` (the deterministic policies' and the references' cumulative P&L),
        ``pooled_backtest.csv`` (``pooled_backtest``) and ``cost_sensitivity.csv``
        (``cost_sensitivity``), with the text of the two tables."""
        if not evaluation.played:
            return "", []
        rewards = {label: runs["reward"] for label, runs in evaluation.played.items()}
        pooled = self.pooled_backtest(rewards, evaluation.tasks)
        costs = self.cost_sensitivity(evaluation.played, evaluation.tasks)
        pooled.to_csv(out_dir / "pooled_backtest.csv", index=False, float_format="%.4f")
        costs.to_csv(out_dir / "cost_sensitivity.csv", float_format="%.4f")
        text = ("deterministic policies on the test windows chained per asset, first seed (pooled returns):\n"
                + pooled.to_string(index=False, float_format=lambda v: f"{v:.3f}")
                + "\n\nmean % log-return per test window at each commission (bps per unit traded), first seed:\n"
                + costs.to_string(float_format=lambda v: f"{v:.2f}"))
        titles = [f"{self.market.names[int(a)]} from {str(self.market.dates[int(a)][int(d) + 1])[:10]}"
                  for a, d in evaluation.tasks[:, :2].tolist()]
        return text, [plot_equity(rewards, evaluation.tasks, out_dir / "equity_curves.png", titles=titles),
                      out_dir / "pooled_backtest.csv", out_dir / "cost_sensitivity.csv"]

    def cost_sensitivity(self, played: dict, tasks: torch.Tensor):
        """The deterministic positions of each method (first seed; before adaptation and after the
        last step) and of the references re-scored at every commission of ``env.cost_sensitivity_bps``
        (the same positions: a policy that would trade less at a higher cost is not retrained):
        a frame indexed by ``method, k`` with one column per commission in basis points, the mean
        percent log-return per window."""
        import pandas as pd

        c = self.config
        asset, start = tasks[:, 0].long(), tasks[:, 1].long()
        earned = self.market.earned(asset, start, c.horizon)
        gaps = self.overnight(asset, start)
        rows = {}
        for label, runs in played.items():
            for k in sorted({0, runs.shape[0] - 1}):
                positions = runs["action"][k, ..., 0].double().clamp(-1.0, 1.0)
                rows[label, k] = {f"{bps:g} bps": float(rule_rewards(positions, earned, bps / 10_000, gaps).sum(-1).mean())
                                  for bps in c.cost_sensitivity_bps}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["method", "k"])

    def pooled_backtest(self, rewards: dict[str, torch.Tensor], tasks: torch.Tensor):
        """Backtest statistics of pooled returns, not averaged per window: for each method (its first
        seed), before adaptation and after the last step, the per-bar returns of an asset's test
        windows chained in calendar order (they do not overlap: one equity curve over the test
        part) and of every asset together (``all``), scored as ``backtest_statistics`` scores one
        window. ``rewards`` ``{label: [K + 1, task, time]}``. Returns a frame with columns ``method,
        k, asset, bars, return`` (percent log-return over the chained bars) and the statistics."""
        import pandas as pd

        asset = tasks[:, 0].long()
        order = torch.argsort(tasks[:, 1] + tasks[:, 0] * 1e9)  # by asset, then date
        rows = []
        for label, runs in rewards.items():
            for k in sorted({0, runs.shape[0] - 1}):
                for name, chosen in [*((n, asset[order] == i) for i, n in enumerate(self.market.names)), ("all", None)]:
                    picked = order if chosen is None else order[chosen]
                    if picked.numel() == 0:
                        continue
                    series = runs[k, picked].reshape(1, -1)
                    year = self.market.bars_per_year[asset[picked]].mean()  # the same for assets of one frequency
                    stats = backtest_statistics(series, year.reshape(1))
                    rows.append({"method": label, "k": k, "asset": name, "bars": series.shape[1],
                                 "return": float(series.sum()), **{s: float(v[0]) for s, v in stats.items()}})
        return pd.DataFrame(rows)


def plot_equity(rewards: dict[str, torch.Tensor], tasks: torch.Tensor, path: Path, windows: int = 4,
                titles: list[str] | None = None) -> Path:
    """Cumulative percent log-return of each method's deterministic policy, before adaptation and
    after the last step, and of the references, on the first ``windows`` test windows (``titles``:
    what each is, e.g. its asset and first date); ``rewards`` is ``{label: [K + 1, task, time]}``
    (one seed). Returns ``path``."""
    plt = pyplot()
    shown = min(windows, tasks.shape[0])
    fig, axes = plt.subplots(1, shown, figsize=(4.2 * shown, 3.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for j, (label, runs) in enumerate(rewards.items()):
            equity = runs[:, i].double().cumsum(-1)
            if len(equity) == 1:
                ax.plot(equity[0], color=f"C{j}", linestyle=":" if "flat" in label else "--", label=label)
                continue
            ax.plot(equity[0], color=f"C{j}", alpha=0.5, linewidth=0.8, label=f"{label}, k=0")
            ax.plot(equity[-1], color=f"C{j}", label=f"{label}, k={len(equity) - 1}")
        ax.set_title(titles[i] if titles else f"test window {i}", fontsize=9)
        ax.set_xlabel("bar")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("cumulative % log-return")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    fig.suptitle("deterministic policies on held-out windows vs buy-and-hold and flat")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_equity_return(position: torch.Tensor, log_return: torch.Tensor, change: torch.Tensor,
                      commission: float) -> torch.Tensor:
    """The log-return of the equity over one bar, exact: ``log(1 − c|Δp|) + log(1 + p(eʳ − 1))``.

    A fraction ``position`` p of the equity (short below 0) is held over a bar whose price moves by
    ``log_return`` r; reaching it from the previous position costs ``commission`` c per unit of
    equity traded (``change`` Δp), paid at the close as backtesters charge a fill. The position is
    rebalanced to its target at every close; that rebalancing of the drift is not charged. A short
    that loses all the equity in one bar (eʳ ≥ 1 + 1/|p|) is floored at log 1e-12 rather than NaN.
    Shapes broadcast; every value in log-return units (not percent).
    """
    gross = (1 + position * torch.expm1(log_return)).clamp_min(1e-12).log()
    return gross + torch.log1p(-commission * change.abs())


def bar_log_return(previous: torch.Tensor, position: torch.Tensor, log_return: torch.Tensor, gap: torch.Tensor,
                   commission: float | torch.Tensor) -> torch.Tensor:
    """The log-return of the equity over one bar when the position moves from ``previous`` to
    ``position`` at the bar's open: ``previous`` earns the overnight ``gap`` (log open − log
    previous close; 0 for fills at the close), then the fill pays ``commission`` and ``position``
    earns the rest of the bar's ``log_return`` (``log_equity_return`` for each part). Shapes
    broadcast; log-return units."""
    overnight = log_equity_return(previous, gap, torch.zeros_like(gap), 0.0)
    return overnight + log_equity_return(position, log_return - gap, position - previous, commission)


def rule_rewards(positions: torch.Tensor, earned: torch.Tensor, commission: float | torch.Tensor,
                 gaps: torch.Tensor | None = None) -> torch.Tensor:
    """The env's reward (``bar_log_return``, in percent) of a fixed rule's positions ``[task,
    horizon]`` against the log-returns earned ``[task, horizon]``, with ``p_{−1} = 0``; with the
    overnight ``gaps`` of those bars (fills at the next open), the previous position earns the gap."""
    previous = torch.cat([torch.zeros_like(positions[:, :1]), positions[:, :-1]], dim=-1)
    return PERCENT * bar_log_return(previous, positions, earned, torch.zeros_like(earned) if gaps is None else gaps,
                                    commission)


def backtest_statistics(rewards: torch.Tensor, bars_per_year: torch.Tensor) -> dict[str, torch.Tensor]:
    """Backtest statistics of P&L series ``rewards`` ``[task, ..., time]`` (percent log-returns per
    bar), annualised per task with ``bars_per_year`` ``[task]``: ``{name: [task, ...]}``. A ratio
    that is undefined (a series without variance or without a losing bar) is reported as 0."""
    import empyrical  # loads pandas and scipy: only where a backtest is scored
    simple = np.expm1(rewards.double().numpy() / PERCENT)
    lead = simple.shape[:-1]
    out = {name: np.zeros(lead) for name in ("annual_return", "sharpe", "sortino", "max_drawdown")}
    for year in bars_per_year.unique().tolist():  # one call per asset frequency, every series of it at once
        rows = (bars_per_year == year).numpy()
        series = simple[rows].reshape(-1, simple.shape[-1]).T  # [time, series]
        values = {"annual_return": empyrical.annual_return(series, annualization=year),
                  "sharpe": empyrical.sharpe_ratio(series, annualization=year),
                  "sortino": empyrical.sortino_ratio(series, annualization=year),
                  "max_drawdown": empyrical.max_drawdown(series)}
        for name, value in values.items():
            out[name][rows] = np.asarray(value, dtype=np.float64).reshape(-1, *lead[1:])
    return {name: torch.from_numpy(np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)) for name, v in out.items()}
