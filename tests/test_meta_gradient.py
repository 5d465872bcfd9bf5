"""The meta-gradient through the inner loop against finite differences (float64)."""

import pytest
import torch
from torch.func import functional_call, vmap

from maml_rl.algorithms.trpo import flat, unflat
from maml_rl.core import maml as maml_module
from maml_rl.core import objective as objective_module
from maml_rl.core.objective import MetaObjective
from maml_rl.core.sampler import valid_steps
from maml_rl.policies.gaussian_mlp import GaussianMLPPolicy
from maml_rl.run.build import build_trainer

from .conftest import POLICY_KINDS, composed, make_objective, make_policy, random_episodes


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


CASES = [("mlp", steps, estimator) for steps in (1, 2) for estimator in ("maml", "lvc")]
CASES += [("moe", 1, "maml")] + [(kind, 2, "lvc") for kind in POLICY_KINDS if kind != "mlp"]


@pytest.mark.parametrize("kind,num_steps,estimator", CASES)
def test_meta_gradient_matches_finite_differences(kind, num_steps, estimator):
    policy = make_policy(kind)
    supports = [random_episodes(policy, seed=s) for s in range(num_steps)]
    query = random_episodes(policy, seed=10)
    objective = make_objective(policy, supports, query, lr=0.5, first_order=False, estimator=estimator)
    like = {k: v.detach() for k, v in policy.params().items()}
    theta = flat(like.values()).requires_grad_()
    (grad,) = torch.autograd.grad(surrogate_of(objective, theta, like), theta)
    with torch.no_grad(), torch.enable_grad():
        expected = finite_difference(lambda x: surrogate_of(objective, x, like).detach(), theta.detach())
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-8)
    # the second-order terms matter: the first-order gradient differs
    first_order = make_objective(policy, supports, query, lr=0.5, first_order=True, estimator=estimator)
    (fo_grad,) = torch.autograd.grad(surrogate_of(first_order, theta, like), theta)
    assert (fo_grad - grad).abs().max() > 1e-4


def test_first_order_gives_the_gradient_at_the_adapted_parameters(tiny_policy):
    supports = [random_episodes(tiny_policy, seed=1)]
    query = random_episodes(tiny_policy, seed=2)
    objective = make_objective(tiny_policy, supports, query, lr=0.5, first_order=True)
    params = tiny_policy.params()
    surrogate, _ = objective.surrogate_and_kl(objective.adapt(params).adapted)
    grads = torch.autograd.grad(surrogate, list(params.values()))
    # first-order MAML: mean over tasks of ∇_θ' L_i(θ'_i), each computed on its own
    adapted = {k: v.detach() for k, v in objective.adapt(params).adapted.items()}
    expected = [torch.zeros_like(p) for p in params.values()]
    for i in range(query.shape[0]):
        theta_i = {k: v[i].clone().requires_grad_() for k, v in adapted.items()}
        q = query[i]
        dist = functional_call(tiny_policy, theta_i, (q["observation"],))
        log_prob = tiny_policy.log_prob(dist, q["action"])
        ratio = torch.exp(log_prob - q["log_prob"])
        task_surrogate = (ratio * q["advantage"] * q["mask"]).sum() / q["mask"].sum()
        for e, g in zip(expected, torch.autograd.grad(task_surrogate, list(theta_i.values()))):
            e += g / query.shape[0]
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e)


