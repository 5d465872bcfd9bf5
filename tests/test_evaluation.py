"""Baselines (pretrained, oracle, random) and mode=evaluate: protocol, outputs, bad input."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from maml_rl.core.checkpoint import load_checkpoint, save_checkpoint
from maml_rl.envs.navigation import Navigation
from maml_rl.envs.settings import NavigationConfig
from maml_rl.run.build import build_trainer
from maml_rl.run.evaluation import (
    adaptation_curve,
    evaluate,
    evaluation_generator,
    load_candidate,
    load_candidates,
    random_candidate,
    validation_generator,
)
from maml_rl.run.report import (
    ci95,
    curves_figure,
    format_counts,
    format_paired,
    format_statistics,
    summarize,
    summarize_groups,
)

from .conftest import FIG4_EVAL, TINY, composed
from .test_cli import run_cli, runs_in


def test_pretrained_training_never_runs_the_inner_loop(tmp_path):
    trainer = build_trainer(composed(*TINY, "baseline=pretrained"), tmp_path)
    tasks = trainer.family.sample_tasks(2, trainer.generator)
    batch = trainer.inner_loop.meta_batch(trainer.sampler, trainer.policy.params(), tasks)
    assert batch.supports == [] and batch.adaptation.grads == [] and len(batch.adaptation.params) == 1
    assert batch.timings["time_inner"] == 0.0
    metrics = trainer.meta_step()
    assert metrics["pre_adaptation_return"] == metrics["post_adaptation_return"]


def test_oracle_observations_carry_the_task_parameters(tmp_path):
    trainer = build_trainer(composed(*TINY, "baseline=oracle"), tmp_path)
    assert trainer.policy.obs_dim == 4 and trainer.inner_loop.num_steps == 0
    goals = trainer.family.sample_tasks(2, trainer.generator)
    query = trainer.inner_loop.meta_batch(trainer.sampler, trainer.policy.params(), goals).query
    assert torch.equal(query["observation"][..., 2:], goals.float()[:, None, None, :].expand_as(query["observation"][..., 2:]))


def test_random_baseline_is_reproducible_from_its_seed(tmp_path):
    cfg = composed(*TINY, "baseline=random", "seed=5")
    build_trainer(cfg, tmp_path).meta_train()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 0 and state["baseline"] == "random"
    again = random_candidate(cfg).policy.state_dict()
    other = random_candidate(composed(*TINY, "seed=6")).policy.state_dict()
    assert all(torch.equal(state["policy"][k], v) for k, v in again.items())
    assert not all(torch.equal(state["policy"][k], v) for k, v in other.items())


def test_a_checkpoint_is_evaluated_in_the_action_space_it_was_trained_in(tmp_path):
    raw = composed(*TINY, "env.normalize_actions=false")
    build_trainer(raw, tmp_path).meta_train()
    cfg = composed(*TINY)  # the evaluation config normalises actions
    candidate = load_candidate(str(tmp_path), cfg, "")
    assert not candidate.normalize_actions
    tasks = Navigation(NavigationConfig()).sample_tasks(3, evaluation_generator(0))
    curve = adaptation_curve(candidate, cfg, tasks, [0.1], evaluation_generator(1)).returns
    assert torch.equal(curve, adaptation_curve(candidate, raw, tasks, [0.1], evaluation_generator(1)).returns)
    normalised = dataclasses.replace(candidate, normalize_actions=True)
    assert not torch.equal(curve, adaptation_curve(normalised, cfg, tasks, [0.1], evaluation_generator(1)).returns)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    del state["config"]["env"]["normalize_actions"]  # as written before these keys existed
    del state["config"]["inner"]["estimator"]
    old = save_checkpoint(tmp_path / "old" / "checkpoint.pt", state)
    assert not load_candidate(str(old), cfg, "").normalize_actions
    assert load_checkpoint(old)["config"]["inner"]["estimator"] == "maml"  # resumes with Finn's form


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_evaluation_tasks_never_coincide_with_training_or_validation_tasks(seed):
    training = Navigation(NavigationConfig()).sample_tasks(10000, torch.Generator().manual_seed(seed))
    evaluation = Navigation(NavigationConfig()).sample_tasks(40, evaluation_generator(seed))
    validation = Navigation(NavigationConfig()).sample_tasks(40, validation_generator(seed))
    assert torch.cdist(evaluation, training).min() > 0 and torch.cdist(evaluation, validation).min() > 0


def test_each_method_adapts_with_the_step_sizes_its_validation_tasks_choose(tmp_path):
    """A step size of 10 sends the policy off at full speed (about -500 per episode): offered with
    0.1, the selection must reject it at every step, and the test tasks then see exactly the
    fixed-step-size evaluation; offered alone, it is taken and the curve collapses."""
    base = [*TINY, "env.horizon=100", "eval.num_tasks=4", "eval.num_val_tasks=4", "eval.num_steps=2",
            "eval.episodes_per_task=4"]
    candidate = random_candidate(composed(*base))
    fixed = evaluate(composed(*base, "eval.lr=[0.1]"), [candidate], tmp_path / "fixed").results["random"]
    assert fixed[1]["lr"] == fixed[2]["lr"] == [0.1] and "lr" not in fixed[0]
    chosen = evaluate(composed(*base, "eval.lr_grid=[10.0,0.1]"), [candidate], tmp_path / "chosen").results["random"]
    assert chosen[1]["lr"] == chosen[2]["lr"] == [0.1]
    assert [chosen[k]["mean"] for k in range(3)] == [fixed[k]["mean"] for k in range(3)]
    diverged = evaluate(composed(*base, "eval.lr_grid=[1000.0,0.1]"), [candidate], tmp_path / "nan").results["random"]
    assert diverged[1]["lr"] == [0.1]  # listed first, 1000 still loses (about -600 per episode)
    forced = evaluate(composed(*base, "eval.lr_grid=[10.0]"), [candidate], tmp_path / "forced").results["random"]
    assert forced[2]["lr"] == [10.0] and forced[2]["mean"] < fixed[2]["mean"] - 100
    with open(tmp_path / "chosen" / "results.csv") as f:
        assert [row["lr"] for row in csv.DictReader(f)] == ["", "0.1", "0.1"]


@pytest.fixture(scope="module")
def fig4_sweep(tmp_path_factory):
    """The Figure 4 preset as one command, with a tiny budget."""
    cwd = tmp_path_factory.mktemp("fig4")
    proc = run_cli(cwd, "experiment=navigation_fig4", *TINY, *FIG4_EVAL, "eval.num_tasks=5")  # a sweep by itself
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = cwd.glob("multirun/*/*")
    return cwd, sweep, proc


def test_fig4_preset_trains_three_baselines_and_evaluates_four(fig4_sweep):
    _, sweep, proc = fig4_sweep
    baselines = sorted(load_checkpoint(p)["baseline"] for p in sweep.glob("*/checkpoint.pt"))
    assert baselines == ["maml", "oracle", "pretrained"]
    results = json.loads((sweep / "evaluation" / "results.json").read_text())
    assert list(results) == ["maml", "pretrained", "random", "oracle"]
    for method, rows in results.items():
        assert list(rows) == (["0"] if method == "oracle" else ["0", "1", "2", "3"])
        for k, row in rows.items():
            assert set(row) == ({"mean", "ci95", "n_tasks", "n_blocks", "n_seeds"} | ({"lr"} if k != "0" else set())
                                | ({"paired"} if method != "maml" else set()))
            assert (row["n_tasks"], row["n_blocks"], row["n_seeds"]) == (5, 5, 1)  # independent goals
            assert -10 <= row["mean"] <= 0 and row["ci95"] >= 0
    for name in ("results.csv", "returns_per_task.csv", "adaptation_curve.png", "trajectories.png"):
        assert (sweep / "evaluation" / name).stat().st_size > 0
    assert "k=3" in proc.stdout and "pretrained" in proc.stdout  # the table in the terminal
    assert "maml minus each method on the same tasks (paired)" in proc.stdout


def test_paired_differences_are_per_task_differences_from_maml(fig4_sweep):
    """Recomputed from returns_per_task.csv: each method's mean, and MAML minus it task by task."""
    _, sweep, _ = fig4_sweep
    results = json.loads((sweep / "evaluation" / "results.json").read_text())
    with open(sweep / "evaluation" / "returns_per_task.csv") as f:
        rows = list(csv.DictReader(f))
    table = {(r["method"], int(r["k"]), int(r["task"])): float(r["return"]) for r in rows}
    assert len(rows) == len(table) == 5 * (3 * 4 + 1)  # 5 tasks, k = 0..3 for three methods, k = 0 for the oracle
    for method, by_k in results.items():
        for k, row in by_k.items():
            mine = torch.tensor([table[method, int(k), t] for t in range(5)], dtype=torch.float64)
            assert row["mean"] == pytest.approx(mine.mean().item(), abs=1e-3)
            if method == "maml":
                continue
            diff = torch.tensor([table["maml", int(k), t] for t in range(5)], dtype=torch.float64) - mine
            assert row["paired"]["reference"] == "maml"
            assert row["paired"]["mean"] == pytest.approx(diff.mean().item(), abs=1e-3)
            assert row["paired"]["ci95"] == pytest.approx(1.96 * diff.std().item() / 5 ** 0.5, abs=1e-3)


