"""TRPO: Fisher-vector products against the explicit Hessian, the trust region, rejected steps."""

import pytest
import torch

from maml_rl.algorithms.trpo import TRPO, TRPOConfig, conjugate_gradient, fisher_vector_product, flat, unflat

from .conftest import POLICY_KINDS, make_objective, make_policy, on_policy, random_episodes


def on_policy_objective(policy, num_steps, first_order=False, lr=0.5):
    """Support/query batches whose behaviour policy is the adapted policy itself (θ_old = θ)."""
    supports = [random_episodes(policy, seed=s) for s in range(num_steps)]
    query = random_episodes(policy, seed=10)
    return on_policy(policy, make_objective(policy, supports, query, lr=lr, first_order=first_order))


FVP_CASES = [(kind, steps, first_order) for kind in ("mlp", "moe") for steps, first_order in ((1, False), (2, False),
                                                                                         (1, True))]
FVP_CASES += [(kind, 2, False) for kind in POLICY_KINDS if kind not in ("mlp", "moe")]


@pytest.mark.parametrize("kind,num_steps,first_order", FVP_CASES)
def test_fisher_vector_product_equals_kl_hessian(kind, num_steps, first_order):
    policy = make_policy(kind)
    objective = on_policy_objective(policy, num_steps, first_order)
    like = {k: v.detach() for k, v in policy.params().items()}
    theta = flat(like.values())

    def kl_of(x):
        _, kl = objective.surrogate_and_kl(objective.adapt(unflat(x, like)).adapted)
        return kl

    hessian = torch.autograd.functional.hessian(kl_of, theta)
    adaptation = objective.adapt(policy.params())
    fvp = fisher_vector_product(objective, policy.params(), adaptation, fraction=1.0, damping=0.0,
                                generator=torch.Generator().manual_seed(0))
    v = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(1), dtype=theta.dtype)
    torch.testing.assert_close(fvp(v), hessian @ v, rtol=1e-7, atol=1e-10)


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(conjugate_gradient(lambda v: a @ v, b, iters=20), torch.linalg.solve(a, b))


@pytest.mark.parametrize("max_kl", [1e-4, 1e-2, 0.1])
def test_trpo_step_stays_in_trust_region(tiny_policy, max_kl):
    objective = on_policy_objective(tiny_policy, 1)
    before = flat(p.detach() for p in tiny_policy.parameters()).clone()
    trpo = TRPO(TRPOConfig(max_kl=max_kl, fvp_subsample=1.0))
    adaptation = objective.adapt(tiny_policy.params())
    stats = trpo.step(objective, tiny_policy.params(), adaptation, torch.Generator().manual_seed(0))
    surrogate, kl = objective.evaluate(tiny_policy.params())
    assert stats["step_accepted"] == 1.0
    assert kl <= max_kl and stats["kl"] == pytest.approx(kl)
    assert surrogate > stats["surrogate_before"]
    assert not torch.equal(before, flat(p.detach() for p in tiny_policy.parameters()))


def test_rejected_step_leaves_theta_unchanged(tiny_policy):
    objective = on_policy_objective(tiny_policy, 1)
    objective.query["advantage"].zero_()  # no step can improve a surrogate that is identically 0
    before = {k: v.detach().clone() for k, v in tiny_policy.state_dict().items()}
    trpo = TRPO(TRPOConfig(max_kl=0.01, fvp_subsample=1.0, ls_max_steps=3))
    stats = trpo.step(objective, tiny_policy.params(), objective.adapt(tiny_policy.params()),
                      torch.Generator().manual_seed(0))
    assert stats["step_accepted"] == 0.0 and stats["line_search_steps"] == 3
    for k, v in tiny_policy.state_dict().items():
        assert torch.equal(v, before[k])


def test_subsampled_fvp_is_positive_definite(tiny_policy):
    objective = on_policy_objective(tiny_policy, 1)
    fvp = fisher_vector_product(objective, tiny_policy.params(), objective.adapt(tiny_policy.params()),
                                fraction=0.5, damping=1e-5, generator=torch.Generator().manual_seed(0))
    for seed in range(5):
        v = torch.randn(sum(p.numel() for p in tiny_policy.parameters()),
                        generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert v.dot(fvp(v)) > 0
