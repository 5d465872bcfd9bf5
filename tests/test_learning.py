"""Real Hydra composition of the app's config, and a short meta-training run that must learn."""

import pytest

from maml_rl.config import ConfigError, validate
from maml_rl.run.build import build_trainer

from .conftest import composed


def test_defaults_are_the_papers_navigation_setting():
    cfg = composed(hydra=True)
    assert (cfg.env.name, cfg.algorithm.name, cfg.inner.name, cfg.baseline.name) == ("navigation", "trpo", "vpg", "maml")
    assert (cfg.meta_batch_size, cfg.episodes_per_task, cfg.env.horizon, cfg.num_iterations) == (20, 20, 100, 500)
    assert (cfg.inner.lr, cfg.inner.num_steps, cfg.inner.first_order, cfg.inner.estimator) == (0.1, 1, False, "lvc")
    assert (cfg.algorithm.max_kl, cfg.algorithm.cg_iters, cfg.algorithm.ls_max_steps) == (0.01, 10, 15)
    assert cfg.algorithm.ls_backtrack_ratio == 0.8 and list(cfg.policy.hidden_sizes) == [100, 100]
    assert cfg.env.normalize_actions and not cfg.env.normalize_observations  # as the MAML code's normalize(env)
    assert cfg.hydra.job.chdir is False


@pytest.mark.parametrize("env,episodes", [("ant", 20), ("ant_dir", 40), ("halfcheetah_vel", 20), ("halfcheetah_dir", 20)])
def test_locomotion_defaults_are_the_papers_and_the_command_line_wins(env, episodes):
    cfg = composed(f"env={env}", "algorithm=ppo")
    assert (cfg.meta_batch_size, cfg.episodes_per_task, cfg.env.horizon, cfg.inner.lr) == (40, episodes, 200, 0.1)
    assert cfg.env.normalize_observations and (cfg.algorithm.epochs, cfg.algorithm.clip_eps) == (5, 0.3)
    cfg = composed(f"env={env}", "meta_batch_size=8", "inner.lr=0.05")
    assert (cfg.meta_batch_size, cfg.env.meta_batch_size, cfg.inner.lr) == (8, 40, 0.05)


def test_validate_names_key_value_and_rule():
    with pytest.raises(ConfigError, match=r"algorithm.fvp_subsample=1.5 is not allowed: must be in \(0, 1\]"):
        validate(composed("algorithm.fvp_subsample=1.5"))
    with pytest.raises(ConfigError, match=r"inner.estimator=dice is not allowed: must be one of \['maml', 'lvc'\]"):
        validate(composed("inner.estimator=dice"))
    validate(composed("inner.num_steps=0"))  # no adaptation is allowed (the pretrained baseline)


@pytest.mark.parametrize("overrides", [[], ["inner.first_order=true"], ["inner.num_steps=2"], ["algorithm=ppo"]])
def test_short_meta_training_improves_post_adaptation_return(tmp_path, overrides):
    cfg = composed("meta_batch_size=10", "episodes_per_task=10", "num_iterations=12", "seed=1", *overrides)
    trainer = build_trainer(cfg, tmp_path)
    first = trainer.meta_step()
    assert first["post_adaptation_return"] < -60  # the untrained policy wanders off
    final = trainer.meta_train()  # mean of the last iterations
    assert final > first["post_adaptation_return"] + 25
    assert (tmp_path / "checkpoint.pt").is_file()
