"""The MuJoCo task families against gymnasium's Ant-v5 / HalfCheetah-v5, and their task distributions."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict

from maml_rl.config import settings
from maml_rl.core.sampler import rollout
from maml_rl.envs.base import build_family
from maml_rl.envs.locomotion import AntDirEnv, AntVelEnv, HalfCheetahDirEnv, HalfCheetahVelEnv, compiler_warnings_to_log
from maml_rl.policies.base import ObservationNormalizer
from maml_rl.policies.gaussian_mlp import GaussianMLPPolicy

from .conftest import composed

FAMILIES = [(AntVelEnv, "Ant-v5"), (AntDirEnv, "Ant-v5"), (HalfCheetahVelEnv, "HalfCheetah-v5"),
            (HalfCheetahDirEnv, "HalfCheetah-v5")]
HORIZON = 200


def reference(gym_id: str, seed: int):
    kwargs = {"include_cfrc_ext_in_observation": False} if gym_id == "Ant-v5" else {}
    with compiler_warnings_to_log(gym_id):
        env = gym.make(gym_id, **kwargs).unwrapped
    env.reset(seed=seed)
    return env


def drive(cls, gym_id, seed, scale=0.5):
    """Both envs from the reference's reset state under the same actions; per-step records."""
    ref = reference(gym_id, seed)
    ours = cls(1, 1, threads=1, dtype=torch.float64)
    task = float(cls.sample_tasks(1, torch.Generator().manual_seed(seed))[0])
    ours.set_tasks(torch.tensor([task]))
    ours.reset()
    ours.reset_state(ref.data.qpos.copy()[None], ref.data.qvel.copy()[None])
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(HORIZON):
        action = rng.uniform(-1, 1, ref.action_space.shape) * scale
        x_before = ref.data.qpos[0]
        # mujoco.rollout starts each call's constraint solver from a zero warm start; so does the reference here
        ref.data.qacc_warmstart[:] = 0
        obs, _, terminated, _, info = ref.step(action)
        step = ours.step(TensorDict({"action": torch.tensor(action)[None, None]}, [1, 1]))["next"]
        records.append({"ref_obs": obs, "obs": step["observation"][0, 0].numpy(), "ref_terminated": terminated,
                        "terminated": bool(step["terminated"]), "ref_velocity": (ref.data.qpos[0] - x_before) / ref.dt,
                        "gym_velocity": info["x_velocity"], "velocity": float(step["velocity"]),
                        "reward": float(step["reward"]), "action": action, "task": task})
        if terminated or records[-1]["terminated"]:
            break
    return records


@pytest.mark.parametrize("cls,gym_id", FAMILIES, ids=lambda x: getattr(x, "__name__", x))
def test_batched_env_matches_gymnasium_for_a_full_episode(cls, gym_id):
    for seed in (0, 1):
        records = drive(cls, gym_id, seed)
        obs = np.stack([r["obs"] for r in records])
        ref_obs = np.stack([r["ref_obs"] for r in records])
        assert obs.shape == ref_obs.shape and obs.shape[1] == (27 if gym_id == "Ant-v5" else 17)
        np.testing.assert_allclose(obs, ref_obs, atol=1e-6, rtol=0)
        assert [r["terminated"] for r in records] == [r["ref_terminated"] for r in records]
        velocity = np.array([r["velocity"] for r in records])
        np.testing.assert_allclose(velocity, [r["ref_velocity"] for r in records], atol=1e-6, rtol=0)
        gym_velocity = np.array([r["gym_velocity"] for r in records])
        if gym_id == "HalfCheetah-v5":  # gymnasium's own x_velocity reads qpos: identical
            np.testing.assert_allclose(velocity, gym_velocity, atol=1e-6, rtol=0)
        else:  # Ant-v5 reads the torso's xpos, which MuJoCo's RK4 integrator leaves at its last
            # intermediate stage: displacement moves between neighbouring steps (< 0.1 m/s at
            # impacts), but the position it integrates to stays within 5 mm of the torso's
            offset = np.cumsum(velocity - gym_velocity) * 0.05
            assert np.abs(offset).max() < 5e-3 and np.abs(velocity - gym_velocity).max() < 0.1


@pytest.mark.parametrize("cls,gym_id", FAMILIES, ids=lambda x: getattr(x, "__name__", x))
def test_rewards_follow_the_maml_benchmark_definitions(cls, gym_id):
    for r in drive(cls, gym_id, seed=2)[:50]:
        v, a, task = r["ref_velocity"], r["action"], r["task"]
        ctrl = np.square(a).sum()
        expected = {AntVelEnv: -abs(v - task) + 1.0 - 0.005 * ctrl + 0.05,
                    AntDirEnv: task * v - 0.005 * ctrl + 0.05,
                    HalfCheetahVelEnv: -abs(v - task) - 0.05 * ctrl,
                    HalfCheetahDirEnv: task * v - 0.05 * ctrl}[cls]
        assert r["reward"] == pytest.approx(expected, abs=1e-6)


