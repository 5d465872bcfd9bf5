"""Resuming from a checkpoint continues the same run and ends where the uninterrupted run ends."""

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch

from maml_rl.core.checkpoint import load_checkpoint, save_checkpoint
from maml_rl.run.build import build_trainer

from .conftest import TINY, composed
from .test_cli import run_cli, runs_in


@pytest.mark.parametrize("overrides", [[], ["algorithm=ppo", "env=halfcheetah_vel"],
                                       ["algorithm=promp", "algorithm.adaptive_kl=true", "algorithm.target_kl=1e-6"],
                                       ["policy=moe", "policy.adapt=gating", "policy.balance_coef=0.1"],
                                       ["env=gymnasium", "env.id=tests.gym_point:PointGoal"]],
                         ids=["trpo-navigation", "ppo-cheetah", "promp-navigation", "moe-navigation", "gymnasium-env"])
def test_load_state_continues_bit_identically(tmp_path, overrides):
    # PPO on MuJoCo: Adam's moments, the observation statistics and the reset noise must carry over too;
    # ProMP with a target its KL always exceeds: η doubles every iteration, so it must carry over as well
    cfg = composed(*TINY, "num_iterations=4", *overrides)
    uninterrupted = build_trainer(cfg, tmp_path / "a")
    uninterrupted.meta_train()
    interrupted = build_trainer(cfg, tmp_path / "b")
    for _ in range(2):
        interrupted.meta_step()
        interrupted.iteration += 1
    interrupted.save()
    resumed = build_trainer(cfg, tmp_path / "b")
    resumed.load_state(load_checkpoint(tmp_path / "b" / "checkpoint.pt"))
    resumed.meta_train()
    for (name, a), b in zip(uninterrupted.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), name


def test_cli_resume_extends_the_run_in_the_same_mlflow_run(tmp_path):
    full = run_cli(tmp_path, *TINY, "num_iterations=4", "hydra.run.dir=full")
    assert full.returncode == 0, full.stderr[-3000:]
    short = run_cli(tmp_path, *TINY, "num_iterations=2", "hydra.run.dir=cut")
    assert short.returncode == 0, short.stderr[-3000:]
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    # extend the 2-iteration run to 4: num_iterations may change on resume (the rest of TINY repeats the run's values)
    resumed = run_cli(tmp_path, *TINY, f"resume={tmp_path / 'cut'}", "num_iterations=4", "hydra.run.dir=launch")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert b["iteration"] == 4 and b["config"]["num_iterations"] == 4
    for name, value in a["policy"].items():
        assert torch.equal(value, b["policy"][name]), name
    # the tasks of the last iterations carry over too: 2 from before the cut, 2 after
    assert len(a["recent_tasks"]) == len(b["recent_tasks"]) == 4
    assert all(torch.equal(x, y) for x, y in zip(a["recent_tasks"], b["recent_tasks"]))
    assert a["history"] == b["history"] and len(b["history"]["post"]) == 4  # the learning curve continues
    runs = runs_in(tmp_path / "mlflow.db")
    assert len(runs) == 2  # no duplicate run for the resumed job
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(state["tracked_run_id"], "post_adaptation_return")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    assert not (tmp_path / "launch").exists()  # no stray output dir: the resumed run writes into its own
    assert "resuming" in (tmp_path / "cut" / "maml_rl.log").read_text()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("trained")
    assert run_cli(cwd, *TINY, "hydra.run.dir=run").returncode == 0
    return cwd


@pytest.mark.parametrize("override", ["inner.lr=0.3", "env=ant"])
def test_resume_refuses_to_change_the_runs_config(trained, override):
    before = load_checkpoint(trained / "run" / "checkpoint.pt")
    proc = run_cli(trained, f"resume={trained / 'run'}", "num_iterations=3", override)
    key = override.split("=")[0]
    assert proc.returncode == 2 and f"resume: {override} differs from the run's {key}=" in proc.stderr
    assert "num_iterations, checkpoint_every, threads" in proc.stderr
    after = load_checkpoint(trained / "run" / "checkpoint.pt")
    assert after["iteration"] == before["iteration"] == 2  # nothing ran, nothing was overwritten


def test_requeued_job_resumes_from_its_own_output_dir(tmp_path):
    first = run_cli(tmp_path, *TINY, "num_iterations=2", "hydra.run.dir=job")
    assert first.returncode == 0, first.stderr[-3000:]
    state = load_checkpoint(tmp_path / "job" / "checkpoint.pt")
    state["config"]["num_iterations"] = 3
    save_checkpoint(tmp_path / "job" / "checkpoint.pt", state)
    again = run_cli(tmp_path, *TINY, "num_iterations=3", "hydra.run.dir=job")
    assert again.returncode == 0, again.stderr[-3000:]
    assert load_checkpoint(Path(tmp_path / "job" / "checkpoint.pt"))["iteration"] == 3
    assert len(runs_in(tmp_path / "mlflow.db")) == 1


def test_resume_from_nothing_fails_clearly(tmp_path):
    proc = run_cli(tmp_path, *TINY, f"resume={tmp_path / 'nowhere'}")
    assert proc.returncode == 2 and "cannot resume from" in proc.stderr and "nowhere" in proc.stderr


def test_a_checkpoint_write_that_dies_midway_leaves_the_previous_one(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"policy": {"w": torch.ones(3)}, "iteration": 7})
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, timeout=120,
                            check=False)
    assert killed.returncode == -9  # SIGKILL in the middle of torch.save
    state = load_checkpoint(path)
    assert state["iteration"] == 7 and torch.equal(state["policy"]["w"], torch.ones(3))


KILLED_WRITER = """
import os, signal, sys, torch
from maml_rl.core.checkpoint import save_checkpoint

class DiesWhilePickled:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)

save_checkpoint(sys.argv[1], {"policy": {"w": torch.zeros(1000)}, "iteration": 8, "x": DiesWhilePickled()})
"""
