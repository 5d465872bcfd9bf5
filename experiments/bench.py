"""``make bench``: cost per meta-iteration as the meta-batch grows, and where a MuJoCo iteration goes.

1. Navigation scaling: the default config at 10 / 20 / 40 / 80 tasks per meta-batch, median
   seconds per meta-iteration (sampling / inner / outer), seconds per task and peak memory, each
   size in a fresh process; the per-task cost at 80 tasks against that at 20 (target ≤ 1.1×). The
   reference in the same run is the default config with exact Fisher-vector products
   (``algorithm.fvp_subsample=1``).
2. Ant sampling: simulated env steps per second at the default meta-batch (40 tasks × 20
   episodes) with the policy in the loop, against (a) gymnasium's ``AsyncVectorEnv`` of
   ``Ant-v5`` driven by the same policy and (b) raw ``mujoco.rollout`` physics with open-loop
   controls, all measured in this run.
3. The MuJoCo breakdown at the paper's scale (``env=ant``: 40 tasks × 20 episodes × 200 steps),
   TRPO and PPO: sampling / inner / outer per iteration and the learner's share (target ≤ 15 %).
4. Meta-World (reach, push, pick-place): env steps per second of one official env (random
   actions), of the ``ml1`` family through the gymnasium adapter and on the batched simulator
   with the policy in the loop (one thread and all threads), of whole MAML-TRPO iterations on the
   batched simulator, and of raw ``mujoco.rollout`` on the same compiled model (250 worlds, the
   mocap target and gripper driven open loop): sampling against raw physics (target ≥ 90 %),
   iterations against raw physics (target ≥ 80 %); then where a policy step of push goes (physics,
   observations and rewards, policy and torchrl, against raw physics) at 250 and 1 000 worlds,
   one thread and all. Each Meta-World rate is the median of ``--metaworld-repeats`` runs, each
   run back to back with its raw reference, and each ratio the median over those pairs.

Usage: ``python experiments/bench.py [--iterations N] [--warmup N] [--sizes N ...] [--ant-iterations N]
[--ant-steps N] [--metaworld-steps N] [--metaworld-repeats N] [override ...]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import cache, partial
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from maml_rl.config import register, validate
from maml_rl.core.sampler import cores_for, rollout
from maml_rl.envs.locomotion import AntVelEnv, available_threads
from maml_rl.run.build import build_trainer, family_of, initial_policy

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ("time_iteration", "time_sampling", "time_inner", "time_outer")


def config(overrides: list[str]):
    """The app's config composed with ``overrides`` and validated."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    return cfg


def measure(overrides: list[str], iterations: int, warmup: int) -> dict[str, float]:
    """Median of each timing over ``iterations`` meta-iterations after ``warmup`` ones, in this process."""
    cfg = config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(cfg, Path(tmp))
        for _ in range(warmup):
            trainer.meta_step()
        runs = [trainer.meta_step() for _ in range(iterations)]
    return {k: statistics.median(r[k] for r in runs) for k in (*KEYS, "env_steps_per_second")}


def measure_apart(overrides: list[str], iterations: int, warmup: int) -> dict[str, float]:
    """``measure`` in a fresh process, plus its peak resident memory (``peak_mb``, MiB): one
    configuration's memory, not the largest of all run so far."""
    args = [sys.executable, __file__, "--measure", json.dumps([overrides, iterations, warmup])]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_here(spec: str) -> None:
    """The child side of ``measure_apart``: print the timings and peak memory as one JSON line."""
    register()
    result = measure(*json.loads(spec))
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps(result))


def ant_env(cfg, threads: int) -> AntVelEnv:
    """The default ant meta-batch with termination off: every method simulates all 800 × steps."""
    generator = torch.Generator().manual_seed(0)
    env = AntVelEnv(cfg.meta_batch_size, cfg.episodes_per_task, threads=threads, generator=generator)
    env.healthy_z = (-np.inf, np.inf)
    env.set_tasks(AntVelEnv.sample_tasks(cfg.meta_batch_size, generator))
    return env