def test_paired_interval_removes_the_spread_of_task_difficulty():
    """Two methods a constant apart on tasks of very different difficulty: the paired interval is
    zero while each method's own interval is wide."""
    difficulty = [-50.0, -10.0, -30.0, 0.0]
    table = pd.DataFrame([{"method": m, "run": i, "seed": 0, "task": t, "k": 0, "return": r + offset, "lr": math.nan,
                           "reference": False}
                          for i, (m, offset) in enumerate([("maml", 3.0), ("pretrained", 0.0)])
                          for t, r in enumerate(difficulty)])
    results = summarize(table)
    assert results["pretrained"][0]["ci95"] > 10 and "paired" not in results["maml"][0]
    assert results["pretrained"][0]["paired"] == {"reference": "maml", "mean": 3.0, "ci95": 0.0}
    assert "3.00 ±  0.00" in format_paired(results, 0)
    assert format_paired(summarize(table[table["method"] == "pretrained"]), 0) == ""  # no MAML method, no paired table


def test_a_family_statistic_is_paired_task_by_task_too():
    """Success (Meta-World's statistic) of two methods on four tasks: MAML succeeds on three, the
    pretrained policy on one of them; the paired success rate is the mean of the per-task
    differences (0.5) with their interval, stored under the statistic and printed as its own table."""
    table = pd.DataFrame([{"method": m, "run": i, "seed": 0, "task": t, "k": 0, "return": 1.0, "lr": math.nan,
                           "reference": False, "success/rate": float(t < wins)}
                          for i, (m, wins) in enumerate([("maml", 3), ("pretrained", 1)]) for t in range(4)])
    results = summarize(table)
    paired = results["pretrained"][0]["success"]["rate"]["paired"]
    diff = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert paired["mean"] == 0.5 and paired["ci95"] == pytest.approx(1.96 * diff.std().item() / 2)
    assert "paired" not in results["maml"][0]["success"]["rate"]
    assert "maml minus each method on the same tasks (paired), success rate:" in format_statistics(results)


