"""Meta-World ML1 / ML10 (ML1 on the batched simulator by default, one test on the official envs):
a training iteration and an evaluation with success rates through the CLI, success read from ``info`` at any step
(checked against the official env driven by Meta-World's scripted policy), test goals and skills
apart from the training ones, unknown names refused, the weld fix under MuJoCo 4, the presets."""

import json
import pickle

import metaworld
import numpy as np
import pandas as pd
import pytest
import torch
from metaworld.policies import SawyerReachV3Policy

from maml_rl.config import settings
from maml_rl.envs.base import build_family
from maml_rl.envs.metaworld_env import WELD, MetaWorldTasks, benchmark

from .conftest import composed
from .test_cli import run_cli, runs_in

TINY_MW = ["env.horizon=20", "meta_batch_size=2", "episodes_per_task=2", "num_iterations=1", "checkpoint_every=1",
           "threads=1", "policy.hidden_sizes=[16,16]"]


@pytest.mark.parametrize("env, skills", [("ml1", {"reach-v3"}),
                                         ("ml10", {"drawer-open-v3", "door-close-v3", "shelf-place-v3",
                                                   "sweep-into-v3", "lever-pull-v3"})])
def test_a_meta_world_iteration_and_evaluation_report_success_rates(tmp_path, env, skills):
    """One tiny iteration, then an evaluation on test tasks: success rates pre/post in training and
    per method and k (and per skill) in evaluation; ML10's test tasks come from its 5 held-out skills."""
    proc = run_cli(tmp_path, f"env={env}", *TINY_MW, "hydra.run.dir=train")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = runs_in(tmp_path / "mlflow.db")
    assert {"train/success/rate_pre", "train/success/rate_post"} <= set(run.data.metrics)
    proc = run_cli(tmp_path, f"env={env}", *TINY_MW, "mode=evaluate", "eval.checkpoints=[train]", "eval.num_tasks=3",
                   "eval.num_steps=1", "eval.episodes_per_task=2", "eval.include_random=false",
                   "hydra.run.dir=evaluation")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    for k in ("0", "1"):
        rate = results["maml"][k]["success"]["rate"]
        assert 0 <= rate["mean"] <= 1 and rate["ci95"] >= 0 and rate["n_tasks"] == 3
    groups = pd.read_csv(tmp_path / "evaluation" / "results_by_group.csv")
    assert set(groups["group"]) <= skills and "success/rate" in groups.columns
    assert (tmp_path / "evaluation" / "success_curve.png").stat().st_size > 0
    assert "rate" in proc.stdout and "success" in proc.stdout


def test_success_is_read_from_info_at_any_step():
    """Meta-World's scripted reach policy, its actions computed from the official env with the goal
    in view, played through the family's simulator on the same task: the simulator's ``success``
    equals the official ``info["success"]`` at every step, turns 1 within the episode, and the
    episode's success rate is 1."""
    family = build_family(settings(composed("env=ml1", "env.horizon=120", "env.simulator=official"), "env"))
    tasks = family.sample_tasks(1, torch.Generator().manual_seed(0), split="test")
    official = MetaWorldTasks("ML1", "reach-v3", 0)
    official.set_task(family.tasks[0])
    obs, _ = official.reset(seed=0)
    sim = family.env(1, 1)
    sim.set_tasks(tasks)
    td = sim.reset()
    scripted, successes, ours = SawyerReachV3Policy(), [], []
    for _ in range(120):
        seen = obs.copy()
        seen[-3:] = official.current._target_pos  # the scripted policy reads the goal the benchmark hides
        action = scripted.get_action(seen).clip(-1, 1)
        obs, _, _, _, info = official.step(action)
        successes.append(float(info["success"]))
        td["action"] = torch.as_tensor(action, dtype=torch.float32).reshape(1, 1, 4)
        td = sim.step(td)["next"]
        ours.append(float(td["success"].item()))
    assert ours == successes and max(successes) == 1.0 and successes[0] == 0.0
    episodes = {"success": torch.tensor(ours).reshape(1, 1, -1), "mask": torch.ones(1, 1, 120)}
    assert family.episode_statistics(tasks, episodes)["rate"].item() == 1.0


def test_test_goals_and_skills_are_apart_from_the_training_ones():
    ml1 = benchmark("ML1", "reach-v3", 0)
    goals = {split: {tuple(np.round(pickle.loads(t.data)["rand_vec"], 9)) for t in tasks}
             for split, tasks in (("train", ml1.train_tasks), ("test", ml1.test_tasks))}
    assert len(goals["train"]) == len(goals["test"]) == 50 and not goals["train"] & goals["test"]
    ml10 = benchmark("ML10", None, 0)
    assert len(ml10.train_classes) == 10 and len(ml10.test_classes) == 5
    assert not set(ml10.train_classes) & set(ml10.test_classes)
    family = build_family(settings(composed("env=ml10"), "env"))
    g = torch.Generator().manual_seed(0)
    train = family.task_groups(family.sample_tasks(30, g))
    test = family.task_groups(family.sample_tasks(30, g, split="test"))
    assert set(train) <= set(ml10.train_classes) and set(test) <= set(ml10.test_classes) and len(set(test)) > 1


@pytest.mark.parametrize("overrides, message", [
    (["env=ml1", "env.env_name=reach-v9"], "env.env_name=reach-v9 is not a Meta-World skill; one of ["),
    (["env=ml10", "env.env_name=reach-v3"], "env.env_name is not a key of env=ml10 (it is one of env=ml1)"),
    (["env=ml1", "env.horizon=501"], "env.horizon=501 is not allowed: must be in [1, 500]"),
])
def test_unknown_names_and_bad_values_are_refused_before_any_work(tmp_path, overrides, message):
    proc = run_cli(tmp_path, *overrides)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_welds_fit_mujocos_wider_equality_rows():
    """Under MuJoCo 4 a weld's ``eq_data`` row has 12 columns, where Meta-World writes 11 (its own
    method fails there); the family's fix writes Meta-World's values to the first 11."""
    env = MetaWorldTasks("ML1", "reach-v3", 0)
    env.reset(seed=0)
    model = env.current.model
    assert model.eq_data.shape[1] > len(WELD)  # the case the fix exists for
    with pytest.raises(ValueError):
        model.eq_data[0] = np.array(WELD)  # what Meta-World's own reset does
    np.testing.assert_array_equal(model.eq_data[0, :len(WELD)], WELD)
    assert metaworld.ML1.ENV_NAMES  # the installed package is the reference


def test_the_paper_presets_carry_meta_worlds_maml_settings():
    ml1 = composed("experiment=ml1_reach_paper", hydra=True)
    assert (ml1.env.name, ml1.env.env_name, ml1.env.horizon, ml1.meta_batch_size, ml1.episodes_per_task,
            ml1.num_iterations, ml1.algorithm.name, ml1.algorithm.max_kl) == ("ml1", "reach-v3", 500, 25, 10, 2000,
                                                                              "trpo", 0.01)
    assert list(ml1.policy.hidden_sizes) == [128, 128] and ml1.policy.activation == "tanh"
    assert ml1.hydra.sweeper.params.baseline == "maml,pretrained,oracle"
    ml10 = composed("experiment=ml10_paper", hydra=True)
    assert (ml10.env.name, ml10.meta_batch_size, ml10.num_iterations) == ("ml10", 20, 2000)
