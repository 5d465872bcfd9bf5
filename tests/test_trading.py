"""The trading task family: its equity against backtesting.py, no look-ahead, out-of-sample windows,
bad data rejected before any work, backtest statistics against empyrical, and a CLI run that trains
a PPO agent and backtests it against buy-and-hold."""

import dataclasses
import json
import math
import warnings

import empyrical
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from backtesting import Backtest, Strategy
from backtesting.lib import FractionalBacktest

from maml_rl.config import ConfigError, settings, validate
from maml_rl.envs.base import build_family
from maml_rl.envs.trading import PERCENT, Trading, TradingEnv, backtest_statistics, load_market, read_series
from maml_rl.run.build import build_inner_loop, build_sampler, family_of, initial_policy
from maml_rl.run.evaluation import evaluate, held_out_tasks, random_candidate, reference_runs

from .conftest import TINY, composed
from .test_cli import run_cli, runs_in

GOOG_SPLIT = ("2010-01-01", "2011-06-01")  # GOOG runs 2004-08-19 … 2013-03-01
SMALL = ["env=trading", "env.horizon=20", "meta_batch_size=3", "episodes_per_task=2", "num_iterations=2",
         "checkpoint_every=1", "policy.hidden_sizes=[8,8]", "threads=1"]


def play(env: TradingEnv, positions: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Step ``env`` (one task, one episode) through ``positions`` ``[time]``: rewards ``[time]`` and observations."""
    td, rewards, observations = env.reset(), [], []
    for p in positions.tolist():
        observations.append(td["observation"][0, 0].clone())
        td["action"] = torch.tensor([[[p]]])
        td = env.step(td)["next"]
        rewards.append(td["reward"][0, 0, 0].double())
    return torch.stack(rewards), observations


@pytest.mark.parametrize("execution", ["close", "next_open"])
def test_equity_matches_backtesting_py_for_the_same_positions(execution):
    """Long/flat positions on GOOG through backtesting.py (orders filled at the bar's close, or at the
    next bar's open with ``trade_on_close=False``; fractional units, commission 0.1 % of each fill):
    the env's equity exp(Σ reward / 100) is the backtester's to 1e-5. What is left is the
    backtester's convention for a buy of all the cash, which pays the commission on top of the
    fill (equity × 1/(1 + c)) where the env charges c of the equity (× (1 − c)): c² = 1e-6 per buy."""
    horizon, lookback, start, commission = 60, 5, 300, 0.001
    positions = torch.tensor([float((t // 7) % 2 == 0) for t in range(horizon)])  # 7 bars long, 7 flat, ...
    planned = np.zeros(2200)
    planned[start:start + horizon] = positions.numpy()

    class Follow(Strategy):
        def init(self):
            pass

        def next(self):
            wanted = planned[len(self.data) - 1]
            if wanted > 0 and not self.position:
                self.buy()
            elif wanted == 0 and self.position:
                self.position.close()

    prices = read_series("GOOG").set_index("Date")[["Open", "High", "Low", "Close", "Volume"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backtesting.py's notes on fractional units
        stats = FractionalBacktest(prices, Follow, cash=1e6, commission=commission,
                                   trade_on_close=execution == "close", fractional_unit=1e-8).run()
    assert stats["# Trades"] == 5
    equity = stats._equity_curve["Equity"].to_numpy()
    reference = equity[start + 1:start + horizon + 1] / equity[start]
    env = TradingEnv(load_market(("GOOG",), GOOG_SPLIT, lookback, horizon), 1, 1, horizon, lookback, commission,
                     next_open=execution == "next_open")
    env.set_tasks(torch.tensor([[0.0, start, 0.0, 0.0]], dtype=torch.float64))
    rewards, _ = play(env, positions)
    ours = torch.exp(rewards.cumsum(0) / PERCENT).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-5)
    assert abs(ours[-1] - 1) > 0.05  # the window moved: the check compares more than two flat lines
    if execution == "next_open":  # and the open is not the close: the two fills differ
        at_close = TradingEnv(env.market, 1, 1, horizon, lookback, commission)
        at_close.set_tasks(env.tasks)
        assert np.abs(torch.exp(play(at_close, positions)[0].cumsum(0) / PERCENT).numpy() / reference - 1).max() > 1e-3


def test_commissions_are_per_series_in_basis_points():
    """``env.commission_bps=[0, 100]``: a position opened on the second series pays 1 %, on the first
    nothing; one value applies to every series; a list of another length is refused."""
    family = build_family(settings(composed("env=trading", "env.data=[SP500,WTI]", "env.commission_bps=[0,100]"), "env"))
    tasks = family.sample_tasks(2, torch.Generator().manual_seed(0))
    tasks[:, 0] = torch.tensor([0.0, 1.0])
    hold = family.references(tasks)["buy-and-hold"]["reward"]
    earned = family.market.earned(tasks[:, 0].long(), tasks[:, 1].long(), family.config.horizon)
    torch.testing.assert_close(hold[:, 0], PERCENT * (earned[:, 0] + torch.tensor([0.0, math.log1p(-0.01)],
                                                                                  dtype=torch.float64)))
    assert family_of(composed("env=trading", "env.commission_bps=[2]")).commissions.tolist() == [2e-4] * 3
    with pytest.raises(ConfigError, match=r"env.commission_bps=\[1.0, 2.0\] has 2 values for 3 series"):
        validate(composed("env=trading", "env.commission_bps=[1,2]"))


def test_turnover_is_the_equity_traded_per_year():
    """Buy-and-hold trades once per window (from flat): bars per year / horizon; flat trades nothing;
    the 50-bar momentum rule at least as much as buy-and-hold."""
    family = family_of(composed("env=trading"))
    tasks = family.test_windows()[:6]
    scored = reference_runs(family, tasks)
    year = family.market.bars_per_year[tasks[:, 0].long()]
    torch.testing.assert_close(scored["buy-and-hold"][0]["turnover"][0], year / family.config.horizon)
    assert scored["flat"][0]["turnover"].abs().max() == 0
    assert (scored["momentum 50"][0]["turnover"] >= scored["buy-and-hold"][0]["turnover"] - 1e-9).all()


def test_wti_is_built_in_with_closes_only_and_fills_only_at_the_close():
    frame = read_series("WTI")
    assert str(frame["Date"].iloc[0].date()) == "1986-01-02" and len(frame) == 8611 - 290  # FRED's "." holidays out
    assert (frame["Open"] == frame["Close"]).all()
    with pytest.raises(ConfigError, match="env.execution=next_open: WTI has closes only"):
        validate(composed("env=trading", "env.execution=next_open"))
    validate(composed("env=trading", "env.execution=next_open", "env.data=[SP500,NASDAQ]"))


@pytest.mark.parametrize("path", ["short", "long-short", "fractional"])
def test_equity_matches_a_portfolio_rebalanced_at_every_close(path):
    """Shorts and fractional positions against a portfolio written in prices, not log-returns: at
    each close the equity pays the commission on the change of position, then holds p × equity in
    the asset over the next bar (simple returns). The env's equity equals it to 1e-12."""
    horizon, lookback, start, commission = 80, 5, 300, 0.001
    t = np.arange(horizon)
    positions = {"short": -np.ones(horizon), "long-short": np.where((t // 9) % 2 == 0, 1.0, -1.0),
                 "fractional": 0.9 * np.sin(t / 6)}[path]
    close = read_series("GOOG")["Close"].to_numpy()
    equity, previous, reference = 1.0, 0.0, []
    for i, p in enumerate(positions):
        equity *= 1 - commission * abs(p - previous)
        equity *= 1 + p * (close[start + i + 1] / close[start + i] - 1)
        previous = p
        reference.append(equity)
    env = TradingEnv(load_market(("GOOG",), GOOG_SPLIT, lookback, horizon), 1, 1, horizon, lookback, commission)
    env.set_tasks(torch.tensor([[0.0, start, 0.0, 0.0]], dtype=torch.float64))
    rewards, _ = play(env, torch.from_numpy(positions))
    ours = torch.exp(rewards.cumsum(0) / PERCENT).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-6)  # the env's rewards are float32
    first_order = np.exp(np.cumsum(positions * np.diff(np.log(close[start:start + horizon + 1]))))
    assert np.abs(first_order / reference - 1).max() > 1e-3  # p · r, the earlier reward, fails this test


@pytest.mark.parametrize("path", ["short", "long-short", "fractional"])
def test_shorts_and_fractions_match_backtesting_py_rebalancing_at_every_close(path):
    """The same paths through backtesting.py, whose strategy trades at every close the units that
    bring its position to p × equity (integer units of a 1e10 account: rounding below 1e-7): the
    env's equity is the backtester's to 1e-6. Without commission: the backtester would also charge
    the units traded to rebalance the drift, which the env's position, a fraction of the equity,
    does not trade (the commission is checked on long/flat paths above, and on these paths
    against the price portfolio)."""
    horizon, lookback, start = 80, 5, 300
    t = np.arange(horizon)
    positions = {"short": -np.ones(horizon), "long-short": np.where((t // 9) % 2 == 0, 1.0, -1.0),
                 "fractional": 0.9 * np.sin(t / 6)}[path]
    planned = np.full(2200, np.nan)
    planned[start:start + horizon] = positions

    class Rebalance(Strategy):
        def init(self):
            pass

        def next(self):
            p = planned[len(self.data) - 1]
            target = 0 if np.isnan(p) else round(p * self.equity / self.data.Close[-1])
            if target > self.position.size:
                self.buy(size=target - self.position.size)
            elif target < self.position.size:
                self.sell(size=self.position.size - target)

    prices = read_series("GOOG").set_index("Date")[["Open", "High", "Low", "Close", "Volume"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backtesting.py's notes on the run
        stats = Backtest(prices, Rebalance, cash=1e10, commission=0.0, trade_on_close=True, margin=0.5).run()
    equity = stats._equity_curve["Equity"].to_numpy()
    reference = equity[start + 1:start + horizon + 1] / equity[start]
    env = TradingEnv(load_market(("GOOG",), GOOG_SPLIT, lookback, horizon), 1, 1, horizon, lookback, 0.0)
    env.set_tasks(torch.tensor([[0.0, start, 0.0, 0.0]], dtype=torch.float64))
    ours = torch.exp(play(env, torch.from_numpy(positions))[0].cumsum(0) / PERCENT).numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    first_order = np.exp(np.cumsum(positions * np.diff(np.log(prices["Close"].to_numpy()[start:start + horizon + 1]))))
    assert np.abs(first_order / reference - 1).max() > 1e-3  # p · r, the earlier reward, fails this test


def test_observations_never_see_a_later_bar(tmp_path):
    """Two files equal up to bar t0 and different after it give the same observations up to t0."""
    frame = read_series("GOOG").iloc[:600]
    changed = frame.copy()
    t0 = 330
    rng = np.random.default_rng(0)
    changed.loc[t0 + 1:, ["Open", "High", "Low", "Close"]] *= rng.uniform(0.5, 1.5, (len(frame) - t0 - 1, 1))
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for f, path in zip((frame, changed), paths):
        f.to_csv(path, index=False)
    horizon, lookback, start = 40, 10, 310
    observed = []
    for path in paths:
        env = TradingEnv(load_market((str(path),), ("2006-01-01", "2006-06-01"), lookback, horizon), 1, 1, horizon, lookback, 0.001)
        env.set_tasks(torch.tensor([[0.0, start, 0.0, 0.0]], dtype=torch.float64))
        observed.append(play(env, torch.linspace(-1, 1, horizon))[1])
    seen = t0 - start  # the decisions at bars start .. t0
    for t in range(seen + 1):
        torch.testing.assert_close(observed[0][t], observed[1][t], rtol=0, atol=0)
    assert not torch.equal(observed[0][seen + 1], observed[1][seen + 1])  # the change shows from the next bar


def test_every_window_trades_bars_of_its_own_calendar_part():
    """One calendar split for every series: a training window trades and reads only bars before the
    validation date, a validation window trades only bars between the two dates, a test window only
    bars from the test date on (its support window and look-back may read the past); sampled
    windows reach both ends of their part."""
    horizon, lookback = 100, 10
    family = build_family(settings(composed("env=trading", f"env.horizon={horizon}", f"env.lookback={lookback}"), "env"))
    market, g = family.market, torch.Generator().manual_seed(0)
    for asset in range(len(market.names)):  # the same dates cut every series
        for j, date in enumerate(family.config.split_dates):
            bar = int(market.bounds[asset, j])
            assert str(market.dates[asset][bar])[:10] >= date > str(market.dates[asset][bar - 1])[:10]
    for split in ("train", "validation", "test"):
        tasks = family.sample_tasks(4000, g, split=split) if split != "test" else family.test_windows()
        asset, start = tasks[:, 0].long(), tasks[:, 1].long()
        support = family.support_tasks(tasks)  # walk-forward: the window before, on the same asset
        assert torch.equal(support[:, 0], tasks[:, 0]) and torch.equal(support[:, 1], tasks[:, 1] - horizon)
        lo, hi = market.part(split)
        assert (support[:, 1].long() - lookback >= 0).all()  # every close the two read exists
        assert (start + 1 >= lo[asset]).all() and (start + horizon < hi[asset]).all()  # every bar traded
        assert set(asset.tolist()) == {0, 1, 2}
        if split == "train":
            assert (start + horizon < market.bounds[asset, 0]).all()
        first, last = family.window_range(split)  # the part's windows reach both of its ends
        assert torch.equal(last + horizon, hi - 1)
        assert torch.equal(first + 1, lo) if split != "train" else (first == lookback + family.config.history()).all()
        spread = (start - first[asset]) / (last - first)[asset]
        assert spread.min() >= 0 and spread.max() <= 1
        assert split == "test" or (spread.min() < 0.01 and spread.max() > 0.99)


def test_test_windows_do_not_overlap_and_are_all_counted():
    """Evaluation scores a deterministic set of test windows: per asset one every horizon bars from
    the first one of the test part, never overlapping, in calendar slots that make the blocks of
    the intervals; asking for more than there are is refused with the count."""
    cfg = composed("env=trading", "eval.num_tasks=30")
    family = family_of(cfg)
    tasks = held_out_tasks(cfg, family)
    assert torch.equal(tasks, held_out_tasks(composed("env=trading", "eval.num_tasks=30", "eval.seed=5"), family))
    first, last = family.window_range("test")
    for asset in range(3):
        start = tasks[tasks[:, 0] == asset, 1].long()
        assert start.tolist() == list(range(int(first[asset]), int(last[asset]) + 1, cfg.env.horizon))
        assert int(last[asset]) - int(start[-1]) < cfg.env.horizon  # no room for another
    assert family.task_blocks(tasks).tolist() == [slot for slot in range(10) for _ in range(3)]
    assert family.task_groups(tasks)[:3] == ["SP500", "NASDAQ", "WTI"]
    with pytest.raises(ValueError, match=r"eval.num_tasks=31: .* holds 30 windows of 100 bars that do not overlap "
                                         r"\(SP500 10, NASDAQ 10, WTI 10\); set eval.num_tasks <= 30"):
        held_out_tasks(composed("env=trading", "eval.num_tasks=31"), family)


def test_asking_for_more_test_windows_than_there_are_is_refused_before_any_work(tmp_path):
    proc = run_cli(tmp_path, "env=trading", "mode=evaluate", "eval.checkpoints=[nowhere]", "eval.num_tasks=40")
    assert proc.returncode == 2
    assert "holds 30 windows of 100 bars that do not overlap" in proc.stderr and "set eval.num_tasks <= 30" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()


def test_a_position_beyond_one_is_clipped_and_charged_as_one():
    market = load_market(("GOOG",), GOOG_SPLIT, 5, 10)
    env = TradingEnv(market, 1, 1, 10, 5, 0.001)
    env.set_tasks(torch.tensor([[0.0, 300, 0.0, 0.0]], dtype=torch.float64))
    rewards, observations = play(env, torch.tensor([3.0, -2.5] + [0.0] * 8))
    r = market.log_returns[0, 301:303]
    expected = PERCENT * torch.stack([r[0] + math.log1p(-0.001), torch.log(2 - r[1].exp()) + math.log1p(-0.002)])
    torch.testing.assert_close(rewards[:2], expected, rtol=1e-6, atol=1e-6)
    assert observations[1][5].item() == 1.0 and observations[2][5].item() == -1.0  # the position seen next


def test_the_oracle_sees_the_asset_and_the_windows_drift():
    family = build_family(settings(composed("env=trading", "env.data=[SP500,WTI]"), "env"))
    env = family.env(3, 2, oracle=True)
    assert family.observation_size(oracle=True) == 10 + 2 + 2 + 2
    tasks = family.sample_tasks(3, torch.Generator().manual_seed(1))
    env.set_tasks(tasks)
    obs = env.reset()["observation"]
    assert obs.shape == (3, 2, 10 + 2 + 2 + 2)
    torch.testing.assert_close(obs[:, 0, 12:14], torch.nn.functional.one_hot(tasks[:, 0].long(), 2).float())
    torch.testing.assert_close(obs[:, 0, 14:], tasks[:, 2:].float())
    hold = family.references(tasks)["buy-and-hold"]["reward"].sum(1) / PERCENT - math.log1p(-0.0005)  # the drift
    torch.testing.assert_close(hold, tasks[:, 2] * tasks[:, 3].exp() * 10)


def test_backtest_statistics_are_empyricals_per_series_and_frequency():
    """Series of two assets with different bars per year, scored at once, equal empyrical on each alone."""
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 2, 50, generator=g, dtype=torch.float64) + 0.05
    bars_per_year = torch.tensor([252.0, 6000.0, 252.0], dtype=torch.float64)
    stats = backtest_statistics(rewards, bars_per_year)
    for task in range(3):
        for episode in range(2):
            simple = np.expm1(rewards[task, episode].numpy() / PERCENT)
            year = bars_per_year[task].item()
            assert stats["sharpe"][task, episode].item() == pytest.approx(empyrical.sharpe_ratio(simple, annualization=year))
            assert stats["sortino"][task, episode].item() == pytest.approx(empyrical.sortino_ratio(simple, annualization=year))
            assert stats["annual_return"][task, episode].item() == pytest.approx(
                empyrical.annual_return(simple, annualization=year))
            assert stats["max_drawdown"][task, episode].item() == pytest.approx(empyrical.max_drawdown(simple))


def _write(tmp_path, name: str, frame: pd.DataFrame) -> str:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _bad_files(tmp_path) -> dict[str, tuple[str, str]]:
    good = read_series("GOOG").iloc[:400].assign(Date=lambda f: f["Date"].dt.strftime("%Y-%m-%d"))
    nan = good.copy()
    nan.loc[7, "Close"] = np.nan
    unsorted = good.copy()
    unsorted.loc[[20, 21], "Date"] = unsorted.loc[[21, 20], "Date"].to_numpy()
    duplicate = good.copy()
    duplicate.loc[31, "Date"] = duplicate.loc[30, "Date"]
    negative = good.copy()
    negative.loc[12, "Open"] = -1.0
    return {
        "missing column": (_write(tmp_path, "no_close.csv", good.drop(columns="Close")), "missing column(s) ['Close']"),
        "NaN": (_write(tmp_path, "nan.csv", nan), "line 9: Close is NaN"),
        "unsorted": (_write(tmp_path, "unsorted.csv", unsorted), "line 23: Date"),
        "duplicate": (_write(tmp_path, "duplicate.csv", duplicate), "line 33: Date"),
        "price": (_write(tmp_path, "negative.csv", negative), "line 14: Open is not > 0: -1.0"),
        "short": (_write(tmp_path, "short.csv", good.iloc[:150]), "its validation part (none) with env.split_dates=['2005-06-01', '2005-09-01'] holds no window"),
    }


@pytest.mark.parametrize("problem", ["missing column", "NaN", "unsorted", "duplicate", "price", "short"])
def test_a_bad_data_file_is_named_with_its_line_and_problem(tmp_path, problem):
    path, expected = _bad_files(tmp_path)[problem]
    with pytest.raises(ValueError) as err:
        load_market((path,), ("2005-06-01", "2005-09-01"), 10, 100)
    message = str(err.value)
    assert message.startswith(f"env.data: {path}") and expected in message and "\n" not in message
    if problem == "unsorted":
        assert "before the previous row's date" in message
    if problem == "duplicate":
        assert "repeats the previous row's date" in message


def test_the_cli_rejects_a_bad_file_before_any_work(tmp_path):
    path, _ = _bad_files(tmp_path)["NaN"]
    proc = run_cli(tmp_path, "env=trading", f"env.data=[GOOGL,{path}]")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"maml_rl: invalid config: env.data: {path} line 9: Close is NaN"
    assert not (tmp_path / "mlflow.db").exists() and not list(tmp_path.rglob("*.pt"))
    assert not list(tmp_path.rglob("maml_rl.log"))  # the launch dir Hydra made is gone


@pytest.fixture(scope="module")
def trading_runs(tmp_path_factory):
    """A PPO agent (pretrained: no inner loop) and MAML trained briefly, then backtested together."""
    cwd = tmp_path_factory.mktemp("trading")
    proc = run_cli(cwd, "--multirun", *SMALL, "algorithm=ppo", "baseline=pretrained,maml", "hydra.sweep.dir=sweep")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(cwd, *SMALL, "mode=evaluate", f"eval.sweep_dir={cwd / 'sweep'}",
                   "eval.num_tasks=4", "eval.num_steps=1", "eval.episodes_per_task=2", "hydra.run.dir=evaluation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_training_tracks_backtest_metrics(trading_runs):
    cwd, _ = trading_runs
    (run,) = [r for r in runs_in(cwd / "mlflow.db") if r.data.tags.get("baseline") == "pretrained"
              and r.data.tags.get("mode") == "train"]
    for name in Trading.statistics:
        assert np.isfinite(run.data.metrics[f"train/backtest/{name}_post"])
    assert run.data.tags["algorithm"] == "ppo"


def test_the_backtest_compares_methods_with_buy_and_hold_out_of_sample(trading_runs):
    cwd, proc = trading_runs
    results = json.loads((cwd / "evaluation" / "results.json").read_text())
    assert set(results) == {"maml", "pretrained", "random", "buy-and-hold", "flat", "momentum 50", "ma 20/100",
                            "vol-target 0.1"}
    for method in ("maml", "pretrained", "random"):
        assert set(results[method]) == {"0", "1"}
        for row in results[method].values():
            assert set(row["backtest"]) == {"return", *Trading.statistics}
    assert results["flat"]["0"]["backtest"]["return"]["mean"] == 0.0
    assert results["buy-and-hold"]["0"]["backtest"]["max_drawdown"]["mean"] < 0  # prices fell somewhere
    assert "sharpe" in proc.stdout and "buy-and-hold" in proc.stdout
    (evaluation,) = [r for r in runs_in(cwd / "mlflow.db") if r.data.tags.get("mode") == "evaluate"]
    assert "backtest/sharpe_maml" in evaluation.data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").list_artifacts(evaluation.info.run_id)}
    assert {"equity_curves.png", "adaptation_curve.png", "results.csv"} <= artifacts
    header = (cwd / "evaluation" / "results.csv").read_text().splitlines()[0]
    assert "backtest_sharpe" in header and "backtest_max_drawdown_ci95" in header and "benchmark_ci95" in header


def test_the_evaluation_reports_per_asset_counts_its_blocks_and_pools_the_chained_windows(trading_runs):
    """Four test windows: three assets on the first dates, one on the next (two independent blocks),
    said with the tables; per-asset rows; the chained windows' pooled backtest per asset and for all."""
    cwd, proc = trading_runs
    results = json.loads((cwd / "evaluation" / "results.json").read_text())
    assert results["maml"]["0"]["n_tasks"] == 4 and results["maml"]["0"]["n_blocks"] == 2
    assert "4 test tasks in 2 independent blocks (tasks of one block move together): intervals resample blocks" in proc.stdout
    groups = pd.read_csv(cwd / "evaluation" / "results_by_group.csv")
    assert set(groups["group"]) == {"SP500", "NASDAQ", "WTI"}
    assert groups.loc[groups["group"] == "SP500", "n_tasks"].eq(2).all()  # slots 0 and 1 of the first asset
    pooled = pd.read_csv(cwd / "evaluation" / "pooled_backtest.csv")
    hold = pooled[(pooled["method"] == "buy-and-hold") & (pooled["asset"] == "all")].iloc[0]
    assert hold["bars"] == 4 * 20 and hold["return"] == pytest.approx(results["buy-and-hold"]["0"]["mean"] * 4, abs=1e-3)
    assert {"annual_return", "sharpe", "sortino", "max_drawdown"} <= set(pooled.columns)
    assert "pooled returns" in proc.stdout and "SP500 (2 tasks)" in proc.stdout
    costs = pd.read_csv(cwd / "evaluation" / "cost_sensitivity.csv").set_index(["method", "k"])
    assert list(costs.columns) == ["0 bps", "2 bps", "5 bps", "10 bps", "20 bps"]
    hold = costs.loc[("buy-and-hold", 0)]  # one fill of 1 per window, at 5 bps its evaluated return
    assert hold["5 bps"] == pytest.approx(results["buy-and-hold"]["0"]["mean"], abs=1e-3)
    assert hold["0 bps"] - hold["20 bps"] == pytest.approx(-PERCENT * math.log1p(-0.002), abs=1e-3)
    assert (costs["0 bps"] >= costs["20 bps"] - 1e-9).all()  # a cost never pays


def test_every_method_is_compared_with_buy_and_hold_on_the_same_windows(trading_runs):
    """Each policy's return minus buy-and-hold's, window by window: its mean is the difference of the
    two means (the same windows), and its interval is that of the differences, not of either method."""
    cwd, proc = trading_runs
    results = json.loads((cwd / "evaluation" / "results.json").read_text())
    hold = results["buy-and-hold"]["0"]
    for method in ("maml", "pretrained", "random"):
        for row in results[method].values():
            paired = row["paired_benchmark"]
            assert paired["reference"] == "buy-and-hold"
            assert paired["mean"] == pytest.approx(row["mean"] - hold["mean"], abs=1e-9)
    assert "paired_benchmark" not in hold and "each method minus buy-and-hold on the same tasks (paired)" in proc.stdout


def test_the_trading_preset_trains_three_ppo_agents_and_backtests_them():
    cfg = composed("experiment=trading", hydra=True)
    assert (cfg.env.name, cfg.algorithm.name) == ("trading", "ppo")
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params.baseline == "maml,pretrained,oracle"
    assert cfg.hydra.callbacks.evaluate_sweep._target_.endswith("EvaluateSweep") and cfg.eval.lr_grid


@pytest.mark.parametrize("support,moves", [("preceding", False), ("in_sample", True)])
def test_walk_forward_adaptation_never_reads_the_bars_it_trades(support, moves):
    """Change every bar the test windows trade: the parameters adapted walk-forward must not move
    (they read only earlier bars); adapted in-sample, they must."""
    cfg = composed(*TINY, "env=trading", f"env.support={support}")
    family = family_of(cfg)
    tasks = family.sample_tasks(3, torch.Generator().manual_seed(0), split="test")
    policy = initial_policy(cfg, family)

    def adapted(market):
        family.market = market
        generator = torch.Generator().manual_seed(1)
        sampler = build_sampler(cfg, family.make_env(3, 2, generator=generator), policy, generator)
        batch = build_inner_loop(cfg, policy).meta_batch(sampler, policy.params(), tasks, differentiable=False,
                                                         support_tasks=family.support_tasks(tasks))
        return batch.adaptation.adapted

    before = adapted(family.market)
    changed = dataclasses.replace(family.market, log_returns=family.market.log_returns.clone())
    for asset, start in tasks[:, :2].long().tolist():
        changed.log_returns[asset, start + 1:start + 1 + cfg.env.horizon] *= -3  # every return the windows earn
    after = adapted(changed)
    assert all(torch.equal(before[name], after[name]) for name in before) is not moves


def test_in_sample_rows_are_labelled_in_sample(tmp_path):
    cfg = composed(*TINY, "env=trading", "env.support=in_sample", "mode=evaluate", "eval.num_tasks=3",
                   "eval.num_steps=1", "eval.episodes_per_task=2", "eval.checkpoints=[]")
    results = evaluate(cfg, [random_candidate(cfg)], tmp_path).results
    assert list(results)[:3] == ["random (in-sample)", "buy-and-hold", "flat"]  # the references never adapt


def test_the_rule_references_match_the_same_rules_written_with_pandas():
    """Momentum, moving-average crossover and volatility targeting on GOOG, recomputed from the closes
    with pandas rolling windows: the same positions at every close, hence the same rewards."""
    cfg = composed("env=trading", "env.data=[GOOG]", f"env.split_dates=[{GOOG_SPLIT[0]},{GOOG_SPLIT[1]}]")
    family = family_of(cfg)
    tasks = family.sample_tasks(3, torch.Generator().manual_seed(4), split="test")
    close = read_series("GOOG")["Close"]
    log_close, c = np.log(close), cfg.env.commission_bps[0] / 10_000
    bars_per_year = family.market.bars_per_year[0].item()
    rules = {"momentum 50": np.sign(log_close.diff(50)),
             "ma 20/100": (log_close.rolling(20).mean() > log_close.rolling(100).mean()).astype(float),
             "vol-target 0.1": (0.1 / (log_close.diff().rolling(20).std() * np.sqrt(bars_per_year))).clip(upper=1.0)}
    references = family.references(tasks)
    for name, position in rules.items():
        for i, start in enumerate(tasks[:, 1].long().tolist()):
            p = position.to_numpy()[start:start + cfg.env.horizon]  # decided at each close of the window
            earned = log_close.diff().to_numpy()[start + 1:start + 1 + cfg.env.horizon]
            expected = PERCENT * (np.log(1 + p * np.expm1(earned)) + np.log1p(-c * np.abs(np.diff(p, prepend=0.0))))
            np.testing.assert_allclose(references[name]["reward"][i].numpy(), expected, rtol=1e-9, atol=1e-9,
                                       err_msg=name)


def test_the_long_daily_series_of_arch_are_built_in():
    """S&P 500 and NASDAQ, daily 1999–2018 (through 2000–02 and 2008), from the arch package."""
    for name in ("SP500", "NASDAQ"):
        frame = read_series(name)
        assert len(frame) == 5031 and str(frame["Date"].iloc[0].date()) == "1999-01-04"
        assert str(frame["Date"].iloc[-1].date()) == "2018-12-31"
    market = load_market(("SP500", "NASDAQ"), ("2012-01-01", "2015-01-01"), 10, 100)
    assert 250 < float(market.bars_per_year[0]) < 253  # trading days a year
