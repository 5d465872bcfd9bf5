"""The mixture-of-experts policy: its distribution, what the inner loop adapts, load balancing,
activation tracking and comparison with the MLP. Its meta-gradients and Fisher-vector products are
checked with the MLP's (test_meta_gradient.py, test_trpo.py: POLICY_KINDS)."""

import json

import mlflow
import pytest
import torch

from maml_rl import load_policy
from maml_rl.core.params import expand_params
from maml_rl.run.build import build_trainer

from .conftest import TINY, composed, make_objective, random_episodes, tiny_moe
from .test_cli import run_cli, runs_in


def test_the_closed_form_kl_matches_a_monte_carlo_estimate():
    policy = tiny_moe()
    obs = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    old = policy.distribution(expand_params(policy.params(), 2), obs)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    new = policy.distribution(expand_params(policy.params(), 2), obs)
    assert not torch.allclose(old["gate"], new["gate"])  # the gate moved too
    g = torch.Generator().manual_seed(1)
    samples = torch.stack([policy.sample(old, g) for _ in range(50_000)])
    estimate = (policy.log_prob(old, samples) - policy.log_prob(new, samples)).mean(0)
    torch.testing.assert_close(estimate, policy.kl(old, new).detach(), rtol=0.03, atol=4e-3)


@pytest.mark.parametrize("adapt,moved", [("gating", {"gate"}), ("experts", {"experts", "log_std"}),
                                         ("all", {"gate", "experts", "log_std"})])
def test_the_inner_loop_adapts_only_the_chosen_parameters(adapt, moved):
    policy = tiny_moe(adapt=adapt)
    objective = make_objective(policy, [random_episodes(policy, seed=0)], random_episodes(policy, seed=1))
    theta = policy.params()
    adapted = objective.adapt(theta).adapted
    changed = {name.split(".")[0] for name in theta if not torch.equal(adapted[name], theta[name].expand_as(adapted[name]))}
    assert changed == moved


def test_the_load_balancing_term_spreads_a_collapsed_gate():
    """A gate that sends every state to expert 0: with balance_coef the outer objective pays for it and
    its gradient raises the other experts' share; without it nothing pulls the gate back."""
    usage = {}
    for coef in (0.0, 1.0):
        policy = tiny_moe(balance_coef=coef)
        with torch.no_grad():
            policy.gate[-1].bias.copy_(torch.tensor([4.0, -4.0]))
        support, query = random_episodes(policy, seed=0), random_episodes(policy, seed=1)
        query["advantage"].zero_()  # no return to chase: only the penalty can move the gate
        objective = make_objective(policy, [support], query)
        params = policy.params()
        for _ in range(50):
            surrogate, _ = objective.surrogate_and_kl(objective.adapt(params).adapted)
            grads = torch.autograd.grad(surrogate, list(params.values()), allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params.values(), grads):
                    p.add_(0.5 * g)
        dist = policy.distribution(expand_params(params, 3), query["observation"])
        usage[coef] = dist["gate"][..., 1].mean().item()
        if coef:
            assert policy.penalty(dist, query["mask"]) > 0
    assert usage[0.0] < 0.01 and usage[1.0] > 0.1


def test_the_load_balancing_term_lets_experts_specialise_by_task():
    """Importance is summed over the meta-batch: two tasks each on their own expert are balanced,
    both tasks on one expert pay CV² = 1 (two experts, importance (n, 0))."""
    policy = tiny_moe(balance_coef=1.0)
    mask = torch.ones(2, 3, 4, dtype=torch.float64)
    own = torch.eye(2, dtype=torch.float64)[:, None, None, :].expand(2, 3, 4, 2)  # task i → expert i
    same = torch.tensor([1.0, 0.0], dtype=torch.float64).expand(2, 3, 4, 2)
    assert policy.penalty({"gate": own}, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert policy.penalty({"gate": same}, mask).item() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def moe_runs(tmp_path_factory):
    """A MoE and an MLP run on navigation and a MoE run on ant_dir, through the CLI, then one evaluation of both
    navigation runs."""
    cwd = tmp_path_factory.mktemp("moe")
    for name, overrides in {"nav_moe": ["policy=moe", "policy.adapt=gating"], "ant_moe": ["policy=moe", "env=ant_dir"]}.items():
        proc = run_cli(cwd, *TINY, *overrides, f"hydra.run.dir={name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    build_trainer(composed(*TINY), cwd / "nav_mlp").meta_train()  # the MLP to compare with
    proc = run_cli(cwd, *TINY, "mode=evaluate", f"eval.checkpoints=[{cwd / 'nav_moe'},{cwd / 'nav_mlp'}]",
                   "eval.num_tasks=4", "eval.num_steps=1", "eval.episodes_per_task=2", "hydra.run.dir=evaluation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


@pytest.mark.parametrize("run", ["nav_moe", "ant_moe"])
def test_a_moe_run_tracks_expert_activation(moe_runs, run):
    cwd, _ = moe_runs
    state_run = [r for r in runs_in(cwd / "mlflow.db") if r.data.tags.get("output_dir", "").endswith(run)]
    (tracked,) = state_run
    metrics = tracked.data.metrics
    for when in ("pre", "post"):
        usage = [metrics[f"train/moe/usage_{k}_{when}"] for k in range(4)]
        top = [metrics[f"train/moe/top_{k}_{when}"] for k in range(4)]
        assert sum(usage) == pytest.approx(1.0) and sum(top) == pytest.approx(1.0)
        assert 0 < metrics[f"train/moe/gate_entropy_{when}"] <= torch.log(torch.tensor(4.0)).item() + 1e-6
    assert any(name.startswith("train/moe/return_") for name in metrics)
    artifacts = {a.path for a in mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").list_artifacts(tracked.info.run_id)}
    assert "activation.png" in artifacts and (cwd / run / "activation.png").is_file()


def test_a_moe_checkpoint_loads_whole_and_is_compared_with_an_mlp_in_one_table(moe_runs):
    cwd, proc = moe_runs
    policy = load_policy(cwd / "nav_moe" / "checkpoint.pt")
    assert policy.num_experts == 4 and policy.adapt == "gating"
    state = torch.load(cwd / "nav_moe" / "checkpoint.pt", weights_only=True)["policy"]
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in state.items())
    results = json.loads((cwd / "evaluation" / "results.json").read_text())
    assert list(results) == ["maml policy=mlp", "maml policy=moe", "random"]
    assert "maml policy=moe" in proc.stdout and "maml policy=mlp" in proc.stdout
    assert [p.name for p in (cwd / "evaluation").glob("activation_*.png")] == ["activation_maml_policy_moe_s0.png"]
