"""`python -m maml_rl` as a real subprocess against a real MLflow SQLite store."""

import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from hydra.errors import ConfigCompositionException

from maml_rl.config import ConfigError, validate
from maml_rl.core.checkpoint import load_checkpoint
from maml_rl.policies.base import load_policy
from maml_rl.run.evaluation import EvaluationError, load_candidate

from .conftest import TINY, composed


def run_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maml_rl", *overrides], cwd=cwd, capture_output=True,
                          text=True, timeout=300, check=False)


def runs_in(store: Path):
    if not store.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny training run; its stdout (log lines) and stderr (the bar) in one stream, as a terminal shows them."""
    cwd = tmp_path_factory.mktemp("launch")
    proc = subprocess.run([sys.executable, "-m", "maml_rl", *TINY, "seed=3"], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return cwd, proc


def test_run_creates_one_mlflow_run_with_params_metrics_artifacts(tiny_run):
    cwd, proc = tiny_run
    runs = runs_in(cwd / "mlflow.db")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "maml-trpo-navigation-s3"
    params = run.data.params
    assert params["inner.lr"] == "0.1" and params["meta_batch_size"] == "2" and params["env.name"] == "navigation"
    assert params["algorithm.max_kl"] == "0.01" and params["policy.hidden_sizes"] == "[8, 8]"
    # what a person reads: no evaluation settings, no key that only supplies another's default, nothing empty
    assert not [k for k in params if k.startswith("eval.")]
    assert not {"env.meta_batch_size", "env.episodes_per_task", "env.inner_lr", "resume", "tracking.uri"} & set(params)
    tags = run.data.tags
    assert (tags["env"], tags["algorithm"], tags["baseline"], tags["seed"]) == ("navigation", "trpo", "maml", "3")
    assert Path(tags["output_dir"]).is_dir() and "git_commit" in tags and "seed=3" in tags["overrides"]
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    grouped = ["pre_adaptation_return", "post_adaptation_return", "train/pre_adaptation_return",
               "train/post_adaptation_return", "train/kl", "train/line_search_steps", "train/surrogate_before",
               "train/surrogate_after", "train/policy_std", "time/sampling", "time/inner", "time/outer",
               "time/iteration", "time/env_steps_per_second"]
    for name in grouped:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [0, 1], name
    assert not {"kl", "time_sampling", "env_steps_per_second"} & set(run.data.metrics)  # only under their groups
    post = client.get_metric_history(run.info.run_id, "post_adaptation_return")
    assert all(-10 <= m.value <= 0 for m in post)  # horizon 10, reward ≥ −(distance ≤ 1.5 + 1)
    (objective,) = client.get_metric_history(run.info.run_id, "train/objective")
    assert objective.value == pytest.approx(sum(m.value for m in post) / 2)  # the app's return value, logged
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {".hydra", "checkpoint", "maml_rl.log", "learning_curve.png"} <= artifacts
    hydra_files = {a.path for a in client.list_artifacts(run.info.run_id, ".hydra")}
    assert ".hydra/config.yaml" in hydra_files and ".hydra/overrides.yaml" in hydra_files
    # the end of the run says where the checkpoint is and how to open the run
    assert f"checkpoint: {Path(tags['output_dir']) / 'checkpoint.pt'}" in proc.stdout
    assert f"tracked run {run.info.run_id}: mlflow ui --backend-store-uri sqlite:///{cwd / 'mlflow.db'}" in proc.stdout


def test_checkpoint_loads_back(tiny_run):
    cwd, _ = tiny_run
    (path,) = cwd.glob("outputs/*/*/checkpoint.pt")
    state = load_checkpoint(path)
    assert state["iteration"] == 2 and state["config"]["seed"] == 3 and state["baseline"] == "maml"
    policy = load_policy(path)
    dist = policy(torch.zeros(5, 2))
    assert dist["loc"].shape == (5, 2) and dist["log_std"].shape == (1, 2)
    assert [m.out_features for m in policy.mean if isinstance(m, torch.nn.Linear)] == [8, 8, 2]


BAD_OVERRIDES = [
    ("inner.lr=-0.1", "inner.lr=-0.1 is not allowed: must be > 0"),
    ("inner.lr=0", "inner.lr=0.0 is not allowed: must be > 0"),
    ("meta_batch_size=0", "meta_batch_size=0 is not allowed: must be >= 1"),
    ("inner.num_steps=-1", "inner.num_steps=-1 is not allowed: must be >= 0"),
    ("algorithm.max_kl=0", "algorithm.max_kl=0.0 is not allowed: must be > 0"),
    ("algorithm=ppo algorithm.clip_eps=1.5", "algorithm.clip_eps=1.5 is not allowed: must be in (0, 1)"),
    ("env=nowhere", "Could not find 'env/nowhere'"),
    ("inner.lr=fast", "inner.lr"),
    ("meta_batch_size=2.5", "meta_batch_size"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES)
def test_bad_override_is_refused_naming_the_value(override, message):
    """Each bad value is refused by composition (Hydra's schema) or by ``validate`` (ranges), which
    ``python -m maml_rl`` runs before any work; the command-line path is checked below."""
    with pytest.raises((ConfigError, ConfigCompositionException)) as refused:
        validate(composed(*TINY, *override.split()))
    assert message in str(refused.value)
    assert override.split()[-1].split("=", 1)[1] in str(refused.value)  # the message names the bad value


@pytest.mark.parametrize("override,message", [BAD_OVERRIDES[0], BAD_OVERRIDES[-1]])
def test_bad_override_stops_the_command_before_any_work(tmp_path, override, message):
    proc = run_cli(tmp_path, *TINY, override)
    assert proc.returncode != 0
    assert message in proc.stderr and override.split("=", 1)[1] in proc.stderr
    assert runs_in(tmp_path / "mlflow.db") == []
    assert not list(tmp_path.glob("**/checkpoint.pt"))


def test_multirun_jobs_write_to_their_own_dirs_and_share_one_store_elsewhere(tmp_path):
    """A sweep tracked on a SQLite store outside the launch dir keeps its grouping (and leaves no store behind)."""
    store = tmp_path / "elsewhere" / "mlflow.db"
    store.parent.mkdir()
    launch = tmp_path / "launch"
    launch.mkdir()
    proc = run_cli(launch, "--multirun", *TINY, "num_iterations=1", "seed=0,1", f"tracking.uri=sqlite:///{store}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "raised" not in proc.stderr and not (launch / "mlflow.db").exists()
    checkpoints = sorted(launch.glob("multirun/*/*/*/checkpoint.pt"))
    assert [p.parent.name for p in checkpoints] == ["0", "1"]
    runs = runs_in(store)
    (parent,) = [r for r in runs if r.data.tags["mode"] == "sweep"]
    children = [r for r in runs if r.data.tags["mode"] == "train"]
    assert sorted(r.data.tags["seed"] for r in children) == ["0", "1"]
    assert {Path(r.data.tags["output_dir"]) for r in children} == {p.parent for p in checkpoints}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert parent.info.status == "FINISHED" and "seed=0,1" in parent.data.params["overrides"]
    assert Path(parent.data.tags["sweep_dir"]) == checkpoints[0].parent.parent
    assert not (launch / "outputs").exists()


def test_runs_started_together_get_their_own_output_dirs(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-m", "maml_rl", *TINY, f"seed={seed}"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-3000:]
    dirs = sorted(tmp_path.glob("outputs/*/*"))
    assert len(dirs) == 2
    assert sorted(load_checkpoint(d / "checkpoint.pt")["config"]["seed"] for d in dirs) == [1, 2]
    assert sorted(r.data.tags["output_dir"] for r in runs_in(tmp_path / "mlflow.db")) == [str(d) for d in dirs]


def test_optuna_preset_searches_inner_lr_and_max_kl(tmp_path):
    proc = run_cli(tmp_path, "experiment=navigation_optuna", "hydra.sweeper.n_trials=2", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    best = (sweep / "optimization_results.yaml").read_text()
    assert "inner.lr" in best and "algorithm.max_kl" in best and "best_value" in best
    runs = runs_in(tmp_path / "mlflow.db")
    trials = [r for r in runs if r.data.tags["mode"] == "train"]
    assert len(trials) == 2 and len({r.data.params["inner.lr"] for r in trials}) == 2
    assert len({r.data.tags["mlflow.parentRunId"] for r in trials}) == 1
    (parent,) = [r for r in runs if r.data.tags["mode"] == "sweep"]  # the study's best params on the parent
    best = max(trials, key=lambda r: r.data.metrics["train/objective"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert float(parent.data.params["best.inner.lr"]) == pytest.approx(float(best.data.params["inner.lr"]))
    for r in trials:  # each trial is named after the values the study gave it
        assert set(r.info.run_name.split(" · ")[0].split()) == {o for o in r.data.tags["overrides"].split()
                                                    if o.startswith(("inner.lr=", "algorithm.max_kl="))}


@pytest.mark.parametrize("algorithm,env,obs_dim,act_dim", [("ppo", "ant", 27, 8), ("trpo", "halfcheetah_vel", 17, 6)])
def test_locomotion_runs_are_tracked_and_checkpointed(tmp_path, algorithm, env, obs_dim, act_dim):
    proc = run_cli(tmp_path, f"algorithm={algorithm}", f"env={env}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert (run.data.params["algorithm.name"], run.data.params["env.name"]) == (algorithm, env)
    assert run.data.params["env.horizon"] == "10" and run.data.params["inner.lr"] == "0.1"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    post = client.get_metric_history(run.info.run_id, "post_adaptation_return")
    assert [m.step for m in post] == [0, 1]
    assert "checkpoint" in {a.path for a in client.list_artifacts(run.info.run_id)}
    (path,) = tmp_path.glob("outputs/*/*/checkpoint.pt")
    policy = load_policy(path)
    assert (policy.obs_dim, policy.act_dim) == (obs_dim, act_dim)
    steps = 2 * 2 * 2 * 2 * 10  # 2 iterations × (support + query) × 2×2 episodes × 10 steps; the ant may fall sooner
    count = float(policy.obs_norm.count)
    assert count == steps if env == "halfcheetah_vel" else 0 < count <= steps
    if algorithm == "ppo":
        assert load_checkpoint(path)["optimizer"]["state"]  # Adam's moments, for resuming


def test_log_lines_never_break_the_progress_bar(tiny_run):
    _, proc = tiny_run
    segments = [s for line in proc.stdout.split("\n") for s in line.split("\r")]
    assert any("meta-train" in s and "sps=" in s for s in segments)  # env steps per second on the bar
    assert any("[INFO]" in s for s in segments)
    assert not [s for s in segments if "meta-train" in s and "[INFO]" in s]


@pytest.mark.parametrize("overrides,message", [
    (["eval.checkpoints=[somewhere]"], "eval.checkpoints / eval.sweep_dir are set but mode=train: add mode=evaluate"),
    (["eval.sweep_dir=multirun/x"], "eval.checkpoints / eval.sweep_dir are set but mode=train: add mode=evaluate"),
    (["mode=evaluate"], "mode=evaluate needs eval.checkpoints=[...]"),
])
def test_evaluation_settings_without_an_evaluation_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(composed(*TINY, *overrides))


def test_a_refused_setting_stops_the_command_before_any_work(tmp_path):
    proc = run_cli(tmp_path, *TINY, "eval.checkpoints=[somewhere]")
    assert proc.returncode == 2 and proc.stderr.startswith("maml_rl: invalid config: eval.checkpoints")
    assert not list(tmp_path.glob("**/checkpoint.pt")) and runs_in(tmp_path / "mlflow.db") == []


PAYLOAD = """
import os, pickle, sys, torch
class Payload:
    def __reduce__(self):
        return (os.system, ("touch " + sys.argv[2],))
torch.save({"format_version": 1, "policy": Payload()}, sys.argv[1])
"""


@pytest.mark.parametrize("kind", ["text", "payload"])
def test_a_file_that_is_not_a_checkpoint_is_refused_and_never_run(tmp_path, kind):
    path, marker = tmp_path / ("notes.txt" if kind == "text" else "evil.pt"), tmp_path / "pwned"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    else:
        subprocess.run([sys.executable, "-c", PAYLOAD, str(path), str(marker)], check=True)
    # resume and evaluation read checkpoints through the same loader: one of them on the command line each
    args = [f"resume={path}"] if kind == "text" else ["mode=evaluate", f"eval.checkpoints=[{path}]"]
    proc = run_cli(tmp_path, *TINY, *args)
    assert proc.returncode == 2 and f"not a maml_rl checkpoint: {path}" in proc.stderr, proc.stderr[-2000:]
    assert "invalid literal" not in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ValueError, match=f"not a maml_rl checkpoint: {path}"):
        load_checkpoint(path)
    with pytest.raises(EvaluationError, match="not a maml_rl checkpoint"):
        load_candidate(str(path), composed(*TINY), "")
    assert not marker.exists()  # the crafted pickle's code never ran


def test_help_describes_groups_keys_and_presets_without_internal_groups(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "maml_rl", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=True)
    assert ("env        the task distribution: ant, ant_dir, gymnasium, halfcheetah_dir, halfcheetah_vel, ml1, ml10, ml45, "
            "navigation, trading") in proc.stdout
    assert "navigation_fig4" in proc.stdout and "smoke" in proc.stdout and "num_iterations" in proc.stdout
    assert "schema" not in proc.stdout


def test_the_smoke_preset_runs_in_seconds(tmp_path):
    started = time.time()
    proc = run_cli(tmp_path, "experiment=smoke", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.data.params["num_iterations"] == "10" and run.data.params["env.horizon"] == "20"
    assert time.time() - started < 120
