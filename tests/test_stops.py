"""Stops, mistakes and start-up as a user meets them, through real ``python -m maml_rl`` processes:
no key ignored, every refusal leaving nothing behind, Ctrl-C / SIGTERM that lose nothing, a fast
``--help``."""

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from maml_rl.algorithms import ALGORITHMS
from maml_rl.config import ConfigError, validate
from maml_rl.core.checkpoint import load_checkpoint
from maml_rl.envs import ENVS
from maml_rl.policies import POLICIES
from maml_rl.registry import Registry, Settings
from maml_rl.run.sweeps import sweep_run_name
from maml_rl.tracking import TRACKERS

from .conftest import TINY, composed
from .test_cli import run_cli, runs_in

UNKNOWN_KEYS = [
    (["inner.lrr=0.1"], "unknown key inner.lrr: did you mean inner.lr?"),
    (["+inner.lrr=0.1"], "unknown key inner.lrr: did you mean inner.lr?"),  # Hydra's own hint for the line above
    (["seeds=3"], "unknown key seeds: did you mean seed?"),
    (["--cfg", "job", "inner.lrr=0.1"], "unknown key inner.lrr: did you mean inner.lr?"),  # a flag and its value
    (["algorithm=ppo", "algorithm.max_kl=0.01"],
     ("algorithm.max_kl is not a key of algorithm=ppo (it is one of algorithm=trpo); algorithm=ppo has clip_eps, "
      "entropy_coef, epochs, lr, max_grad_norm")),
    (["experiment=trading", "algorithm.max_kl=0.01"], "algorithm.max_kl is not a key of algorithm=ppo"),  # the preset's
    (["--multirun", "algorithm=trpo,ppo", "algorithm.max_kl=0.01"], "algorithm.max_kl is not a key of algorithm=ppo"),
]


def left_behind(cwd: Path) -> list[str]:
    """What a command left in its launch dir, besides what the test put there."""
    return sorted(str(p.relative_to(cwd)) for p in cwd.iterdir() if p.name not in ("run", "empty"))


@pytest.mark.parametrize("overrides,message", UNKNOWN_KEYS)
def test_a_key_no_schema_declares_is_refused_naming_the_nearest(tmp_path, overrides, message):
    proc = run_cli(tmp_path, *TINY, *overrides)
    assert proc.returncode == 2 and proc.stderr.startswith(f"maml_rl: invalid config: {message}"), proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1
    assert left_behind(tmp_path) == []