def test_intervals_over_blocks_count_the_blocks_not_the_tasks():
    """Three assets that move together over the same 12 dates (a block each date): the block
    interval equals the interval of the 12 block means (the bootstrap's standard error over 12
    independent values, within its resampling noise), not the 36 tasks' one, which is √3 too narrow;
    with one task per block it is the normal interval again."""
    g = torch.Generator().manual_seed(3)
    per_date = torch.randn(12, generator=g, dtype=torch.float64)
    values = pd.Series(per_date.repeat_interleave(3).numpy())
    blocks = pd.Series(torch.arange(12).repeat_interleave(3).numpy())
    of_means = 1.96 * per_date.std(unbiased=False).item() / math.sqrt(12)  # the bootstrap SE of a mean of 12
    assert ci95(values, blocks) == pytest.approx(of_means, rel=0.08)
    assert ci95(values) == pytest.approx(1.96 * values.std(ddof=1) / 6) and ci95(values) < 0.65 * ci95(values, blocks)
    independent = pd.Series(torch.randn(30, generator=g, dtype=torch.float64).numpy())
    assert ci95(independent, pd.Series(range(30))) == ci95(independent)  # one task per block: 1.96 s/√n
    table = pd.DataFrame({"method": "maml", "run": 0, "seed": 0, "task": range(36), "k": 0, "return": values,
                          "lr": math.nan, "reference": False, "block": blocks, "group": ["a", "b", "c"] * 12})
    cell = summarize(table)["maml"][0]
    assert cell["n_tasks"] == 36 and cell["n_blocks"] == 12 and cell["ci95"] == ci95(values, blocks)
    assert "36 test tasks in 12 independent blocks" in format_counts(summarize(table))
    groups = summarize_groups(table)
    assert list(groups["group"]) == ["a", "b", "c"] and list(groups["n_tasks"]) == [12, 12, 12]


