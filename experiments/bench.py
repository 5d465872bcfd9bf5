"""``make bench``: seconds per meta-iteration of the default config, and MuJoCo sampling throughput.

1. Navigation: median seconds per meta-iteration with a breakdown; the reference in the same
   run is the same config with exact Fisher-vector products (``algorithm.fvp_subsample=1``).
2. Ant: simulated env steps per second at the default meta-batch (40 tasks × 20 episodes) with
   the policy in the loop, against (a) gymnasium's ``AsyncVectorEnv`` of ``Ant-v5`` driven by
   the same policy and (b) raw ``mujoco.rollout`` physics with open-loop controls, all measured
   in this run; then one whole ``algorithm=ppo env=ant`` meta-iteration.

Usage: ``python experiments/bench.py [--iterations N] [--warmup N] [--ant-steps N] [override ...]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from maml_rl.config import register, validate
from maml_rl.core.sampler import cores_for, rollout
from maml_rl.envs.locomotion import AntVelEnv, available_threads
from maml_rl.run.build import initial_policy
from maml_rl.run.trainer import Trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ("time_iteration", "time_sampling", "time_inner", "time_outer")


def config(overrides: list[str]):
    """The app's config composed with ``overrides`` and validated."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    return cfg


def measure(overrides: list[str], iterations: int, warmup: int) -> dict[str, float]:
    """Median of each timing over ``iterations`` meta-iterations after ``warmup`` ones."""
    cfg = config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        for _ in range(warmup):
            trainer.meta_step()
        runs = [trainer.meta_step() for _ in range(iterations)]
    return {k: statistics.median(r[k] for r in runs) for k in (*KEYS, "env_steps_per_second")}


def ant_env(cfg, threads: int) -> AntVelEnv:
    """The default ant meta-batch with termination off: every method simulates all 800 × steps."""
    generator = torch.Generator().manual_seed(0)
    env = AntVelEnv(cfg.meta_batch_size, cfg.episodes_per_task, threads=threads, generator=generator)
    env.healthy_z = (-np.inf, np.inf)
    env.set_tasks(env.sample_tasks(cfg.meta_batch_size, generator))
    return env


def ant_throughput(steps: int, threads: int) -> dict[str, float]:
    """Simulated ant steps per second: batched env + policy, AsyncVectorEnv + policy, raw physics.

    The raw reference replays, open loop from the same initial states, the very controls the
    policy chose, so both simulate the same trajectories and differ only by the policy in the loop.
    """
    cfg = config(["env=ant"])
    env = ant_env(cfg, threads)
    policy = initial_policy(cfg, env)
    params = {k: v.detach().expand(cfg.meta_batch_size, *v.shape) for k, v in policy.params().items()}
    generator = torch.Generator().manual_seed(1)
    rollout(env, policy, params, 2, generator)  # warm-up
    env = ant_env(cfg, threads)
    start = time.perf_counter()
    episodes = rollout(env, policy, params, steps, generator)
    ours = episodes["mask"].sum().item() / (time.perf_counter() - start)

    replay = ant_env(cfg, threads)
    replay.reset()
    controls = replay.applied_action(episodes["action"]).reshape(-1, steps, replay.model.nu)
    controls = np.repeat(controls, replay.frame_skip, axis=1)
    out = np.empty((controls.shape[0], controls.shape[1], replay.physics.shape[1]))
    start = time.perf_counter()
    replay.pool.rollout(replay.models, replay.datas, replay.physics, controls, nstep=controls.shape[1], state=out,
                        skip_checks=True)
    raw = controls.shape[0] * steps / (time.perf_counter() - start)

    workers = 4 * threads  # one process per env; a few per core keeps them all busy
    make = lambda: gym.make("Ant-v5", include_cfrc_ext_in_observation=False, terminate_when_unhealthy=False)
    vec = gym.vector.AsyncVectorEnv([make] * workers)
    obs, _ = vec.reset(seed=0)
    vec_steps = 10 * steps  # few envs: more steps for a stable timing
    with torch.no_grad(), cores_for(env):  # the worker processes get the cores, as the physics threads do
        for t in range(10 + vec_steps):
            if t == 10:  # after a warm-up
                start = time.perf_counter()
            action = policy.sample(policy(torch.as_tensor(obs, dtype=torch.float32)), generator)
            obs, *_ = vec.step(action.numpy())
        async_vec = workers * vec_steps / (time.perf_counter() - start)
    vec.close()
    return {"ours": ours, "async": async_vec, "raw": raw, "workers": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ant-steps", type=int, default=50, help="steps per episode in the ant throughput test")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    register()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.iterations} meta-iterations")
    rows = [("default", args.overrides), ("exact FVP (reference)", [*args.overrides, "algorithm.fvp_subsample=1.0"])]
    results = {name: measure(ov, args.iterations, args.warmup) for name, ov in rows}
    print(f"{'config':<24}{'s/iter':>8}{'sampling':>10}{'inner':>8}{'outer':>8}{'env steps/s':>13}")
    for name, r in results.items():
        print(f"{name:<24}{r['time_iteration']:>8.3f}{r['time_sampling']:>10.3f}{r['time_inner']:>8.3f}"
              f"{r['time_outer']:>8.3f}{r['env_steps_per_second']:>13.0f}")
    default, reference = results["default"]["time_iteration"], results["exact FVP (reference)"]["time_iteration"]
    print(f"speed-up of default over the exact-FVP reference: {reference / default:.2f}x")
    print(f"default vs the 0.75 s/iteration target: {default / 0.75:.2f} of the budget")

    threads = available_threads()
    ant = ant_throughput(args.ant_steps, threads)
    print(f"\nant, 40 tasks x 20 episodes x {args.ant_steps} steps, {threads} threads: simulated env steps/s")
    print(f"  batched env + policy (ours)            {ant['ours']:>10.0f}")
    print(f"  gymnasium AsyncVectorEnv + policy (a)  {ant['async']:>10.0f}   ({ant['workers']} processes)")
    print(f"  raw mujoco.rollout, open loop (b)      {ant['raw']:>10.0f}")
    print(f"  ours / (a) = {ant['ours'] / ant['async']:.2f}x (target >= 3x); "
          f"ours / (b) = {ant['ours'] / ant['raw']:.0%} (target >= 80%)")
    ppo = measure(["env=ant", "algorithm=ppo"], iterations=1, warmup=0)
    steps = ppo["env_steps_per_second"] * ppo["time_sampling"]  # at most 320k; fallen ants end early
    print(f"first algorithm=ppo env=ant meta-iteration ({steps / 1e3:.0f}k simulated steps): "
          f"{ppo['time_iteration']:.1f} s (sampling {ppo['time_sampling']:.1f}, inner {ppo['time_inner']:.1f}, "
          f"outer {ppo['time_outer']:.1f})")


if __name__ == "__main__":
    main()
