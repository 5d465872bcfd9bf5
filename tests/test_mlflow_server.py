"""Runs tracked on a real `mlflow server` started on 127.0.0.1 by the tests, and on a SQLite store
outside the launch dir: sweeps keep their grouping, jobs their names, the parent its summary;
evaluations of sweeps; an unreachable or vanishing server fails fast and keeps the checkpoint."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

import maml_rl
from maml_rl.core.checkpoint import load_checkpoint

from .conftest import TINY
from .test_cli import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` with a SQLite store and proxied artifacts under ``root``; waits for /health."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
                             f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                import urllib.request

                if urllib.request.urlopen(f"{uri}/health", timeout=2).read():
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise AssertionError("mlflow server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, uri = start_server(tmp_path_factory.mktemp("server"))
    yield uri
    stop_server(proc)


def runs_of(uri: str, experiment: str = "maml_rl"):
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([found.experiment_id]) if found else [])


@pytest.fixture(scope="module")
def server_sweep(server, tmp_path_factory):
    """A 3-job sweep tracked on the server, launched from a dir that has no store of its own."""
    cwd = tmp_path_factory.mktemp("launch")
    proc = run_cli(cwd, "--multirun", *TINY, "inner.lr=0.05,0.1,0.2", f"tracking.uri={server}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = cwd.glob("multirun/*/*")
    return cwd, sweep


def test_a_sweep_on_a_tracking_server_keeps_its_grouping_names_and_summary(server, server_sweep):
    cwd, sweep = server_sweep
    assert not (cwd / "mlflow.db").exists()  # nothing stray in the launch dir
    client, runs = runs_of(server)
    (parent,) = [r for r in runs if r.data.tags["mode"] == "sweep" and r.data.tags["sweep_dir"] == str(sweep)]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [f"inner.lr={lr} · maml-trpo-navigation-s0"
                                                         for lr in ("0.05", "0.1", "0.2")]
    objectives = {r.info.run_id: r.data.metrics["train/objective"] for r in children}
    summary = client.get_metric_history(parent.info.run_id, "sweep/objective")
    assert sorted(m.step for m in summary) == [0, 1, 2]
    assert sorted(m.value for m in summary) == sorted(objectives.values())
    best = max(objectives, key=objectives.get)
    assert parent.data.metrics["sweep/best_objective"] == objectives[best]
    assert parent.data.tags["best_run_id"] == best and "inner.lr=" in parent.data.tags["best_overrides"]
    assert parent.info.status == "FINISHED"
    assert "sweep_summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    for child in children:
        assert "learning_curve.png" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_evaluating_a_sweep_groups_its_jobs_by_their_overrides(server, server_sweep):
    cwd, sweep = server_sweep
    started = time.time()
    proc = run_cli(cwd, *TINY, "mode=evaluate", f"eval.sweep_dir={sweep}", "eval.num_tasks=3", "eval.num_steps=1",
                   f"tracking.uri={server}", "hydra.run.dir=evaluation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((cwd / "evaluation" / "results.json").read_text())
    assert list(results) == ["maml inner.lr=0.05", "maml inner.lr=0.1", "maml inner.lr=0.2", "random"]
    _, runs = runs_of(server, "maml_rl-evaluation")  # not among the training runs
    (run,) = [r for r in runs if r.data.tags["output_dir"] == str(cwd / "evaluation")]
    assert {k.split(".")[0] for k in run.data.params} <= {"eval", "env", "inner", "policy", "episodes_per_task",
                                                          "seed", "threads", "gamma", "gae_lambda"}
    assert run.data.params["eval.num_tasks"] == "3" and "algorithm.max_kl" not in run.data.params
    assert "eval/return_maml_inner.lr_0.05" in run.data.metrics
    # the run was open while the evaluation ran: it starts before the results were written
    assert started * 1000 <= run.info.start_time <= (cwd / "evaluation" / "results.json").stat().st_mtime * 1000


def test_a_policy_loads_from_a_run_id_a_run_dir_or_a_file(server, server_sweep):
    _, sweep = server_sweep
    _, runs = runs_of(server)
    run = next(r for r in runs if r.data.tags.get("output_dir") == str(sweep / "0"))
    by_id = maml_rl.load_policy(run.info.run_id, tracking_uri=server)
    by_dir, by_file = maml_rl.load_policy(sweep / "0"), maml_rl.load_policy(sweep / "0" / "checkpoint.pt")
    for a, b, c in zip(by_id.parameters(), by_dir.parameters(), by_file.parameters()):
        assert a.equal(b) and b.equal(c)


@pytest.mark.parametrize("multirun", [False, True])
def test_an_unreachable_tracking_server_fails_within_seconds(tmp_path, multirun):
    """No retry loop (MLflow's default retries take minutes): the run ends within seconds of a run that
    stops at a bad config value, measured in the same test so that a busy machine slows both."""
    args = ["--multirun", "seed=0,1"] if multirun else []
    (tmp_path / "reference").mkdir()
    started = time.time()
    assert run_cli(tmp_path / "reference", *args, *TINY, "gamma=2").returncode == 2
    reference, started = time.time() - started, time.time()
    proc = run_cli(tmp_path, *args, *TINY, "tracking.uri=http://127.0.0.1:9")
    assert time.time() - started < reference + 20  # the check itself waits at most 5 s
    assert proc.returncode != 0
    assert "http://127.0.0.1:9 is not reachable" in proc.stderr
    assert not list(tmp_path.glob("**/checkpoint.pt"))
    if not multirun:
        assert proc.stderr.strip().startswith("maml_rl: tracking server http://127.0.0.1:9")
        assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.yaml"))


def test_a_server_that_goes_away_mid_run_leaves_the_last_iteration_checkpointed(tmp_path):
    proc_server, uri = start_server(tmp_path / "server")
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
    run = subprocess.Popen([sys.executable, "-m", "maml_rl", *TINY, "num_iterations=500", "checkpoint_every=1000",
                            f"tracking.uri={uri}", "hydra.run.dir=run"], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client, deadline = mlflow.MlflowClient(uri), time.time() + 120
        while time.time() < deadline:
            _, runs = runs_of(uri)
            if runs and len(client.get_metric_history(runs[0].info.run_id, "post_adaptation_return")) >= 3:
                break
            time.sleep(0.2)
    finally:
        stop_server(proc_server)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode != 0, "the run should fail once its tracking server is gone"
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert 3 <= state["iteration"] < 500, stderr[-2000:]