def ant_throughput(steps: int, threads: int) -> dict[str, float]:
    """Simulated ant steps per second: batched env + policy, AsyncVectorEnv + policy, raw physics.

    The raw reference replays, open loop from the same initial states, the very controls the
    policy chose, so both simulate the same trajectories and differ only by the policy in the loop.
    """
    cfg = config(["env=ant"])
    env = ant_env(cfg, threads)
    policy = initial_policy(cfg, family_of(cfg))
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


def scaling(sizes: list[int], overrides: list[str], iterations: int, warmup: int) -> None:
    """The navigation scaling table and the exact-FVP reference."""
    print(f"navigation, default config: median of {iterations} meta-iterations after {warmup}, one process per row")
    print(f"{'tasks':>5}{'s/iter':>8}{'ms/task':>9}{'sampling':>10}{'inner':>8}{'outer':>8}"
          f"{'inner/task':>12}{'outer/task':>12}{'peak MB':>9}")
    rows = {n: measure_apart([*overrides, f"meta_batch_size={n}"], iterations, warmup) for n in sizes}
    base = 20 if 20 in rows else sizes[0]
    for n, r in rows.items():
        per = {k: r[f"time_{k}"] / n for k in ("iteration", "inner", "outer")}
        ratio = {k: per[k] / (rows[base][f"time_{k}"] / base) for k in per}
        print(f"{n:>5}{r['time_iteration']:>8.3f}{1e3 * per['iteration']:>9.1f}{r['time_sampling']:>10.3f}"
              f"{r['time_inner']:>8.3f}{r['time_outer']:>8.3f}{ratio['inner']:>11.2f}x{ratio['outer']:>11.2f}x"
              f"{r['peak_mb']:>9.0f}")
    print(f"(inner/task, outer/task: seconds per task against {base} tasks; target <= 1.1x. "
          "peak MB: the process's resident peak; target < 1500 at 80 tasks)")
    exact = measure_apart([*overrides, "algorithm.fvp_subsample=1.0"], iterations, warmup)
    print(f"exact FVP (reference), 20 tasks: {exact['time_iteration']:.3f} s/iter (outer {exact['time_outer']:.3f}); "
          f"speed-up of the default over it: {exact['time_iteration'] / rows[base]['time_iteration']:.2f}x")


def sampling(steps: int) -> None:
    """Ant sampling throughput against AsyncVectorEnv and raw physics."""
    threads = available_threads()
    ant = ant_throughput(steps, threads)
    print(f"\nant, 40 tasks x 20 episodes x {steps} steps, {threads} threads: simulated env steps/s")
    print(f"  batched env + policy (ours)            {ant['ours']:>10.0f}")
    print(f"  gymnasium AsyncVectorEnv + policy (a)  {ant['async']:>10.0f}   ({ant['workers']} processes)")
    print(f"  raw mujoco.rollout, open loop (b)      {ant['raw']:>10.0f}")
    print(f"  ours / (a) = {ant['ours'] / ant['async']:.2f}x (target >= 3x); "
          f"ours / (b) = {ant['ours'] / ant['raw']:.0%} (target >= 80%)")


def mujoco_breakdown(iterations: int) -> None:
    """Where an ant iteration at the paper's scale goes, for TRPO and PPO."""
    print(f"\nenv=ant at the paper's scale (40 tasks x 20 episodes x 200 steps), median of {iterations} "
          "meta-iterations after 1")
    print(f"{'algorithm':<10}{'s/iter':>8}{'sampling':>10}{'inner':>8}{'outer':>8}{'learner':>9}{'env steps':>11}"
          f"{'peak MB':>9}")
    for name in ("trpo", "ppo"):
        r = measure_apart(["env=ant", f"algorithm={name}"], iterations, 1)
        learner = (r["time_inner"] + r["time_outer"]) / r["time_iteration"]
        steps = r["env_steps_per_second"] * r["time_sampling"]  # at most 320k; fallen ants end early
        print(f"{name:<10}{r['time_iteration']:>8.2f}{r['time_sampling']:>10.2f}{r['time_inner']:>8.2f}"
              f"{r['time_outer']:>8.2f}{learner:>9.0%}{steps / 1e3:>10.0f}k{r['peak_mb']:>9.0f}")
    print("(learner = (inner + outer) / iteration; target <= 15%, the rest sampling: physics and the policy's forward)")


