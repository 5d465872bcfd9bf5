"""The plug-in points: a policy and an outer loop written here, outside the package, registered from
this module, run through the Trainer, checkpoints and evaluation; the layers' import rules; the
same math as before the reorganisation; checkpoints of the previous layout load, evaluate and resume."""

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from torch import nn

from maml_rl.algorithms import ALGORITHMS, OuterLoopConfig
from maml_rl.config import validate
from maml_rl.core.checkpoint import load_checkpoint
from maml_rl.policies import POLICIES, PolicyConfig
from maml_rl.policies.base import FunctionalPolicy, load_policy
from maml_rl.policies.gaussian_mlp import GaussianMLPPolicy
from maml_rl.run.build import build_trainer
from maml_rl.run.evaluation import evaluate, load_candidates

from .conftest import TINY, composed
from .test_cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
TOY = [o for o in TINY if not o.startswith("policy.")]  # the linear policy has no hidden layers


@dataclass
class LinearGaussianConfig(PolicyConfig):
    name: str = "linear_gaussian"
    init_std: float = 0.5
    rules: ClassVar[dict] = {"init_std": (lambda v: v > 0, "> 0")}


@POLICIES.register("linear_gaussian", LinearGaussianConfig)
class LinearGaussianPolicy(FunctionalPolicy):
    """π(a|s) = N(W s + b, diag(σ²)) with a distribution object from torch.distributions: its Dist
    holds the std (not its log) at every step, unlike the package's MLP."""

    def __init__(self, obs_dim, act_dim, init_std, normalize_observations=False):
        super().__init__(obs_dim, act_dim, normalize_observations, init_std=init_std)
        self.weight = nn.Parameter(torch.zeros(act_dim, obs_dim))
        self.bias = nn.Parameter(torch.zeros(act_dim))
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))

    def forward(self, obs):
        loc = nn.functional.linear(self.normalize(obs), self.weight, self.bias)
        return {"loc": loc, "scale": self.log_std.exp().expand_as(loc)}

    @staticmethod
    def normal(dist):
        return torch.distributions.Normal(dist["loc"], dist["scale"])

    def sample(self, dist, generator):
        return dist["loc"] + dist["scale"] * torch.randn(dist["loc"].shape, generator=generator)

    def mode(self, dist):
        return dist["loc"]

    def log_prob(self, dist, action):
        return self.normal(dist).log_prob(action).sum(-1)

    def kl(self, old, new):
        return torch.distributions.kl_divergence(self.normal(old), self.normal(new)).sum(-1)

    def entropy(self, dist):
        return self.normal(dist).entropy().sum(-1)

    def diagnostics(self, pre, post):
        return {"linear_std": self.log_std.exp().mean().item()}


@dataclass
class GradientAscentConfig(OuterLoopConfig):
    name: str = "gradient_ascent"
    lr: float = 0.05
    report_kl: bool = True
    rules: ClassVar[dict] = {"lr": (lambda v: v > 0, "> 0")}


