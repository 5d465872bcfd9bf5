"""``env=gymnasium``: a user's MetaEnv-protocol gymnasium env as a task family, checked against the
batched family of the same task (2D navigation) and run through the app."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from maml_rl.config import ConfigError, validate
from maml_rl.run.build import build_inner_loop, build_sampler, family_of, initial_policy

from .conftest import TINY, composed

ROOT = Path(__file__).resolve().parents[1]
POINT = "env.id=tests.gym_point:PointGoal"


def test_the_adapter_gives_the_episodes_of_the_batched_family():
    """The same goals, policy and noise through the gymnasium adapter (one gymnasium env per episode)
    and through the batched torch family: the same support and query episodes, the same adaptation."""
    batches = []
    gym_cfg = composed(*TINY, "env=gymnasium", POINT, "env.horizon=30")
    gym_family = family_of(gym_cfg)
    indices = gym_family.sample_tasks(3, torch.Generator().manual_seed(0))
    goals = torch.tensor(np.stack([gym_family.tasks[int(i)]["goal"] for i in indices]), dtype=torch.float64)
    nav_cfg = composed(*TINY, "env.horizon=30")
    for cfg, family, tasks in ((gym_cfg, gym_family, indices), (nav_cfg, family_of(nav_cfg), goals)):
        generator = torch.Generator().manual_seed(1)
        policy = initial_policy(cfg, family)
        env = family.make_env(3, 4, generator=torch.Generator().manual_seed(9))  # reset seeds: not the action noise's
        sampler = build_sampler(cfg, env, policy, generator)
        inner_loop = build_inner_loop(cfg, policy)
        batches.append(inner_loop.meta_batch(sampler, policy.params(), tasks, differentiable=False))
    adapter, batched = batches
    for a, b in zip([*adapter.supports, adapter.query], [*batched.supports, batched.query]):
        mask = b["mask"]  # after an episode ends, the two pad differently (the vector env resets the instance)
        assert torch.equal(a["mask"], mask)
        torch.testing.assert_close(a["observation"] * mask[..., None], b["observation"] * mask[..., None], rtol=0,
                                   atol=1e-5)  # the gymnasium env sums its positions in float64
        torch.testing.assert_close(a["reward"] * mask, b["reward"] * mask, rtol=0, atol=1e-5)
    assert any((b["mask"] == 0).any() for b in [*adapter.supports, adapter.query])  # some episodes end early
    for name, value in adapter.adaptation.adapted.items():
        torch.testing.assert_close(value, batched.adaptation.adapted[name], rtol=1e-4, atol=1e-5)


def test_async_vector_envs_give_the_episodes_of_sync_ones():
    """``env.vector=async`` (one process per slot, tasks set through ``set_attr`` in each process): the
    same support and query episodes and the same adaptation as the in-process vector env."""
    batches = []
    for vector in ("sync", "async"):
        cfg = composed(*TINY, "env=gymnasium", POINT, "env.horizon=30", f"env.vector={vector}")
        family = family_of(cfg)
        tasks = family.sample_tasks(2, torch.Generator().manual_seed(0))
        policy = initial_policy(cfg, family)
        env = family.make_env(2, 3, generator=torch.Generator().manual_seed(9))
        assert type(env.base_env.vector).__name__ == ("AsyncVectorEnv" if vector == "async" else "SyncVectorEnv")
        sampler = build_sampler(cfg, env, policy, torch.Generator().manual_seed(1))
        batches.append(build_inner_loop(cfg, policy).meta_batch(sampler, policy.params(), tasks, differentiable=False))
        env.base_env.vector.close()
    in_process, in_processes = batches
    for a, b in zip([*in_process.supports, in_process.query], [*in_processes.supports, in_processes.query]):
        for key in ("observation", "reward", "mask", "action"):
            assert torch.equal(a[key], b[key]), key
    for name, value in in_process.adaptation.adapted.items():
        assert torch.equal(value, in_processes.adaptation.adapted[name])


def test_the_same_seed_samples_the_same_tasks_and_the_oracle_sees_them():
    family = family_of(composed("env=gymnasium", POINT))
    first = family.sample_tasks(5, torch.Generator().manual_seed(3))
    again = family.sample_tasks(5, torch.Generator().manual_seed(3))
    assert [family.tasks[int(i)]["goal"].tolist() for i in first] == [family.tasks[int(i)]["goal"].tolist()
                                                                       for i in again]
    env = family.make_env(5, 2, oracle=True)
    env.set_tasks(first)
    obs = env.reset()["observation"]
    assert obs.shape == (5, 2, 4)
    goals = np.stack([family.tasks[int(i)]["goal"] for i in first])
    torch.testing.assert_close(obs[:, 0, 2:], torch.tensor(goals).float())


@pytest.mark.parametrize("env_id,message", [
    ("nowhere.mod:X", "env.id=nowhere.mod:X: no module named 'nowhere'"),
    ("tests.gym_point:Nothing", "env.id=tests.gym_point:Nothing: module 'tests.gym_point' has no 'Nothing'"),
    ("NoSuchEnv-v0", "env.id=NoSuchEnv-v0 is not a registered gymnasium id"),
    ("CartPole-v1", "the env has no sample_tasks or set_task"),
    ("", "env.id= is not allowed: must be a registered gymnasium id or an entry point module:Class"),
])
def test_an_env_that_cannot_be_a_task_family_is_refused_before_any_work(env_id, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(composed("env=gymnasium", f"env.id={env_id}"))


def app(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the env's module, importable from the launch dir
    return subprocess.run([sys.executable, "-m", "maml_rl", "env=gymnasium", POINT, *TINY, *overrides], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_gymnasium_env_trains_evaluates_and_refuses_an_oracle_it_cannot_feed(tmp_path):
    trained = app(tmp_path, "hydra.run.dir=maml")
    assert trained.returncode == 0, trained.stderr[-3000:]
    oracle = app(tmp_path, "baseline=oracle", "hydra.run.dir=oracle")
    assert oracle.returncode == 0, oracle.stderr[-3000:]
    evaluated = app(tmp_path, "mode=evaluate", f"eval.checkpoints=[{tmp_path / 'maml'},{tmp_path / 'oracle'}]",
                    "eval.num_tasks=3", "eval.num_steps=1", "eval.episodes_per_task=2", "hydra.run.dir=evaluation")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    assert list(results) == ["maml", "random", "oracle"] and list(results["maml"]) == ["0", "1"]
    refused = app(tmp_path, "baseline=oracle", "+env.kwargs.declare_task=false", "hydra.run.dir=refused")
    assert refused.returncode == 2 and "baseline=oracle needs env.id=tests.gym_point:PointGoal to declare" in \
        refused.stderr and refused.stderr.count("\n") == 1, refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()
