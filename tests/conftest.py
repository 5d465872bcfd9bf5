from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensordict import TensorDict

from maml_rl.config import register
from maml_rl.policy import GaussianMLPPolicy

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = ["num_iterations=2", "meta_batch_size=2", "episodes_per_task=2", "env.horizon=10", "checkpoint_every=1",
        "policy.hidden_sizes=[8,8]", "threads=1"]
register()


def composed(*overrides, hydra=False):
    """The app's config composed by Hydra with ``overrides``."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def random_episodes(policy: GaussianMLPPolicy, tasks=3, episodes=4, horizon=5, seed=0) -> TensorDict:
    """A fixed batch ``[task, episode, time]`` with a behaviour policy near ``policy``."""
    g = torch.Generator().manual_seed(seed)
    dt = next(policy.parameters()).dtype
    shape = (tasks, episodes, horizon)
    obs = torch.randn(*shape, policy.obs_dim, generator=g, dtype=dt)
    action = torch.randn(*shape, policy.act_dim, generator=g, dtype=dt)
    loc = 0.1 * torch.randn(*shape, policy.act_dim, generator=g, dtype=dt)
    log_std = torch.full((*shape, policy.act_dim), -0.2, dtype=dt)
    mask = torch.ones(shape, dtype=dt)
    mask[0, 0, 3:] = 0  # one episode terminates early
    return TensorDict({
        "observation": obs, "action": action, "loc": loc, "log_std": log_std,
        "log_prob": GaussianMLPPolicy.log_prob(loc, log_std[:, 0, 0], action),
        "advantage": torch.randn(shape, generator=g, dtype=dt) * mask,
        "mask": mask, "reward": torch.randn(shape, generator=g, dtype=dt) * mask,
        "done": torch.zeros(shape, dtype=torch.bool),
    }, batch_size=shape)


@pytest.fixture
def tiny_policy():
    torch.manual_seed(0)
    return GaussianMLPPolicy(obs_dim=3, act_dim=2, hidden_sizes=(5,), activation="tanh", init_std=0.8).double()