def metaworld_official(skill: str, steps: int) -> float:
    """Env steps per second of one official Meta-World env of ``skill``, random actions."""
    from maml_rl.envs.metaworld_env import MetaWorldTasks

    official = MetaWorldTasks("ML1", skill, 0)
    official.reset(seed=0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for t in range(steps * 4):
        if t and t % 500 == 0:  # Meta-World's episodes end at 500 steps
            official.reset(seed=t)
        official.step(rng.uniform(-1, 1, 4).astype(np.float32))
    return steps * 4 / (time.perf_counter() - start)


MW_TASKS, MW_EPISODES = 25, 10  # ml1_reach_paper's meta-batch: 250 worlds a step


def metaworld_policy_sampling(skill: str, steps: int, threads: int, simulator: str, tasks: int = MW_TASKS,
                              parts: dict[str, float] | None = None) -> float:
    """Env steps per second of the ``ml1`` family's sampler, policy in the loop: ``tasks`` tasks × 10
    episodes of ``steps`` steps on ``simulator`` (``batched`` or ``official``) and ``threads`` threads.
    With ``parts`` (batched only), the batch's seconds per policy step go into it: ``physics`` (its
    stepping and kinematics), ``env`` (its whole ``_step``: physics, observations, rewards) and
    ``all`` (the sampler's whole loop: the policy and torchrl's step besides)."""
    cfg = config(["env=ml1", f"env.env_name={skill}", f"env.horizon={steps}", f"env.simulator={simulator}",
                  f"meta_batch_size={tasks}", f"episodes_per_task={MW_EPISODES}", f"threads={threads}",
                  "policy.hidden_sizes=[128,128]"])
    family = family_of(cfg)
    policy = initial_policy(cfg, family)
    env = family.make_env(tasks, MW_EPISODES, generator=torch.Generator().manual_seed(0))
    env.set_tasks(family.sample_tasks(tasks, torch.Generator().manual_seed(0)))
    params = {k: v.detach().expand(tasks, *v.shape) for k, v in policy.params().items()}
    if parts is not None:
        base = getattr(env, "base_env", env)
        base._run, base._step = timed(base._run, parts, "physics"), timed(base._step, parts, "env")
    with torch.no_grad():
        start = time.perf_counter()
        episodes = rollout(env, policy, params, steps, torch.Generator().manual_seed(1))
        elapsed = time.perf_counter() - start
    env.close()
    if parts is not None:
        parts["all"] = elapsed
        parts.update({k: v / steps for k, v in parts.items()})
    return episodes["mask"].sum().item() / elapsed


def timed(call, into: dict[str, float], key: str):
    """``call`` that adds its wall time to ``into[key]``."""
    def wrapper(*args):
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            into[key] = into.get(key, 0.0) + time.perf_counter() - start
    return wrapper


@cache
def official_start(skill: str):
    """The official ``skill`` env (ML1, seed 0) right after its reset, that state
    (``mjSTATE_FULLPHYSICS``) and its mocap target [3]; built once per process, since every raw
    measurement starts from it (the env is only read afterwards)."""
    import mujoco

    from maml_rl.envs.metaworld_env import MetaWorldTasks

    official = MetaWorldTasks("ML1", skill, 0)
    official.reset(seed=0)
    env = official.current
    physics = np.empty(mujoco.mj_stateSize(env.model, mujoco.mjtState.mjSTATE_FULLPHYSICS))
    mujoco.mj_getState(env.model, env.data, physics, mujoco.mjtState.mjSTATE_FULLPHYSICS)
    return env, physics, env.data.mocap_pos[0].copy()


def metaworld_raw(skill: str, steps: int, threads: int, tasks: int = MW_TASKS) -> float:
    """Policy steps per second of raw ``mujoco.rollout`` on the skill's compiled model: ``tasks`` × 10 worlds
    from the official reset state, the gripper and the mocap target driven open loop (a random
    walk of the target, as actions would move it), ``frame_skip`` physics steps per policy step."""
    import mujoco
    from mujoco import rollout as mj_rollout

    env, state, mocap_pos = official_start(skill)
    model, skip, worlds = env.model, env.frame_skip, tasks * MW_EPISODES
    controls_spec = mujoco.mjtState.mjSTATE_CTRL | mujoco.mjtState.mjSTATE_MOCAP_POS | mujoco.mjtState.mjSTATE_MOCAP_QUAT
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.uniform(-0.01, 0.01, (worlds, steps, 3)), axis=1) + mocap_pos
    controls = np.zeros((worlds, steps, skip, mujoco.mj_stateSize(model, controls_spec)))
    controls[..., 0] = rng.uniform(-1, 1, (worlds, steps, 1))
    controls[..., 1] = -controls[..., 0]
    controls[..., 2:5] = np.clip(walk, env.mocap_low, env.mocap_high)[:, :, None]
    controls[..., 5:9] = (1.0, 0.0, 1.0, 0.0)
    controls = controls.reshape(worlds, steps * skip, -1)
    out = np.empty((worlds, steps * skip, state.size))
    with mj_rollout.Rollout(nthread=threads) as pool:
        start = time.perf_counter()
        pool.rollout([model] * worlds, [mujoco.MjData(model) for _ in range(threads)], np.tile(state, (worlds, 1)),
                     controls, control_spec=controls_spec, nstep=steps * skip, state=out, skip_checks=True)
        return worlds * steps / (time.perf_counter() - start)


