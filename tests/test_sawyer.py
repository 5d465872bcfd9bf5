"""The batched Meta-World simulator (``envs/sawyer.py``) against the official envs: the same
observations, rewards and success at every step of scripted episodes that grasp and succeed, on
every thread count; a changed reward margin or frame skip fails the comparison; which simulator
``env.simulator`` picks, and the refusals."""

import numpy as np
import pytest
import torch
from metaworld.policies import SawyerPickPlaceV3Policy, SawyerPushV3Policy, SawyerReachV3Policy

from maml_rl.config import settings
from maml_rl.envs import sawyer
from maml_rl.envs.base import build_family
from maml_rl.envs.sawyer import SawyerBatchEnv

from .conftest import composed
from .test_cli import run_cli

SCRIPTED = {"reach-v3": SawyerReachV3Policy, "push-v3": SawyerPushV3Policy, "pick-place-v3": SawyerPickPlaceV3Policy}
NOISE = (0.0, 0.1)  # episode 0 of each task as scripted, episode 1 with seeded noise: different paths


def family_of(skill: str, *overrides: str, threads: int = 1):
    return build_family(settings(composed("env=ml1", f"env.env_name={skill}", *overrides), "env"), threads)


def play(skill: str, steps: int, threads: int = 1, mutate=None) -> dict[str, np.ndarray]:
    """Two test goals × two episodes of Meta-World's scripted policy (goal in view, actions computed
    from the official envs), played through four official envs and the batched simulator side by
    side; ``[step, world]`` arrays of both (``mutate(batch)`` changes the batch before it runs)."""
    family = family_of(skill, threads=threads)
    tasks = family.sample_tasks(2, torch.Generator().manual_seed(0), split="test")
    batch = family.env(2, 2)
    assert isinstance(batch, SawyerBatchEnv) and batch.nthread == min(threads, 4)
    if mutate:
        mutate(batch)
    batch.set_tasks(tasks)
    td = batch.reset()
    officials = []
    for world in range(4):
        env = family.make()
        env.unwrapped.set_task(family.tasks[int(tasks[world // 2])])
        officials.append([env, env.reset(seed=0)[0]])
    rng, scripted = np.random.default_rng(0), SCRIPTED[skill]()
    out = {k: [] for k in ("obs", "obs_b", "reward", "reward_b", "success", "success_b", "near", "grasp")}
    out["obs"].append(np.stack([o for _, o in officials]))
    out["obs_b"].append(td["observation"].reshape(4, -1).numpy())
    for _ in range(steps):
        actions = []
        for world, (env, obs) in enumerate(officials):
            seen = obs.copy()
            seen[-3:] = env.unwrapped.current._target_pos  # the scripted policy reads the goal the benchmark hides
            actions.append(scripted.get_action(seen) + rng.normal(0, NOISE[world % 2], 4))
        actions = np.clip(actions, -1, 1).astype(np.float32)
        steps_ = [env.step(a) for (env, _), a in zip(officials, actions)]
        for pair, s in zip(officials, steps_):
            pair[1] = s[0]
        td["action"] = torch.as_tensor(actions).reshape(2, 2, 4)
        td = batch.step(td)["next"]
        out["obs"].append(np.stack([s[0] for s in steps_]))
        out["reward"].append([s[1] for s in steps_])
        out["success"].append([s[4]["success"] for s in steps_])
        out["near"].append([s[4]["near_object"] for s in steps_])
        out["grasp"].append([s[4]["grasp_success"] for s in steps_])
        out["obs_b"].append(td["observation"].reshape(4, -1).numpy())
        out["reward_b"].append(td["reward"].reshape(4).numpy())
        out["success_b"].append(td["success"].reshape(4).numpy())
    batch.close()
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def differences(run: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest gaps: observations (float32, as both hand them over), rewards relative to max(1, |r|), success."""
    return {"obs": np.abs(run["obs_b"] - run["obs"].astype(np.float32)).max(),
            "reward": (np.abs(run["reward_b"] - run["reward"]) / np.maximum(1.0, np.abs(run["reward"]))).max(),
            "success": np.abs(run["success_b"] - run["success"]).max()}


@pytest.mark.parametrize("skill, steps, threads", [("reach-v3", 60, 2), ("push-v3", 80, 1), ("pick-place-v3", 70, 2)])
def test_the_batch_steps_the_official_envs_numbers(skill, steps, threads):
    """Observations bit-identical (as float32), rewards within 1e-6 relative (float32 rounding of
    the same float64 values computed in another order), success identical, at every step of
    episodes that succeed, and for push and pick-place come within 3 cm of the object (the grasp
    branch of the reward) and, for pick-place, grasp and lift it; one and two threads."""
    run = play(skill, steps, threads)
    gaps = differences(run)
    assert gaps["obs"] == 0.0 and gaps["success"] == 0.0 and gaps["reward"] <= 1e-6, gaps
    assert run["success"][:, ::2].max(0).tolist() == [1.0, 1.0]  # the noiseless episodes succeed
    if skill != "reach-v3":
        assert run["near"].max() == 1.0
    if skill == "pick-place-v3":
        assert run["grasp"][:, ::2].max(0).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("mutation", ["margin", "frame_skip"])
def test_the_comparison_fails_for_a_changed_margin_or_frame_skip(monkeypatch, mutation):
    """The value of the long-tail reward at its margin (0.1 → 0.2), or one physics step fewer per
    policy step: the comparison of ``test_the_batch_steps_the_official_envs_numbers`` then fails."""
    if mutation == "margin":
        monkeypatch.setattr(sawyer, "LONG_TAIL_AT_MARGIN", 0.2)
        gaps = differences(play("reach-v3", 10))
        assert gaps["reward"] > 1e-2 and gaps["obs"] == 0.0
    else:
        gaps = differences(play("reach-v3", 10, mutate=lambda batch: setattr(batch, "substeps", 4)))
        assert gaps["obs"] > 1e-4


def test_the_simulator_setting_picks_and_refuses(tmp_path):
    """``auto``: the batch for ML1's reach, push and pick-place with v2 rewards, the official envs for
    any other skill, for v1 rewards and for ML10; ``batched`` where there is none: refused before
    any work, naming what has one; ``official`` forces the adapter; ``env.vector=async`` (how the
    official envs step) refused where the batch would run."""
    assert family_of("push-v3").batched and not family_of("push-v3", "env.simulator=official").batched
    assert not family_of("door-open-v3").batched and not family_of("reach-v3", "env.reward_version=v1").batched
    proc = run_cli(tmp_path, "env=ml10", "env.simulator=batched")
    assert proc.returncode == 2 and not (tmp_path / "outputs").exists()
    assert "no batched simulator for env=ml10" in proc.stderr and "reach-v3" in proc.stderr
    proc = run_cli(tmp_path, "env=ml1", "env.env_name=door-open-v3", "env.simulator=batched")
    assert proc.returncode == 2 and "env.env_name=door-open-v3" in proc.stderr
    proc = run_cli(tmp_path, "env=ml1", "env.vector=async")  # a setting of the official envs, never silently dropped
    assert proc.returncode == 2 and "env.vector=async sets how the official envs step" in proc.stderr
    assert not family_of("reach-v3", "env.vector=async", "env.simulator=official").batched