def test_a_composed_config_with_an_added_key_does_not_validate():
    """The check after composition (a ``+key`` or a typo in a preset reaching the app)."""
    with pytest.raises(ConfigError, match=r"unknown key env\.horizn: did you mean env\.horizon\?"):
        validate(composed(*TINY, "+env.horizn=5"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("trained")
    assert run_cli(cwd, *TINY, "hydra.run.dir=run", "tracking=none").returncode == 0
    (cwd / "empty").mkdir()
    return cwd


REFUSALS = [
    (["inner.lr=-1"], "inner.lr=-1.0 is not allowed"),
    (["experiment=smoke", "eval.num_tasks=4"], "eval.num_tasks=4 is an evaluation setting, but mode=train"),
    (["resume=nowhere"], "cannot resume from nowhere: checkpoint nowhere: no such file or run dir"),
    (["resume=empty"], "empty is a directory without a checkpoint.pt"),
    (["resume=run", "inner.lr=0.2"], "resume: inner.lr=0.2 differs from the run's inner.lr=0.1"),
    (["tracking.uri=some/dir"], "tracking.uri=some/dir is not a store MLflow can use: give sqlite:///<file>.db"),
    (["tracking.uri=http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 is not reachable"),
    (["mode=evaluate", "eval.checkpoints=[nowhere]"], "cannot evaluate: checkpoint nowhere"),
]


@pytest.mark.parametrize("overrides,message", REFUSALS)
def test_every_refusal_leaves_nothing_behind(trained, overrides, message):
    before = load_checkpoint(trained / "run" / "checkpoint.pt")["iteration"]
    proc = run_cli(trained, *TINY, *overrides)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert left_behind(trained) == []  # no outputs/, no mlflow.db
    assert load_checkpoint(trained / "run" / "checkpoint.pt")["iteration"] == before


def start(cwd: Path, *overrides: str) -> subprocess.Popen:
    """A long run, returned once its first iteration is logged."""
    proc = subprocess.Popen([sys.executable, "-m", "maml_rl", *overrides, "hydra.run.dir=run"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "iteration 0:" in line:
            return proc
    raise AssertionError(proc.stderr.read()[-3000:])


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_checkpoints_the_last_iteration_and_resume_logs_none_twice(tmp_path, sig, code):
    proc = start(tmp_path, *TINY, "num_iterations=2000", "checkpoint_every=500")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in err, err[-3000:]
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    done = state["iteration"]
    assert 1 <= done < 2000  # written at the stop, long before the next scheduled checkpoint
    name = signal.Signals(sig).name
    assert f"maml_rl: stopped by {name} after {done} iterations: checkpoint {tmp_path / 'run' / 'checkpoint.pt'}; " \
           f"continue with: python -m maml_rl resume={tmp_path / 'run'}" in out
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED" and run.info.end_time is not None
    resumed = subprocess.run([sys.executable, "-m", "maml_rl", f"resume={tmp_path / 'run'}",
                              f"num_iterations={done + 2}"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{done + 2}/{done + 2}" in resumed.stderr  # the bar counts the whole run
    assert f"mean of the last {min(done + 2, 20)} iterations" in resumed.stdout
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "post_adaptation_return")]
    assert steps == list(range(done + 2))  # every iteration once
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_a_second_ctrl_c_exits_at_once(tmp_path):
    # a meta-batch whose iteration takes seconds, so that both signals land in the iteration in flight
    proc = start(tmp_path, "num_iterations=2000", "threads=1", "meta_batch_size=60", "episodes_per_task=60")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "maml_rl: interrupted at once" in err and "Traceback" not in err
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert run.info.status == "KILLED"


def test_sweep_run_names_lead_with_what_sets_them_apart(tmp_path):
    (tmp_path / "sweep_keys.json").write_text('["inner.lr", "seed"]')
    name = sweep_run_name(composed("seed=2"), tmp_path / "0", ["inner.lr=0.05", "seed=2", "threads=1"])
    assert name == "inner.lr=0.05 · maml-trpo-navigation-s2" and name[:16] == "inner.lr=0.05 · "
    assert sweep_run_name(composed(), tmp_path / "x" / "0", ["inner.lr=0.05"]) is None  # not a sweep


LIGHT = "print('loaded:', sorted(m for m in ('torch', 'mlflow', 'matplotlib', 'pandas') if m in sys.modules))"


@pytest.mark.parametrize("argv, answer", [
    (["inner.lr=-1"], "inner.lr=-1.0 is not allowed: must be > 0"),
    (["env=ant", "policy=moe", "policy.num_experts=0"], "policy.num_experts=0 is not allowed"),
    (["env=trading", "env.support=later"], "env.support=later is not allowed"),
    (["algorithm=ppo", "algorithm.max_kl=0.1"], "algorithm.max_kl is not a key of algorithm=ppo"),
    (["--cfg", "job", "env=halfcheetah_dir", "algorithm=promp"], "name: promp"),
])
def test_a_refusal_and_cfg_job_answer_without_loading_torch(tmp_path, argv, answer):
    code = (f"import runpy, sys; sys.argv = ['maml_rl', *{argv!r}]\n"
            "try:\n    runpy.run_module('maml_rl', run_name='__main__')\nexcept SystemExit:\n    pass\n" + LIGHT)
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=tmp_path, capture_output=True, text=True)
    assert answer in done.stdout + done.stderr
    assert "loaded: []" in done.stdout
    assert not (tmp_path / "outputs").exists()


def test_every_declared_plugin_has_its_implementation():
    for registry in (ALGORITHMS, ENVS, POLICIES, TRACKERS):
        for entry in list(registry):
            assert registry[entry.name].cls is not None, entry.name  # LookupError if none
    orphan = Registry("algorithm", package="maml_rl.algorithms")
    orphan.declare("sgd")(dataclass(type("SGDConfig", (Settings,), {"__annotations__": {"name": str}, "name": "sgd"})))
    with pytest.raises(LookupError, match="'sgd' has settings but no implementation in maml_rl.algorithms"):
        orphan["sgd"]
    with pytest.raises(ValueError, match="no settings declared"):
        orphan.register("adam")


def test_help_answers_without_loading_torch_and_gives_whole_descriptions(tmp_path):
    code = ("import runpy, sys; sys.argv = ['maml_rl', '--help']; runpy.run_module('maml_rl', run_name='__main__'); "
            + LIGHT)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "loaded: []" in out
    assert "(paper, horizon 200: MAML 97, pretrained 7 at k = 1, oracle about 109)" in out  # not cut at its ": "
    assert "navigation_fig4      The MAML paper's Figure 4 on 2D navigation\n" in out