def paired(sample, raw, repeats: int) -> tuple[float, float, float]:
    """Medians of ``sample()``, ``raw()`` and their ratio over ``repeats`` pairs, each pair run back
    to back: on a shared machine whose speed drifts by tens of percent between minutes, the ratio
    of one pair is steadier than either rate."""
    pairs = [(sample(), raw()) for _ in range(repeats)]
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(a / b for a, b in pairs))


def metaworld_sampling(steps: int, repeats: int, iterations: int = 3) -> None:
    """Meta-World: the official env, the batched simulator (sampling and whole MAML-TRPO
    iterations) and raw physics, side by side, one thread and all threads."""
    cores = available_threads()
    print(f"\nMeta-World, episodes of {steps} steps, {MW_TASKS} tasks x {MW_EPISODES} episodes: env steps/s "
          f"(policy steps, frame skip 5 physics steps each); 1 thread / {cores} threads; medians of {repeats} "
          "runs, each ratio over pairs run back to back")
    print(f"{'skill':<15}{'official':>10}{'adapter':>9}{'batched+policy':>17}{'raw physics':>15}{'iteration':>11}"
          f"{'sampling/raw':>14}{'iteration/raw':>15}{'batched/official':>18}")
    for skill in ("reach-v3", "push-v3", "pick-place-v3"):
        official = metaworld_official(skill, steps)
        adapter = metaworld_policy_sampling(skill, steps, 1, "official", tasks=2)  # the official envs are slow
        batched, raw, ratio = {}, {}, {}
        for n in sorted({1, cores}):  # one measurement on a one-core machine
            batched[n], raw[n], ratio[n] = paired(partial(metaworld_policy_sampling, skill, steps, n, "batched"),
                                                  partial(metaworld_raw, skill, steps, n), repeats)
        it, _, it_ratio = paired(partial(metaworld_iteration, skill, steps, cores, iterations),
                                 partial(metaworld_raw, skill, steps, cores), repeats)
        print(f"{skill:<15}{official:>10.0f}{adapter:>9.0f}{batched[1]:>8.0f} /{batched[cores]:>6.0f}"
              f"{raw[1]:>7.0f} /{raw[cores]:>6.0f}{it:>11.0f}{ratio[1]:>8.0%} /{ratio[cores]:>4.0%}"
              f"{it_ratio:>15.0%}{batched[1] / official:>17.1f}x")
    print("(official and adapter: one thread, the adapter on 2 tasks x 10 episodes; raw: mujoco.rollout of the same "
          "model and as many worlds, open loop; "
          "iteration: whole MAML-TRPO iterations, all threads, env steps of support and query over the "
          "iteration's wall time)")
    metaworld_parts(steps, cores, repeats)