def test_fig4_preset_with_the_submitit_launcher(tmp_path):
    """Three jobs start at once on a new SQLite store; the evaluation waits for all of them (the preset's
    earlier spelling, `--multirun +experiment=...`, still works)."""
    proc = run_cli(tmp_path, "--multirun", "+experiment=navigation_fig4", "hydra/launcher=submitit_local", *TINY,
                   *FIG4_EVAL, "eval.num_tasks=3", "eval.num_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    results = json.loads((sweep / "evaluation" / "results.json").read_text())
    assert list(results) == ["maml", "pretrained", "random", "oracle"]
    modes = sorted(r.data.tags["mode"] for r in runs_in(tmp_path / "mlflow.db"))
    assert modes == ["evaluate", "sweep", "train", "train", "train"]


def test_evaluation_run_in_mlflow_links_the_evaluated_runs(fig4_sweep):
    cwd, _, _ = fig4_sweep
    runs = runs_in(cwd / "mlflow.db")
    training = {r.data.tags["baseline"]: r.info.run_id for r in runs if r.data.tags["mode"] == "train"}
    (evaluation,) = [r for r in runs if r.data.tags["mode"] == "evaluate"]
    assert set(evaluation.data.tags["evaluated_runs"].split(",")) == set(training.values())
    for method, run_id in training.items():
        assert evaluation.data.tags[f"evaluated.{method}"] == run_id
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    artifacts = {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    assert {"results.json", "results.csv", "adaptation_curve.png", "trajectories.png"} <= artifacts
    assert [m.step for m in client.get_metric_history(evaluation.info.run_id, "eval/return_maml")] == [0, 1, 2, 3]


def test_evaluate_accepts_mlflow_run_ids(fig4_sweep, tmp_path):
    cwd, _, _ = fig4_sweep
    maml_id = next(r.info.run_id for r in runs_in(cwd / "mlflow.db") if r.data.tags.get("baseline") == "maml"
                   and r.data.tags["mode"] == "train")
    proc = run_cli(cwd, "mode=evaluate", f"eval.checkpoints=[{maml_id}]", "eval.include_random=false",
                   "eval.num_tasks=3", "eval.num_steps=1", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = [p for p in cwd.glob("outputs/*/*") if (p / "results.json").exists()]
    assert list(json.loads((out / "results.json").read_text())) == ["maml"]


def bad_checkpoint(fig4_sweep, tmp_path: Path, **changes) -> Path:
    _, sweep, _ = fig4_sweep
    (oracle,) = [p for p in sweep.glob("*/checkpoint.pt") if load_checkpoint(p)["baseline"] == "oracle"]
    state = load_checkpoint(oracle)
    state.update(changes)
    return save_checkpoint(tmp_path / "bad" / "checkpoint.pt", state)


@pytest.mark.parametrize("case", ["missing", "other_env", "obs_size"])
def test_bad_checkpoint_fails_naming_file_and_mismatch(fig4_sweep, tmp_path, case):
    if case == "missing":
        path, expected = tmp_path / "nowhere" / "checkpoint.pt", "no such file"
    elif case == "other_env":
        path, expected = bad_checkpoint(fig4_sweep, tmp_path, env="ant"), "trained on env 'ant'"
    else:  # an oracle policy (4 inputs) presented as a plain one (2 observations)
        path, expected = bad_checkpoint(fig4_sweep, tmp_path, oracle=False), "expects observations of size 4"
    proc = run_cli(tmp_path, "mode=evaluate", f"eval.checkpoints=[{path}]", *TINY)
    assert proc.returncode != 0
    assert str(path) in proc.stderr and expected in proc.stderr
    assert runs_in(tmp_path / "mlflow.db") == []


def test_the_adaptation_curve_reads_like_a_paper_figure():
    rows = lambda base, ks: {k: {"mean": base + k, "ci95": 1.0, "n_tasks": 40, "n_seeds": 2} for k in ks}
    results = {"maml": rows(-40, range(4)), "pretrained": rows(-41, range(4)), "oracle": rows(-3, [0])}
    for k, alpha in ((1, [0.1]), (2, [0.05]), (3, [0.02, 0.05])):  # two seeds chose differently at k = 3
        results["maml"][k]["lr"] = alpha
    fig = curves_figure(results, 3, "navigation: return after k inner steps")
    (ax,) = fig.axes
    assert ax.get_title() and "k" in ax.get_xlabel() and "return" in ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.get_lines()}
    maml = lines["maml (n=80, α 0.1, 0.05, 0.02|0.05)"]  # n = seeds × tasks, then the step sizes
    pretrained = lines["pretrained (n=80)"]
    assert not (maml.get_xdata() == pretrained.get_xdata()).any()  # markers offset, bars never overlap
    assert len(ax.collections) == 2  # a shaded 95% band per adapted method
    oracle = lines["oracle (no adaptation, n=80)"]
    assert list(oracle.get_ydata()) == [-3, -3] and len(ax.patches) == 1  # the oracle's line and its band
    assert ax.get_legend().get_title().get_text() == "mean ± 95% CI"


def test_checkpoints_of_different_settings_are_never_pooled_as_seeds(tmp_path):
    """maml checkpoints of TRPO (seeds 0, 1) and ProMP given together: the two TRPO seeds pool,
    ProMP gets a row of its own, labelled by what sets it apart (not by its seed or threads)."""
    runs = {"trpo0": ["seed=0"], "trpo1": ["seed=1", "threads=2"], "promp": ["algorithm=promp"]}
    for name, overrides in runs.items():
        build_trainer(composed(*TINY, "num_iterations=1", *overrides), tmp_path / name).meta_train()
    cfg = composed(*TINY, "mode=evaluate", f"eval.checkpoints=[{','.join(str(tmp_path / n) for n in runs)}]")
    labels = [c.label for c in load_candidates(cfg, "")]
    assert labels == ["maml algorithm=promp", "maml algorithm=trpo", "maml algorithm=trpo", "random"]