@ALGORITHMS.register("gradient_ascent", GradientAscentConfig)
class GradientAscent:
    """θ ← θ + lr ∇L(θ) on the query surrogate; counts its steps (its checkpointed state)."""

    progress: ClassVar[dict] = {"steps": "surrogate_after"}  # a figure of its own on the progress bar

    def __init__(self, config):
        self.config, self.steps = config, 0

    def step(self, objective, params, adaptation, generator):
        with torch.enable_grad():
            surrogate, _ = objective.surrogate_and_kl(adaptation.adapted)
            grads = torch.autograd.grad(surrogate, list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p.add_(self.config.lr * g)
        self.steps += 1
        after, kl = objective.evaluate(params)
        metrics = {"surrogate_before": surrogate.item(), "surrogate_after": after}
        return {**metrics, "kl": kl} if self.config.report_kl else metrics

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


ConfigStore.instance().store(group="policy", name="linear_gaussian", node=LinearGaussianConfig)
ConfigStore.instance().store(group="algorithm", name="gradient_ascent", node=GradientAscentConfig)


def test_a_policy_and_an_outer_loop_from_outside_the_package_train_and_evaluate(tmp_path):
    cfg = composed(*TOY, "num_iterations=3", "policy=linear_gaussian", "policy.init_std=0.3",
                   "algorithm=gradient_ascent", "algorithm.lr=0.2")
    validate(cfg)
    trainer = build_trainer(cfg, tmp_path / "run")
    assert isinstance(trainer.policy, LinearGaussianPolicy) and isinstance(trainer.outer_loop, GradientAscent)
    metrics = trainer.meta_step()
    assert abs(metrics["linear_std"] - 0.3) < 0.05 and metrics["kl"] > 0  # the policy's own diagnostics, after a step
    trainer.iteration = 1
    trainer.meta_train()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["optimizer"] == {"steps": 3} and state["config"]["policy"]["name"] == "linear_gaussian"
    policy = load_policy(tmp_path / "run" / "checkpoint.pt")
    assert isinstance(policy, LinearGaussianPolicy) and policy.weight.abs().sum() > 0  # trained, loaded back
    eval_cfg = composed(*TOY, "policy=linear_gaussian", "mode=evaluate", f"eval.checkpoints=[{tmp_path / 'run'}]",
                        "eval.num_tasks=3", "eval.num_steps=2")
    candidates = load_candidates(eval_cfg, "")
    results = evaluate(eval_cfg, candidates, tmp_path / "evaluation").results
    assert list(results) == ["maml", "random"] and list(results["maml"]) == [0, 1, 2]
    assert all(isinstance(c.policy, LinearGaussianPolicy) for c in candidates)
    assert json.loads((tmp_path / "evaluation" / "results.json").read_text())["maml"]["2"]["n_tasks"] == 3


def test_an_outer_loop_that_reports_no_kl_is_refused(tmp_path):
    cfg = composed(*TINY, "algorithm=gradient_ascent", "algorithm.report_kl=false")
    with pytest.raises(TypeError, match="outer loop GradientAscent: step\\(\\) must return metrics with 'kl'"):
        build_trainer(cfg, tmp_path).meta_step()


def test_plugin_rules_are_checked_before_any_work():
    with pytest.raises(ValueError, match=r"algorithm.lr=-1.0 is not allowed: must be > 0"):
        validate(composed("algorithm=gradient_ascent", "algorithm.lr=-1"))
    with pytest.raises(ValueError, match=r"policy.init_std=0.0 is not allowed: must be > 0"):
        validate(composed("policy=linear_gaussian", "policy.init_std=0"))


def test_the_core_and_the_plugins_import_neither_hydra_nor_mlflow():
    code = ("import sys, maml_rl.core.maml, maml_rl.core.objective, maml_rl.core.checkpoint, maml_rl.policies, "
            "maml_rl.algorithms, maml_rl.envs; "
            "print(sorted(m for m in ('hydra', 'mlflow', 'omegaconf') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_default_config_computes_what_it_computed_before_the_reorganisation():
    """20 iterations of the default navigation config, seed 0, one thread: identical pre/post returns and KL."""
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "same_math.py"), "--iterations", "20",
                           "--recorded-first"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "20 of 20 iterations bit-identical" in proc.stdout


def test_checkpoints_of_the_previous_layout_load_evaluate_and_resume(tmp_path):
    nav, cheetah = DATA / "v1_navigation_maml_trpo.pt", DATA / "v1_halfcheetah_vel_oracle_ppo.pt"
    policy = load_policy(cheetah)
    assert isinstance(policy, GaussianMLPPolicy) and float(policy.obs_norm.count) > 0 and policy.obs_dim == 18
    state = load_checkpoint(nav)
    assert "oracle" not in state["config"]["env"] and state["config"]["baseline"]["oracle"] is False
    assert state["config"]["policy"]["name"] == "mlp"
    cfg = composed(*TINY, "env=halfcheetah_vel", f"eval.checkpoints=[{cheetah}]", "eval.num_tasks=2",
                   "eval.include_random=false")
    results = evaluate(cfg, load_candidates(cfg, ""), tmp_path / "cheetah").results
    assert list(results) == ["oracle"] and list(results["oracle"]) == [0]
    proc = run_cli(tmp_path, *TINY, "mode=evaluate", f"eval.checkpoints=[{nav}]", "eval.num_tasks=3",
                   "eval.num_steps=1", "hydra.run.dir=evaluation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(json.loads((tmp_path / "evaluation" / "results.json").read_text())) == ["maml", "random"]
    # resume: the run continues for one more iteration from the stored config and states
    state["config"]["num_iterations"] = 3
    trainer = build_trainer(OmegaConf.create(state["config"]), tmp_path / "resumed")
    trainer.load_state(state)
    trainer.meta_train()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 3
