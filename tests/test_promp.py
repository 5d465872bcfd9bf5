"""ProMP: PPO's clipped surrogate plus a KL penalty on the pre-update policies."""

import torch
from tensordict import TensorDict

from maml_rl.algorithms.promp import ProMP, ProMPConfig
from maml_rl.core.objective import MetaObjective
from maml_rl.core.params import expand_params
from maml_rl.run.build import build_trainer

from .conftest import TINY, composed, make_objective, on_policy, random_episodes


def objective(policy, num_steps=1, on_policy_supports=False) -> MetaObjective:
    """An on-policy query (ratio 1); supports sampled by ``policy`` itself or by a shifted policy."""
    supports = [random_episodes(policy, seed=k) for k in range(num_steps)]
    if on_policy_supports:  # π_old of every support is the current pre-update policy (θ_o = θ)
        for support in supports:
            dist = policy.distribution(expand_params(policy.params(), support.shape[0]), support["observation"])
            dist = {k: v.detach().expand(*support.shape, v.shape[-1]).clone() for k, v in dist.items()}
            support["dist"] = TensorDict(dist, batch_size=support.shape)
    return on_policy(policy, make_objective(policy, supports, random_episodes(policy, seed=9), lr=0.3,
                                            estimator="lvc"))


def gradient(policy, fn):
    value = fn(policy.params())
    return value, torch.autograd.grad(value, list(policy.parameters()))


def test_at_ratio_one_and_unchanged_pre_update_policies_the_gradient_is_the_policy_gradient(tiny_policy):
    # the KL penalty is at its minimum (0) when θ = θ_o, so its gradient vanishes there, whatever η
    obj = objective(tiny_policy, on_policy_supports=True)
    promp = ProMP(ProMPConfig(kl_coef=10.0, clip_eps=0.2))
    penalised, g_promp = gradient(tiny_policy, lambda p: -promp.loss(obj, obj.adapt(p))[0])
    plain, g_plain = gradient(tiny_policy, lambda p: obj.surrogate_and_kl(obj.adapt(p).adapted)[0])
    torch.testing.assert_close(penalised, plain)
    assert sum(g.abs().sum() for g in g_plain) > 1e-3
    for a, b in zip(g_promp, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_the_inner_kl_gradient_matches_finite_differences_through_two_inner_steps(tiny_policy):
    obj = objective(tiny_policy, num_steps=2)  # supports sampled by another policy: KL > 0
    value, grads = gradient(tiny_policy, lambda p: obj.inner_kl(obj.adapt(p)))
    assert value > 1e-3
    eps = 1e-6
    for param, grad in zip(tiny_policy.parameters(), grads):
        for index in [0, param.numel() // 2, param.numel() - 1]:
            flat = param.data.view(-1)
            saved = flat[index].item()
            flat[index] = saved + eps
            up = obj.inner_kl(obj.adapt(tiny_policy.params())).item()
            flat[index] = saved - eps
            down = obj.inner_kl(obj.adapt(tiny_policy.params())).item()
            flat[index] = saved
            assert abs((up - down) / (2 * eps) - grad.view(-1)[index].item()) < 1e-6


def test_the_penalty_pulls_the_pre_update_policy_back_to_the_one_that_sampled(tiny_policy):
    # supports from another policy: PPO (η = 0) ignores how far θ drifts from θ_o, ProMP with a large η does not
    start = {k: v.detach().clone() for k, v in tiny_policy.state_dict().items()}
    kls = {}
    for eta in (0.0, 5.0):
        tiny_policy.load_state_dict(start)
        obj = objective(tiny_policy)
        promp = ProMP(ProMPConfig(kl_coef=eta, epochs=20, lr=1e-2, max_grad_norm=10.0))
        before = obj.inner_kl(obj.adapt(tiny_policy.params())).item()
        kls[eta] = promp.step(obj, tiny_policy.params(), obj.adapt(tiny_policy.params()), torch.Generator())["inner_kl"]
    assert kls[0.0] > 0.9 * before and kls[5.0] < 0.5 * before  # measured: 0.49 → 0.49 and → 0.07


def test_adaptive_eta_doubles_above_and_halves_below_the_target(tiny_policy):
    for target, factor in ((1e-9, 2.0), (1e9, 0.5)):
        obj = objective(tiny_policy)
        promp = ProMP(ProMPConfig(kl_coef=1e-3, adaptive_kl=True, target_kl=target, epochs=1))
        stats = promp.step(obj, tiny_policy.params(), obj.adapt(tiny_policy.params()), torch.Generator())
        assert stats["kl_coef"] == 1e-3 and promp.kl_coef == 1e-3 * factor
        restored = ProMP(ProMPConfig())
        restored.load_state_dict(promp.state_dict())
        assert restored.kl_coef == promp.kl_coef


def test_promp_trains_through_the_app_and_logs_its_penalty(tmp_path):
    trainer = build_trainer(composed(*TINY, "algorithm=promp"), tmp_path)
    metrics = trainer.meta_step()
    assert {"inner_kl", "kl_coef", "kl", "surrogate_after"} <= set(metrics) and metrics["kl_coef"] == 5e-4
