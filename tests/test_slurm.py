"""Sweeps on a real single-node SLURM cluster (slurmctld, slurmd, munge, slurmdbd) started here.

The cluster comes from tests/slurm/start-local-slurm.sh (installs Debian's slurm-wlm packages
when missing) and is stopped afterwards. Without root or apt-get the tests skip, saying why.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from maml_rl.core.checkpoint import load_checkpoint

from .conftest import FIG4_EVAL, TINY
from .test_cli import runs_in

SCRIPTS = Path(__file__).parent / "slurm"
SLURM = ["hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (munged, slurmd and slurmctld switch users)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("SLURM is not installed and there is no apt-get to install it")
    start = subprocess.run(["bash", str(SCRIPTS / "start-local-slurm.sh")], capture_output=True, text=True,
                           timeout=900, check=False)
    assert start.returncode == 0, f"the local SLURM cluster did not start:\n{start.stderr[-4000:]}"
    yield
    subprocess.run(["bash", str(SCRIPTS / "stop-local-slurm.sh")], capture_output=True, timeout=300, check=False)


def wait_up(tmp_path: Path, fake_daemon: str) -> subprocess.CompletedProcess:
    """Run the start script's wait_up on a fake daemon (`sleep`) that writes tmp_path/pid."""
    script = f"""
        log() {{ echo "$*" >&2; }}
        . {SCRIPTS / "daemons.sh"}
        TIMEOUT=30 PF={tmp_path / "pid"} ANSWER={tmp_path / "answer"}
        ( {fake_daemon} ) >/dev/null 2>&1 &
        fake=$!
        wait_up sleep "$PF" "the fake daemon" test -e "$ANSWER"
        rc=$?
        wait $fake
        kill "$(cat "$PF")" 2>/dev/null
        exit $rc"""
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)


def test_wait_up_waits_for_a_daemon_slow_to_write_its_pid_file(tmp_path):
    # the pid file appears only after the 2 s in which a dead daemon is detected
    done = wait_up(tmp_path, 'sleep 3; sleep 60 & echo $! > "$PF"; sleep 1; touch "$ANSWER"')
    assert done.returncode == 0, done.stderr


def test_wait_up_stops_waiting_once_the_daemon_has_exited(tmp_path):
    done = wait_up(tmp_path, 'sleep 0.5 & echo $! > "$PF"')
    assert done.returncode == 1
    assert "sleep exited while waiting for: the fake daemon" in done.stderr  # not the 30 s timeout


def maml_rl(cwd: Path, *overrides: str, wait: bool = True):
    cmd = [sys.executable, "-m", "maml_rl", "--multirun", *overrides]
    if wait:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def release_after_requeue(job: str, timeout: float = 60) -> None:
    """SLURM holds a requeued job for 120 s (reason BeginTime); let it start at once."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True,
                               timeout=30, check=False).stdout
        if "BeginTime" in state:
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} was not requeued: {state!r}")


def test_three_job_slurm_sweep_has_one_parent_and_three_children(slurm_cluster, tmp_path):
    proc = maml_rl(tmp_path, *SLURM, *TINY, "seed=0,1,2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = runs_in(tmp_path / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags["mode"] == "sweep"]
    children = [r for r in runs if r.data.tags["mode"] == "train"]
    assert sorted(r.data.tags["seed"] for r in children) == ["0", "1", "2"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(list(tmp_path.glob("multirun/*/*/*/checkpoint.pt"))) == 3


def test_requeued_job_resumes_and_matches_the_uninterrupted_run(slurm_cluster, tmp_path):
    config = [*TINY, "num_iterations=40", "meta_batch_size=6", "episodes_per_task=6", "env.horizon=100",
              "seed=4"]
    sweep = maml_rl(tmp_path, *SLURM, *config, "hydra.sweep.dir=sweep", wait=False)
    checkpoint = tmp_path / "sweep" / "0" / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not (checkpoint.exists() and load_checkpoint(checkpoint)["iteration"] >= 5):
        assert sweep.poll() is None, sweep.stderr.read()[-3000:]
        time.sleep(0.2)
    at_requeue = load_checkpoint(checkpoint)["iteration"]
    assert 5 <= at_requeue < 20, "the job was too far along to show a requeue"
    (job,) = [p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)]
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    release_after_requeue(job)
    _, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, stderr[-3000:]

    final = load_checkpoint(checkpoint)
    assert final["iteration"] == 40
    reference = subprocess.run([sys.executable, "-m", "maml_rl", *config, "hydra.run.dir=reference"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=600, check=False)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = load_checkpoint(tmp_path / "reference" / "checkpoint.pt")["policy"]
    for name, value in expected.items():
        assert torch.equal(final["policy"][name], value), name
    # the requeued job continued its MLflow run: one run for the job, every step logged
    children = [r for r in runs_in(tmp_path / "mlflow.db") if r.data.tags["mode"] == "train"
                and r.data.tags["output_dir"].endswith("sweep/0")]
    assert len(children) == 1
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = {m.step for m in client.get_metric_history(children[0].info.run_id, "post_adaptation_return")}
    assert steps == set(range(40))
    log = (tmp_path / "sweep" / "0" / "maml_rl.log").read_text()
    assert "resuming" in log


def test_fig4_preset_evaluates_after_the_slurm_jobs(slurm_cluster, tmp_path):
    proc = maml_rl(tmp_path, "+experiment=navigation_fig4", *SLURM, *TINY, *FIG4_EVAL, "eval.num_tasks=3", "eval.num_steps=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = tmp_path.glob("multirun/*/*")
    assert len(list(sweep.glob("*/checkpoint.pt"))) == 3
    assert list(json.loads((sweep / "evaluation" / "results.json").read_text())) == \
        ["maml", "pretrained", "random", "oracle"]