def metaworld_iteration(skill: str, steps: int, threads: int, iterations: int) -> float:
    """Env steps per second of whole MAML-TRPO iterations on the batched simulator: support and query
    steps over the iteration's wall time (median of ``iterations`` after one)."""
    whole = measure(["env=ml1", f"env.env_name={skill}", f"env.horizon={steps}", f"meta_batch_size={MW_TASKS}",
                     f"episodes_per_task={MW_EPISODES}", f"threads={threads}", "env.normalize_observations=true",
                     "policy.hidden_sizes=[128,128]", "policy.activation=tanh"], iterations, 1)
    return whole["env_steps_per_second"] * whole["time_sampling"] / whole["time_iteration"]


def push_parts(steps: int, threads: int, tasks: int, runs: list[dict[str, float]]) -> float:
    """``metaworld_policy_sampling`` of push-v3 on the batch, its parts appended to ``runs``."""
    runs.append({})
    return metaworld_policy_sampling("push-v3", steps, threads, "batched", tasks, runs[-1])


def metaworld_parts(steps: int, cores: int, repeats: int) -> None:
    """Where a policy step of push-v3 goes, and sampling against raw physics as the batch grows,
    one thread and all: the costs that do not grow with the worlds (the policy, the numpy around
    the physics) weigh less in a larger batch. Medians of ``repeats`` runs, as ``paired``."""
    print("\npush-v3, ms per policy step: physics (stepping + kinematics) / observations, rewards / "
          "policy + torchrl + sampler / raw mujoco.rollout; sampling/raw")
    for threads in sorted({1, cores}):
        for tasks in (MW_TASKS, 4 * MW_TASKS):
            runs: list[dict[str, float]] = []
            _, raw, ratio = paired(partial(push_parts, steps, threads, tasks, runs),
                                   partial(metaworld_raw, "push-v3", steps, threads, tasks), repeats)
            part = {k: statistics.median(r[k] for r in runs) * 1e3 for k in ("physics", "env", "all")}
            worlds = tasks * MW_EPISODES
            print(f"  {threads} thread(s), {worlds:>5} worlds: {part['physics']:6.2f} / "
                  f"{part['env'] - part['physics']:5.2f} / {part['all'] - part['env']:5.2f} / "
                  f"raw {worlds / raw * 1e3:6.2f}; sampling/raw {ratio:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40, 80], help="meta-batch sizes to scale over")
    parser.add_argument("--ant-iterations", type=int, default=3, help="ant meta-iterations per outer loop (0: skip)")
    parser.add_argument("--ant-steps", type=int, default=50, help="steps per episode in the ant throughput test")
    parser.add_argument("--metaworld-steps", type=int, default=200, help="steps per episode on Meta-World (0: skip)")
    parser.add_argument("--metaworld-repeats", type=int, default=3, help="runs per Meta-World measurement (medians)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child process of measure_apart
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.metaworld_repeats < 1:
        parser.error(f"--metaworld-repeats must be >= 1, got {args.metaworld_repeats}")
    if args.measure:
        return measure_here(args.measure)
    register()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    scaling(args.sizes, args.overrides, args.iterations, args.warmup)
    sampling(args.ant_steps)
    if args.ant_iterations:
        mujoco_breakdown(args.ant_iterations)
    if args.metaworld_steps:
        metaworld_sampling(args.metaworld_steps, args.metaworld_repeats)


if __name__ == "__main__":
    main()
