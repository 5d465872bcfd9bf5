"""The meta-gradient through the inner loop against finite differences (float64)."""

import pytest
import torch
from torch.func import functional_call

from maml_rl.algorithms.trpo import flat, unflat
from maml_rl.objective import MetaObjective

from .conftest import random_episodes


def surrogate_of(objective, theta_flat, like):
    theta = unflat(theta_flat, like)
    surrogate, _ = objective.surrogate_and_kl(objective.adapt(theta).adapted)
    return surrogate


def finite_difference(f, x, eps=1e-6):
    grad = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = eps
        grad[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return grad


@pytest.mark.parametrize("num_steps", [1, 2])
def test_meta_gradient_matches_finite_differences(tiny_policy, num_steps):
    supports = [random_episodes(tiny_policy, seed=s) for s in range(num_steps)]
    query = random_episodes(tiny_policy, seed=10)
    objective = MetaObjective(tiny_policy, supports, query, lr=0.5, first_order=False)
    like = {k: v.detach() for k, v in tiny_policy.params().items()}
    theta = flat(like.values()).requires_grad_()
    (grad,) = torch.autograd.grad(surrogate_of(objective, theta, like), theta)
    with torch.no_grad(), torch.enable_grad():
        expected = finite_difference(lambda x: surrogate_of(objective, x, like).detach(), theta.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-8)
    # the second-order terms matter: the first-order gradient differs
    first_order = MetaObjective(tiny_policy, supports, query, lr=0.5, first_order=True)
    (fo_grad,) = torch.autograd.grad(surrogate_of(first_order, theta, like), theta)
    assert (fo_grad - grad).abs().max() > 1e-4


def test_first_order_gives_the_gradient_at_the_adapted_parameters(tiny_policy):
    supports = [random_episodes(tiny_policy, seed=1)]
    query = random_episodes(tiny_policy, seed=2)
    objective = MetaObjective(tiny_policy, supports, query, lr=0.5, first_order=True)
    params = tiny_policy.params()
    surrogate, _ = objective.surrogate_and_kl(objective.adapt(params).adapted)
    grads = torch.autograd.grad(surrogate, list(params.values()))
    # first-order MAML: mean over tasks of ∇_θ' L_i(θ'_i), each computed on its own
    adapted = {k: v.detach() for k, v in objective.adapt(params).adapted.items()}
    expected = [torch.zeros_like(p) for p in params.values()]
    for i in range(query.shape[0]):
        theta_i = {k: v[i].clone().requires_grad_() for k, v in adapted.items()}
        q = query[i]
        loc, log_std = functional_call(tiny_policy, theta_i, (q["observation"],))
        log_prob = tiny_policy.log_prob(loc[None], log_std[None], q["action"][None])[0]
        ratio = torch.exp(log_prob - q["log_prob"])
        task_surrogate = (ratio * q["advantage"] * q["mask"]).sum() / q["mask"].sum()
        for e, g in zip(expected, torch.autograd.grad(task_surrogate, list(theta_i.values()))):
            e += g / query.shape[0]
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)