def test_lvc_takes_the_same_step_and_adds_the_sampling_curvature(tiny_policy):
    """At the behaviour policy both inner losses give θ' alike; LVC's meta-gradient adds
    α·(mean_t Â_t ∇log π_t ∇log π_tᵀ)·g for the query gradient g at θ' (Rothfuss et al., 2019)."""
    support = random_episodes(tiny_policy, tasks=1, seed=1)
    params = tiny_policy.params()
    with torch.no_grad():  # the support episodes were sampled by θ itself
        support["log_prob"] = tiny_policy.log_prob(tiny_policy(support["observation"]), support["action"])
    query = random_episodes(tiny_policy, tasks=1, seed=2)
    grads, adapted = {}, {}
    for estimator in ("maml", "lvc"):
        objective = make_objective(tiny_policy, [support], query, lr=0.5, first_order=False, estimator=estimator)
        adaptation = objective.adapt(params)
        adapted[estimator] = flat(adaptation.adapted.values())
        surrogate, _ = objective.surrogate_and_kl(adaptation.adapted)
        grads[estimator] = flat(torch.autograd.grad(surrogate, list(params.values())))
    torch.testing.assert_close(adapted["lvc"], adapted["maml"])
    # the extra term, built from per-step score vectors ∇log π(a_t|s_t)
    mask = support["mask"][0].flatten().bool()
    obs, action = support["observation"][0].flatten(0, 1)[mask], support["action"][0].flatten(0, 1)[mask]
    advantage = support["advantage"][0].flatten()[mask]
    scores = []
    for o, a in zip(obs, action):
        log_prob = tiny_policy.log_prob(tiny_policy(o), a)
        scores.append(flat(torch.autograd.grad(log_prob, list(params.values()))))
    scores = torch.stack(scores)
    curvature = (scores * advantage[:, None]).T @ scores / len(scores)  # mean_t Â_t s_t s_tᵀ
    objective = make_objective(tiny_policy, [support], query, lr=0.5, first_order=True)
    surrogate, _ = objective.surrogate_and_kl(objective.adapt(params).adapted)
    query_grad = flat(torch.autograd.grad(surrogate, list(params.values())))  # first order: g at θ'
    # (I − α H_lvc) g − (I − α H_maml) g with H_lvc = H_maml − mean_t Â_t s_t s_tᵀ
    assert (0.5 * curvature @ query_grad).abs().max() > 1e-3  # a term that matters
    torch.testing.assert_close(grads["lvc"] - grads["maml"], 0.5 * curvature @ query_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", ["mlp", "moe"])
def test_task_chunks_change_no_value(kind):
    """The policy evaluates the task dim in cache-sized chunks: one task per chunk gives the
    meta-gradient and the second-order terms of one whole batch (float64, two inner steps)."""
    policy = make_policy(kind)
    supports = [random_episodes(policy, seed=s) for s in range(2)]
    query = random_episodes(policy, seed=10)
    objective = make_objective(policy, supports, query, lr=0.5, estimator="lvc")
    theta = policy.params()

    def gradients():
        surrogate, kl = objective.surrogate_and_kl(objective.adapt(theta).adapted)
        grads = torch.autograd.grad(surrogate + kl, list(theta.values()), create_graph=True)
        return flat(grads), flat(torch.autograd.grad(flat(grads).pow(2).sum(), list(theta.values())))

    whole = gradients()
    policy.chunk_rows = 1  # one task per chunk
    dist = policy.distribution({k: v.expand(3, *v.shape) for k, v in theta.items()}, query["observation"])
    assert type(dist["loc"].grad_fn).__name__ == "CatBackward0"  # the chunked path ran
    for chunked, expected in zip(gradients(), whole):
        torch.testing.assert_close(chunked, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_the_mlp_on_batched_task_weights_is_vmap_of_its_layers(activation):
    """``GaussianMLPPolicy.tasks_forward`` (batched matrix products over the task dim) against
    ``vmap`` of its own ``nn.Sequential`` per task, normalised observations included: the mean, the
    gradient of a log-likelihood and a Hessian-vector product of it (what the inner loop and the
    Fisher-vector products differentiate), for [task, episode, time], [task, rows] and empty inputs."""
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(obs_dim=6, act_dim=3, hidden_sizes=(16, 8), activation=activation, init_std=0.7,
                               normalize_observations=True)
    policy.observe(torch.randn(4, 5, 6) * 3 + 1, torch.ones(4, 5))
    mean_names = [n for n in policy.params() if n.startswith("mean.")]

    def by_vmap(params, obs):
        layers = {n.removeprefix("mean."): params[n] for n in mean_names}
        loc = vmap(lambda p, o: functional_call(policy.mean, p, (o,)))(layers, policy.normalize(obs))
        return {"loc": loc, "log_std": params["log_std"].reshape(obs.shape[0], *([1] * (obs.dim() - 2)), -1)}

    for shape in ((4, 5, 7, 6), (4, 9, 6), (4, 0, 6)):  # an empty batch too
        theta = {k: (v.detach() + 0.1 * torch.randn(4, *v.shape)).requires_grad_() for k, v in policy.params().items()}
        obs, action = torch.randn(shape), torch.randn(*shape[:-1], 3)
        results = []
        for forward in (policy.tasks_forward, by_vmap):
            dist = forward(theta, obs)
            grads = torch.autograd.grad(policy.log_prob(dist, action).sum(), list(theta.values()), create_graph=True)
            hvp = torch.autograd.grad(grads, list(theta.values()), [torch.ones_like(g) for g in grads])
            results.append((dist["loc"], *grads, *hvp))
        for ours, reference in zip(*results):
            torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-7)
    single = policy(torch.randn(6))  # one parameter copy, through the same batched layers
    assert single["loc"].shape == single["log_std"].shape == (3,)


@pytest.mark.parametrize("kind", POLICY_KINDS)
def test_a_meta_batch_differentiated_by_groups_gives_the_whole_gradient(kind):
    """Past one pass's worth of tasks the outer objective is differentiated group by group
    (each group's inner loop re-run from θ, its loss weighted by its share of the tasks): the
    same surrogate and meta-gradient as one pass over all tasks (float64, two inner steps).
    A policy whose penalty couples the tasks (the mixture's batch balance) is never split."""
    policy = make_policy(kind)
    supports = [random_episodes(policy, seed=s) for s in range(2)]
    query = random_episodes(policy, seed=10)
    objective = make_objective(policy, supports, query, lr=0.5, estimator="lvc")
    theta = policy.params()
    surrogate = lambda obj, adaptation: obj.surrogate_and_kl(adaptation.adapted)[0]
    whole_value, whole_grads = objective.gradient(theta, surrogate, objective.adapt(theta))
    policy.chunk_rows = 20  # one task of 4 episodes × 5 steps per pass: three groups
    groups = objective.groups()
    assert len(groups) == (1 if kind == "moe-balance" else 3)
    value, grads = objective.gradient(theta, surrogate, objective.adapt(theta))
    assert value == pytest.approx(whole_value, rel=1e-12)
    torch.testing.assert_close(flat(grads), flat(whole_grads), rtol=1e-12, atol=1e-14)
    if len(groups) == 3:  # each group holds its own task's episodes
        for i, group in enumerate(groups):
            assert group.num_tasks == 1
            assert torch.equal(group.query["observation"], objective.packed(query)["observation"][i:i + 1])
            assert torch.equal(group.supports[1]["action"], objective.packed(supports[1])["action"][i:i + 1])


@pytest.mark.parametrize("algorithm", [["algorithm=trpo"], ["algorithm=trpo", "algorithm.fvp_subsample=1"],
                                       ["algorithm=ppo"], ["algorithm=promp"]])
def test_a_meta_batch_past_one_pass_is_sampled_without_a_graph_and_updated_the_same(tmp_path, algorithm):
    """Past one pass's worth of tasks the inner loop keeps no graph while sampling; every outer
    loop then re-runs it to differentiate θ'(θ) and takes the update of the one-pass case."""
    thetas = []
    for passes in (1, 4):
        cfg = composed("meta_batch_size=4", "episodes_per_task=2", "env.horizon=10", "policy.hidden_sizes=[8,8]",
                       "threads=1", *algorithm)
        trainer = build_trainer(cfg, tmp_path / str(passes))
        trainer.policy.chunk_rows = 20 * 4 // passes  # 2 episodes × 10 steps per task
        tasks = trainer.family.sample_tasks(4, trainer.generator)
        batch = trainer.inner_loop.meta_batch(trainer.sampler, trainer.policy.params(), tasks)
        assert batch.adaptation.differentiable == (passes == 1)
        trainer.outer_loop.step(MetaObjective(trainer.inner_loop, batch.supports, batch.query),
                               trainer.policy.params(), batch.adaptation, trainer.generator)
        thetas.append(flat(trainer.policy.params().values()).detach())
    assert (thetas[0] - flat(build_trainer(cfg, tmp_path / "0").policy.params().values())).abs().max() > 1e-3  # a real step
    torch.testing.assert_close(thetas[1], thetas[0], rtol=1e-4, atol=1e-6)


def test_losses_on_packed_valid_steps_equal_those_on_the_padded_batch(monkeypatch):
    """Episodes that end early leave padding; the inner loss, the surrogate, the KL and the
    meta-gradient read only the valid steps packed first (``valid_steps``), equal (float64) to the
    same computed on the padded layout."""
    policy = make_policy("mlp")
    supports = [random_episodes(policy, seed=s) for s in range(2)]
    query = random_episodes(policy, seed=10)
    for batch in (*supports, query):  # episodes of 5 steps end after 2 or 3; one episode of task 1 runs out
        batch["mask"][:, :, 3:] = 0
        batch["mask"][:, 1::2, 2:] = 0
        batch["mask"][1, 0] = 1
    assert valid_steps(query).shape[1] == 12 < 4 * 5  # packing acts: the 12 valid steps of task 1, of 20

    def values():
        objective = make_objective(policy, supports, query, lr=0.5, estimator="lvc")
        surrogate, kl = objective.surrogate_and_kl(objective.adapt(policy.params()).adapted)
        grads = torch.autograd.grad(surrogate + kl, list(policy.params().values()))
        return torch.stack([surrogate, kl]), flat(grads)

    packed = values()
    for module in (maml_module, objective_module):  # the same losses on the padded layout
        monkeypatch.setattr(module, "valid_steps", lambda episodes: episodes)
    for got, expected in zip(packed, values()):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
