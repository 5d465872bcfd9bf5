from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensordict import TensorDict

from maml_rl.config import register
from maml_rl.core.maml import InnerLoop
from maml_rl.core.objective import MetaObjective
from maml_rl.policies.gaussian_mlp import GaussianMLPPolicy
from maml_rl.policies.moe import MixtureOfExpertsPolicy

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = ["num_iterations=2", "meta_batch_size=2", "episodes_per_task=2", "env.horizon=10", "checkpoint_every=1",
        "policy.hidden_sizes=[8,8]", "threads=1"]
FIG4_EVAL = ["eval.episodes_per_task=2", "eval.num_val_tasks=2", "eval.lr_grid=[0.05,0.1]"]  # the preset's grid, small
register()


def composed(*overrides, hydra=False):
    """The app's config composed by Hydra with ``overrides``."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def random_episodes(policy: GaussianMLPPolicy, tasks=3, episodes=4, horizon=5, seed=0) -> TensorDict:
    """A fixed batch ``[task, episode, time]`` with a Gaussian behaviour policy near ``policy``."""
    g = torch.Generator().manual_seed(seed)
    dt = next(policy.parameters()).dtype
    shape = (tasks, episodes, horizon)
    obs = torch.randn(*shape, policy.obs_dim, generator=g, dtype=dt)
    action = torch.randn(*shape, policy.act_dim, generator=g, dtype=dt)
    dist = {"loc": 0.1 * torch.randn(*shape, policy.act_dim, generator=g, dtype=dt),
            "log_std": torch.full((*shape, policy.act_dim), -0.2, dtype=dt)}
    mask = torch.ones(shape, dtype=dt)
    mask[0, 0, 3:] = 0  # one episode terminates early
    return TensorDict({
        "observation": obs, "action": action, "dist": TensorDict(dist, batch_size=shape),
        "log_prob": policy.log_prob(dist, action),
        "advantage": torch.randn(shape, generator=g, dtype=dt) * mask,
        "mask": mask, "reward": torch.randn(shape, generator=g, dtype=dt) * mask,
        "done": torch.zeros(shape, dtype=torch.bool),
    }, batch_size=shape)


def make_objective(policy, supports, query, lr=0.5, first_order=False, estimator="maml") -> MetaObjective:
    """The query surrogate of ``policy`` adapted on ``supports`` with one step size ``lr``."""
    inner_loop = InnerLoop(policy, lr, len(supports), first_order, estimator)
    return MetaObjective(inner_loop, supports, query)


@pytest.fixture
def tiny_policy():
    torch.manual_seed(0)
    return GaussianMLPPolicy(obs_dim=3, act_dim=2, hidden_sizes=(5,), activation="tanh", init_std=0.8).double()


def tiny_moe(adapt: str = "all", balance_coef: float = 0.0) -> MixtureOfExpertsPolicy:
    """A float64 mixture of 2 experts (one 3-unit layer each) with a linear gate."""
    torch.manual_seed(0)
    return MixtureOfExpertsPolicy(obs_dim=3, act_dim=2, num_experts=2, hidden_sizes=(3,), gate_hidden_sizes=(),
                                  activation="tanh", temperature=1.0, init_std=0.8, adapt=adapt,
                                  balance_coef=balance_coef).double()


def make_policy(kind: str):
    """The tiny MLP (``mlp``) or mixture of experts adapting everything (``moe``), its gate only
    (``moe-gating``), its experts only (``moe-experts``), or with a load-balancing penalty in the
    outer objective (``moe-balance``)."""
    if kind == "mlp":
        torch.manual_seed(0)
        return GaussianMLPPolicy(obs_dim=3, act_dim=2, hidden_sizes=(5,), activation="tanh", init_std=0.8).double()
    kinds = {"moe": {}, "moe-gating": {"adapt": "gating"}, "moe-experts": {"adapt": "experts"},
             "moe-balance": {"balance_coef": 0.5}}
    return tiny_moe(**kinds[kind])


POLICY_KINDS = ["mlp", "moe", "moe-gating", "moe-experts", "moe-balance"]


def on_policy(policy, objective: MetaObjective) -> MetaObjective:
    """Make the query's behaviour policy the adapted policy itself (θ_old = θ)."""
    query = objective.query
    with torch.no_grad(), torch.enable_grad():
        adapted = {k: v.detach() for k, v in objective.adapt(policy.params()).adapted.items()}
        dist = policy.distribution(adapted, query["observation"])
    dist = {k: v.expand(*query.shape, v.shape[-1]).clone() for k, v in dist.items()}
    query["dist"] = TensorDict(dist, batch_size=query.shape)
    query["log_prob"] = policy.log_prob(dist, query["action"])
    return objective
