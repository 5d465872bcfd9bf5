"""MAML-PPO: the clipped surrogate through the inner loop, and the Adam meta-update."""

import pytest
import torch

from maml_rl.algorithms.ppo import PPO, PPOConfig
from maml_rl.core.objective import MetaObjective
from maml_rl.run.build import build_trainer

from .conftest import TINY, composed, make_objective, on_policy, random_episodes


def objective_with_ratio(policy, ratio: float, advantage_sign: float = 0.0) -> MetaObjective:
    """Query whose behaviour log-probs make π_θ'(θ)/π_old equal ``ratio`` at the current θ."""
    support, query = random_episodes(policy, seed=0), random_episodes(policy, seed=1)
    objective = on_policy(policy, make_objective(policy, [support], query))
    query["log_prob"] = query["log_prob"] - torch.log(torch.tensor(ratio, dtype=query["log_prob"].dtype))
    if advantage_sign:
        query["advantage"] = advantage_sign * query["advantage"].abs()
    return objective


def meta_gradient(policy, objective: MetaObjective, clip_eps=None):
    surrogate, _ = objective.surrogate_and_kl(objective.adapt(policy.params()).adapted, clip_eps=clip_eps)
    return surrogate, torch.autograd.grad(surrogate, list(policy.parameters()))


def test_at_ratio_one_the_clipped_gradient_is_the_policy_gradient(tiny_policy):
    objective = objective_with_ratio(tiny_policy, 1.0)
    plain_value, plain = meta_gradient(tiny_policy, objective)
    clipped_value, clipped = meta_gradient(tiny_policy, objective, clip_eps=0.2)
    torch.testing.assert_close(clipped_value, plain_value)
    assert sum(g.abs().sum() for g in plain) > 1e-3
    for a, b in zip(clipped, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_clipping_stops_rewarding_ratios_past_one_plus_minus_eps(tiny_policy):
    # A > 0 and r = 1.5 > 1 + ε: the objective is flat (1 + ε)·A, nothing more to gain by raising r
    value, grads = meta_gradient(tiny_policy, objective_with_ratio(tiny_policy, 1.5, +1.0), clip_eps=0.2)
    q = objective_with_ratio(tiny_policy, 1.5, +1.0).query
    expected = ((1.2 * q["advantage"] * q["mask"]).sum((1, 2)) / q["mask"].sum((1, 2))).mean()
    torch.testing.assert_close(value, expected)
    assert all(g.abs().max() == 0 for g in grads)
    # A < 0 and r = 0.5 < 1 − ε: likewise flat below
    _, grads = meta_gradient(tiny_policy, objective_with_ratio(tiny_policy, 0.5, -1.0), clip_eps=0.2)
    assert all(g.abs().max() == 0 for g in grads)
    # A < 0 and r = 1.5: a worse ratio is still penalised in full (the pessimistic bound)
    objective = objective_with_ratio(tiny_policy, 1.5, -1.0)
    _, clipped = meta_gradient(tiny_policy, objective, clip_eps=0.2)
    _, plain = meta_gradient(tiny_policy, objective)
    for a, b in zip(clipped, plain):
        torch.testing.assert_close(a, b)


def test_ppo_step_improves_the_surrogate_and_checkpoints_adam(tiny_policy):
    objective = objective_with_ratio(tiny_policy, 1.0)
    ppo = PPO(PPOConfig(epochs=4, lr=1e-2, clip_eps=0.2, max_grad_norm=10.0))
    before = [p.detach().clone() for p in tiny_policy.parameters()]
    stats = ppo.step(objective, tiny_policy.params(), objective.adapt(tiny_policy.params()), torch.Generator())
    assert stats["surrogate_after"] > stats["surrogate_before"] and stats["kl"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, tiny_policy.parameters()))
    state = ppo.state_dict()
    restored = PPO(PPOConfig(epochs=4, lr=1e-2))
    restored.load_state_dict(state)
    restored._bind(tiny_policy.params())
    for k, v in state["state"].items():
        torch.testing.assert_close(restored.state_dict()["state"][k]["exp_avg"], v["exp_avg"])


@pytest.mark.parametrize("baseline", ["maml", "pretrained", "oracle", "random"])
@pytest.mark.parametrize("first_order", [False, True])
def test_ppo_trains_every_baseline_on_a_mujoco_family(tmp_path, baseline, first_order):
    cfg = composed(*TINY, "algorithm=ppo", "env=ant_dir", f"baseline={baseline}", f"inner.first_order={first_order}",
                   "algorithm.epochs=2")
    trainer = build_trainer(cfg, tmp_path)
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    trainer.meta_train()
    changed = any(not torch.equal(a, p) for a, p in zip(before, trainer.policy.parameters()))
    assert changed == (baseline != "random")  # random: the initialisation, never trained
    assert trainer.policy.obs_dim == 27 + (baseline == "oracle")