def test_task_distributions():
    g = torch.Generator().manual_seed(0)
    for cls, high in [(AntVelEnv, 3.0), (HalfCheetahVelEnv, 2.0)]:
        goals = cls.sample_tasks(2000, g)
        assert goals.shape == (2000,) and goals.min() >= 0 and goals.max() <= high
        assert goals.min() < 0.05 * high and goals.max() > 0.95 * high and abs(goals.mean() - high / 2) < 0.1 * high
    for cls in (AntDirEnv, HalfCheetahDirEnv):
        directions = cls.sample_tasks(2000, g)
        assert set(directions.tolist()) == {-1.0, 1.0} and abs(directions.mean()) < 0.1


def test_oracle_appends_the_task_parameter_and_actions_are_clipped():
    env = HalfCheetahVelEnv(2, 3, oracle=True, threads=1, generator=torch.Generator().manual_seed(0))
    env.set_tasks(torch.tensor([0.5, 1.5]))
    obs = env.reset()["observation"]
    assert obs.shape == (2, 3, 18)
    assert torch.equal(obs[..., -1], torch.tensor([[0.5] * 3, [1.5] * 3]))
    plain = HalfCheetahVelEnv(2, 3, threads=1, generator=torch.Generator().manual_seed(0))
    plain.set_tasks(torch.tensor([0.5, 1.5]))
    assert torch.equal(plain.reset()["observation"], obs[..., :-1])
    twin = HalfCheetahVelEnv(2, 3, threads=1, generator=torch.Generator().manual_seed(0))
    twin.set_tasks(torch.tensor([0.5, 1.5]))
    twin.reset()
    step = plain.step(TensorDict({"action": torch.full((2, 3, 6), 5.0)}, [2, 3]))["next"]
    clipped = twin.step(TensorDict({"action": torch.ones(2, 3, 6)}, [2, 3]))["next"]
    assert torch.equal(step["observation"], clipped["observation"]) and torch.equal(step["reward"], clipped["reward"])
    with pytest.raises(ValueError, match="tasks must have shape"):
        env.set_tasks(torch.zeros(3))


@pytest.mark.parametrize("name", ["ant", "halfcheetah_vel"])
def test_action_normalisation_is_the_identity_for_the_mujoco_actuators(name):
    families = [build_family(settings(composed(f"env={name}", f"env.normalize_actions={n}"), "env"), threads=1)
                for n in (True, False)]
    envs = [f.make_env(2, 2, generator=torch.Generator().manual_seed(0)) for f in families]
    action = 1.5 * torch.randn(2, 2, envs[0].action_spec.shape[-1], generator=torch.Generator().manual_seed(1))
    steps = []
    for env, family in zip(envs, families):
        env.set_tasks(family.sample_tasks(2, torch.Generator().manual_seed(2)))
        env.reset()
        steps.append(env.step(TensorDict({"action": action}, [2, 2]))["next"])
    assert torch.equal(steps[0]["observation"], steps[1]["observation"])
    assert torch.equal(steps[0]["reward"], steps[1]["reward"])


def test_ant_terminates_when_unhealthy_and_the_sampler_masks_afterwards():
    env = AntVelEnv(2, 8, threads=2, generator=torch.Generator().manual_seed(0))
    env.set_tasks(torch.tensor([1.0, 2.0]))
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(env.observation_spec["observation"].shape[-1], 8, (16,), "relu", 1.0)
    params = {k: v.detach().expand(2, *v.shape) for k, v in policy.params().items()}
    episodes = rollout(env, policy, params, 60, torch.Generator().manual_seed(0))
    mask, done = episodes["mask"], episodes["done"]
    lengths = mask.sum(-1)
    assert (lengths < 60).any() and (lengths == 60).any()  # some episodes ended early, some did not
    for t, e in zip(*torch.nonzero(lengths < 60, as_tuple=True)):
        n = int(lengths[t, e])
        assert mask[t, e, :n].all() and not mask[t, e, n:].any() and done[t, e, n - 1]
        assert (episodes["reward"][t, e, n:] == 0).all()
    assert torch.isfinite(episodes["observation"]).all()


def test_reset_noise_comes_from_the_generator():
    a = AntDirEnv(2, 2, threads=1, generator=torch.Generator().manual_seed(5))
    b = AntDirEnv(2, 2, threads=1, generator=torch.Generator().manual_seed(5))
    obs_a, obs_b = a.reset()["observation"], b.reset()["observation"]
    assert torch.equal(obs_a, obs_b) and not torch.equal(obs_a[0, 0], obs_a[0, 1])
    assert (obs_a[..., 0] - 0.75).abs().max() <= 0.1 + 1e-6  # torso height: qpos0 ± the 0.1 reset noise


def test_observation_normalizer_matches_the_statistics_of_all_data():
    norm = ObservationNormalizer(3)
    x = torch.randn(2, 5, 7, 3, dtype=torch.float64) * 4 + 2
    mask = (torch.rand(2, 5, 7) > 0.3).double()
    assert torch.equal(norm(x), x)  # identity before any data
    norm.update(x[:1], mask[:1])
    norm.update(x[1:], mask[1:])
    valid = x[mask.bool()]
    torch.testing.assert_close(norm.mean, valid.mean(0))
    torch.testing.assert_close(norm.var, valid.var(0, unbiased=False))
    z = norm(valid)
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert float(norm.count) == valid.shape[0]
