"""The analysis scripts in experiments/, run as a user runs them."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import TINY, composed
from .test_cli import run_cli

REACH_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "navigation_reach.py"


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixed_reach_return_by_hand():
    reach = load_script(REACH_SCRIPT)
    goals = torch.tensor([[0.25, 0.0], [0.0, -0.3]], dtype=torch.float64)
    # goal 1: positions 0.1 … 0.5 at full speed, then it stays 0.25 away for the remaining 96 steps;
    # goal 2, reach 0.3: 0.2 and 0.1 away, then on the goal, which ends the episode
    expected = [-(0.15 + 0.05 + 0.05 + 0.15 + 96 * 0.25), -(0.2 + 0.1)]
    assert reach.fixed_reach_return(goals[:1], 0.5).tolist() == pytest.approx(expected[:1])
    assert reach.fixed_reach_return(goals[1:], 0.3).tolist() == pytest.approx(expected[1:])


def reach_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REACH_SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_reach_script_on_a_trained_checkpoint(tmp_path):
    assert run_cli(tmp_path, *TINY, "hydra.run.dir=run").returncode == 0
    proc = reach_cli(str(tmp_path / "run"), "--tasks", "30")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table, ceiling = proc.stdout.split("\n\n")
    rows = [line.split() for line in table.splitlines()[1:]]
    assert sum(int(r[1]) for r in rows) == 30  # every goal falls in one distance bin
    assert all(-1 <= float(r[3]) <= 1 for r in rows)  # cosines
    header, *lines = ceiling.splitlines()
    assert header.endswith("last 2 meta-batches")  # the goals the run's last (here: both) iterations trained on
    returns = [[float(x) for x in line.split()[1:]] for line in lines]
    assert len(returns) == 6 and all(len(r) == 2 and -100 < min(r) and max(r) < 0 for r in returns)


@pytest.mark.parametrize("args, message", [(["missing.pt"], "missing.pt"), (["x", "--tasks", "0"], "--tasks must be >= 1")])
def test_reach_script_rejects_bad_input(args, message):
    proc = reach_cli(*args)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("family", ["halfcheetah_dir", "halfcheetah_vel", "ant", "ant_dir"])
def test_figure5_presets_train_three_methods_at_the_laptop_budget(family):
    cfg = composed(f"experiment={family}_fig5", hydra=True)
    assert cfg.env.name == family and cfg.env.horizon == 100
    assert (cfg.meta_batch_size, cfg.episodes_per_task) == (20, 10)  # half the paper's 40 × 20
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params.baseline == "maml,pretrained,oracle"
    assert cfg.hydra.callbacks.evaluate_sweep._target_.endswith("EvaluateSweep")
    assert cfg.eval.num_steps == 3 and 0.1 in cfg.eval.lr_grid and cfg.eval.episodes_per_task >= 20
    paper = composed(f"experiment={family}_fig5", "env.horizon=200", "meta_batch_size=40")
    assert (paper.env.horizon, paper.meta_batch_size) == (200, 40)  # the paper's budget: command-line values win
