"""2D navigation dynamics, the sampler's masking, the linear baseline and GAE."""

import math

import pytest
import torch
from tensordict import TensorDict

from maml_rl.config import settings
from maml_rl.core.advantages import baseline_features, compute_advantages, discounted_returns, fit_linear_baseline
from maml_rl.core.params import expand_params
from maml_rl.core.sampler import episode_returns, rollout
from maml_rl.envs.base import build_family
from maml_rl.envs.navigation import Navigation, Navigation2DEnv
from maml_rl.envs.settings import NavigationConfig
from maml_rl.policies.gaussian_mlp import GaussianMLPPolicy

from .conftest import composed


def step(env, td, action):
    td["action"] = torch.as_tensor(action, dtype=torch.float64).expand(*env.batch_size, 2)
    return env.step(td)["next"]


def test_dynamics_clipping_reward_and_termination():
    env = Navigation2DEnv(2, 1, dtype=torch.float64)
    env.set_tasks(torch.tensor([[0.25, -0.1], [0.5, 0.5]], dtype=torch.float64))
    td = env.reset()
    assert torch.equal(td["observation"], torch.zeros(2, 1, 2, dtype=torch.float64))
    td = step(env, td, [0.5, -0.05])  # x clipped to 0.1
    torch.testing.assert_close(td["observation"][:, 0], torch.tensor([[0.1, -0.05]] * 2, dtype=torch.float64))
    expected = -torch.tensor([math.hypot(0.15, 0.05), math.hypot(0.4, 0.55)], dtype=torch.float64)
    torch.testing.assert_close(td["reward"][:, 0, 0], expected)
    assert not td["done"].any()
    td = step(env, td, [0.1, -0.05])  # reaches (0.2, -0.1): 0.05 from goal 0 in x → not done
    assert not td["done"].any()
    td = step(env, td, [0.045, 0.0])  # (0.245, -0.1): |dx| = 0.005 < 0.01, dy = 0 → done for task 0
    assert td["done"][:, 0, 0].tolist() == [True, False]
    torch.testing.assert_close(td["reward"][0, 0, 0], torch.tensor(-0.005, dtype=torch.float64))


@pytest.mark.parametrize("normalize, moved", [(True, [0.05, -0.1]), (False, [0.1, -0.1])])
def test_normalised_actions_are_scaled_to_the_bounds_then_clipped(normalize, moved):
    env = build_family(settings(composed(f"env.normalize_actions={normalize}"), "env")).make_env(2, 1)
    assert env.action_spec.space.high.max().item() == pytest.approx(1.0 if normalize else 0.1)
    env.set_tasks(torch.tensor([[0.25, -0.1], [0.5, 0.5]], dtype=torch.float64))
    td = step(env, env.reset(), [0.5, -3.0])  # normalised: 0.5 → 0.05, -3.0 → -0.3 → clipped to -0.1
    torch.testing.assert_close(td["observation"][:, 0], torch.tensor([moved] * 2))


def test_oracle_observation_carries_the_goal():
    env = Navigation2DEnv(3, 2, oracle=True)
    goals = Navigation(NavigationConfig()).sample_tasks(3, torch.Generator().manual_seed(0))
    env.set_tasks(goals)
    obs = env.reset()["observation"]
    assert obs.shape == (3, 2, 4)
    torch.testing.assert_close(obs[..., 2:], goals[:, None, :].expand(3, 2, 2).float())


def test_task_sampling_range():
    goals = Navigation(NavigationConfig()).sample_tasks(10000, torch.Generator().manual_seed(0))
    assert goals.min() >= -0.5 and goals.max() <= 0.5 and goals.min() < -0.49 and goals.max() > 0.49


def test_rollout_masks_steps_after_termination():
    env = Navigation2DEnv(2, 3)
    env.set_tasks(torch.tensor([[0.3, 0.0], [-0.2, 0.2]]))
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,), activation="relu", init_std=1e-6)
    with torch.no_grad():  # a deterministic policy moving +0.1 in x: reaches (0.3, 0) at step 3
        for p in policy.mean.parameters():
            p.zero_()
        policy.mean[-1].bias.copy_(torch.tensor([0.1, 0.0]))
    episodes = rollout(env, policy, expand_params(policy.params(), 2), horizon=10,
                       generator=torch.Generator().manual_seed(0))
    assert episodes.batch_size == (2, 3, 10)
    assert episodes["mask"][0].sum(-1).tolist() == [3, 3, 3]  # steps 0, 1, 2 valid; then terminated
    assert episodes["mask"][1].sum(-1).tolist() == [10, 10, 10]
    assert episodes["done"][0, :, 2].all() and episodes["done"][1, :, 9].all()
    assert episodes["reward"][0, :, 3:].abs().sum() == 0
    torch.testing.assert_close(episode_returns(episodes)[0], torch.full((3,), -0.3), atol=1e-5, rtol=0)


def test_linear_baseline_recovers_linear_targets():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(3, 4, 6, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 4, 6, dtype=torch.float64)
    mask[0, 0, 4:] = 0
    features = baseline_features(obs, mask)
    weights = torch.randn(3, features.shape[-1], generator=g, dtype=torch.float64)
    targets = torch.einsum("tehf,tf->teh", features, weights)
    fitted = fit_linear_baseline(features, targets, reg_coeff=1e-10)
    torch.testing.assert_close(fitted, targets, rtol=1e-5, atol=1e-6)


def test_discounted_returns_and_advantages():
    rewards = torch.tensor([[[1.0, 2.0, 3.0, 0.0]]], dtype=torch.float64)
    done = torch.tensor([[[False, False, True, False]]])
    returns = discounted_returns(rewards, done, gamma=0.5)
    torch.testing.assert_close(returns[0, 0, :3], torch.tensor([1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0],
                                                               dtype=torch.float64))
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]] * 3], dtype=torch.float64)
    episodes = TensorDict({"observation": torch.randn(1, 3, 4, 2, dtype=torch.float64), "mask": mask,
                           "reward": torch.randn(1, 3, 4, dtype=torch.float64) * mask,
                           "done": torch.tensor([[[False, False, True, False]] * 3])}, batch_size=(1, 3, 4))
    adv = compute_advantages(episodes, gamma=0.99, gae_lambda=1.0)["advantage"]
    assert adv[..., 3].abs().sum() == 0
    valid = adv[mask.bool()]
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-7, rtol=0)
    torch.testing.assert_close(valid.std(unbiased=False), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)
