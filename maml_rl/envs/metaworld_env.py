"""Meta-World ML1, ML10 and ML45 (Yu et al., CoRL 2019; v3, McLean et al., 2025) on the official
envs, as task families through the gymnasium adapter (``envs/gymnasium_env.py``).

``MetaWorldTasks`` is the MetaEnv protocol over one Meta-World benchmark: its ``sample_tasks``
draws from the benchmark's own goals (the training goals of the training skills, or for
``split="test"`` the test goals: ML1's other 50 goals of the same skill, ML10's 5 held-out
skills), ``set_task`` switches to the skill's env and sets the goal; observations are partial
as Meta-World defines them for meta-learning (the goal hidden), rewards the version
``env.reward_version`` (v2 by default), and every step reports ``info["success"]``, from which
an episode succeeds if any of its steps did (``MetaWorld.episode_statistics``).

metaworld 3.1.1 requires mujoco 3.3.0; this project runs mujoco 4. In 4.0 a weld constraint's
``eq_data`` row has 12 columns (the first 11 as in 3.3: anchor, relative pose, torque scale),
and Meta-World's ``SawyerMocapBase.reset_mocap_welds`` writes its 11 values to the whole row,
which fails. ``fit_weld_columns`` replaces that one method by one that writes the same 11 values
to the first 11 columns; nothing else of Meta-World is changed (docs/metaworld.md).
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium
import numpy as np
import torch
from tensordict import TensorDictBase

from .gymnasium_env import Gymnasium
from .settings import BATCHED_SKILLS, ENVS, MetaWorldConfig

WELD = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0)  # Meta-World's mocap weld: anchor, pose, torque scale


@functools.cache
def fit_weld_columns() -> None:
    """Make Meta-World's mocap welds fit the installed MuJoCo's ``eq_data`` (see the module); once per process."""
    import mujoco
    from metaworld.sawyer_xyz_env import SawyerMocapBase

    def reset_mocap_welds(self) -> None:
        """Meta-World's weld reset, writing its 11 values to the first 11 columns of each weld's row."""
        if self.model.nmocap > 0 and self.model.eq_data is not None:
            for i in range(self.model.eq_data.shape[0]):
                if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                    self.model.eq_data[i, :len(WELD)] = WELD

    SawyerMocapBase.reset_mocap_welds = reset_mocap_welds


@functools.cache
def benchmark(name: str, env_name: str | None, seed: int):
    """Meta-World's benchmark ``name`` (``ML1`` of skill ``env_name``, ``ML10``, ``ML45``) with the goal
    sets of ``seed``, built once per process (its goals are drawn at construction).

    Raises:
        ValueError: metaworld is not installed, or ``env_name`` is not a skill (the valid ones listed).
    """
    try:
        import metaworld
    except ImportError:
        raise ValueError("Meta-World is not installed: pip install --no-deps metaworld==3.1.1 "
                         "(make does it; see docs/metaworld.md)") from None
    fit_weld_columns()
    if name == "ML1":
        if env_name not in metaworld.ML1.ENV_NAMES:
            raise ValueError(f"env.env_name={env_name} is not a Meta-World skill; one of "
                             f"{sorted(metaworld.ML1.ENV_NAMES)}")
        return metaworld.ML1(env_name, seed=seed)
    return getattr(metaworld, name)(seed=seed)


def batched(config: MetaWorldConfig) -> bool:
    """Whether ``config`` runs on the batched simulator: ``env.simulator=batched``, or ``auto`` for an
    ML1 skill that has one (``BATCHED_SKILLS``) with the v2 rewards.

    Raises:
        ValueError: ``env.simulator=batched`` where there is none (names what has one), or
            ``env.vector=async`` (a setting of the official envs) where the batch would run.
    """
    has_one = (config.name == "ml1" and getattr(config, "env_name", None) in BATCHED_SKILLS
               and config.reward_version == "v2")
    what = f"env={config.name}" + (f" env.env_name={config.env_name}" if config.name == "ml1" else "")
    if config.simulator == "batched" and not has_one:
        raise ValueError(f"env.simulator=batched: there is no batched simulator for {what} with "
                         f"env.reward_version={config.reward_version}; batched: env=ml1 with env.env_name one of "
                         f"{list(BATCHED_SKILLS)} and env.reward_version=v2 (or use env.simulator=official)")
    runs_batched = has_one and config.simulator != "official"
    if runs_batched and config.vector != "sync":
        raise ValueError(f"env.vector={config.vector} sets how the official envs step, but {what} runs on the "
                         f"batched simulator (env.simulator={config.simulator}): add env.simulator=official, "
                         "or drop env.vector")
    return runs_batched


class MetaWorldTasks(gymnasium.Env):
    """The MetaEnv protocol over one Meta-World benchmark, a gymnasium env: tasks are
    Meta-World's ``Task`` objects; ``set_task`` builds the skill's official env (kept while the
    skill stays) and sets the goal, hidden from the observation as Meta-World's ML benchmarks
    define it. Observations ``[39]``, actions ``[4]`` in [-1, 1]; ``info["success"]`` every step.
    """

    def __init__(self, name: str, env_name: str | None = None, seed: int = 0, reward_version: str = "v2"):
        self.bench = benchmark(name, env_name, seed)
        self.reward_version = reward_version
        self.classes = {**self.bench.train_classes, **self.bench.test_classes}
        self.skills = list(self.classes)  # the oracle's one-hot, training skills first
        self.current, self.current_skill = None, None
        self.set_task(self.bench.train_tasks[0])
        self.observation_space, self.action_space = self.current.observation_space, self.current.action_space

    def sample_tasks(self, num_tasks: int, split: str = "train") -> list:
        """``num_tasks`` of the benchmark's training (or ``"test"``) tasks, uniformly, without
        replacement while they last (ML1 holds 50 goals per split, ML10 50 per skill)."""
        tasks = self.bench.train_tasks if split == "train" else self.bench.test_tasks
        picked = self.np_random.choice(len(tasks), size=num_tasks, replace=num_tasks > len(tasks))
        return [tasks[i] for i in picked]

    def set_task(self, task) -> None:
        """Make the env ``task``'s skill with its goal, from the next reset."""
        if self.current_skill != task.env_name:
            self.current = self.classes[task.env_name](reward_function_version=self.reward_version)
            self.current_skill = task.env_name
        self.current.set_task(task)

    def task_vector(self, task) -> np.ndarray:
        """The task's parameters for the oracle: its skill one-hot, then Meta-World's ``rand_vec``
        (object and goal positions), zero-padded to 9."""
        import pickle

        skill = np.eye(len(self.skills))[self.skills.index(task.env_name)]
        positions = np.asarray(pickle.loads(task.data)["rand_vec"], dtype=np.float64)[:9]
        return np.concatenate([skill, np.pad(positions, (0, 9 - positions.size))])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # seeds np_random, from which sample_tasks draws
        return self.current.reset(seed=seed, options=options)

    def step(self, action):
        return self.current.step(action)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


class MetaWorld(Gymnasium):
    """A Meta-World benchmark as a task family: the gymnasium adapter over ``MetaWorldTasks``, with
    the success rate as its statistic (an episode succeeds if ``info["success"]`` held at any of
    its steps: ``success/rate``, logged pre and post adaptation in training and, per method and k,
    for the deterministic policy in evaluation), the skill of each task as its group (ML10's
    per-skill rows) and ``success_curve.png`` among its reports.
    """

    benchmark_name = "ML1"
    statistics = ("rate",)
    statistics_name = "success"
    info_keys = ("success",)

    def __init__(self, config: MetaWorldConfig, threads: int = 0):
        env_name = getattr(config, "env_name", None)
        make = functools.partial(MetaWorldTasks, self.benchmark_name, env_name, config.goal_seed, config.reward_version)
        label = f"env={config.name}" + (f" env.env_name={env_name}" if env_name else "")
        super().__init__(config, threads, make=make, label=label)
        self.batched = batched(config)
        self.records: dict[bytes, Any] = {}

    def official_env(self):
        """The probe's official env of the (one) skill: what the batched simulator reads its model,
        constants and reset states from."""
        return self.probe.unwrapped.current

    def reset_record(self, index: int):
        """The official env's state right after its reset to task ``index`` (``sawyer.ResetRecord``),
        recorded once per goal."""
        from .sawyer import record_reset

        task = self.tasks[index]
        key = task.data
        if key not in self.records:
            self.records[key] = record_reset(self.official_env(), task)
        return self.records[key]

    def env(self, num_tasks, episodes_per_task, oracle=False, generator=None):
        """The batched simulator (``sawyer.SawyerBatchEnv``) where ``batched(config)``, else the
        official envs through the adapter.

        Raises:
            ValueError: ``oracle`` for an env that does not declare ``task_vector(task)``.
        """
        if not self.batched:
            return super().env(num_tasks, episodes_per_task, oracle, generator)
        from .sawyer import SawyerBatchEnv

        return SawyerBatchEnv(self, num_tasks, episodes_per_task, oracle, threads=self.threads)

    def task_groups(self, tasks: torch.Tensor) -> list[str]:
        """The skill of each task (``reach-v3``, ...)."""
        return [self.tasks[int(i)].env_name for i in tasks.tolist()]

    def episode_statistics(self, tasks: torch.Tensor, episodes: TensorDictBase) -> dict[str, torch.Tensor]:
        """``rate``: 1 for an episode with a successful step, else 0, ``[task, episode]``."""
        return {"rate": (episodes["success"] * episodes["mask"]).amax(-1).double()}

    def reports(self, evaluation: Any, out_dir) -> tuple[str, list]:
        """``success_curve.png``: each method's success rate (deterministic policy) against k; the
        text: the success rate per skill, method and k."""
        from ..figures import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, rows in evaluation.results.items():
            ks = sorted(rows)
            rate = [rows[k]["success"]["rate"] for k in ks]
            means, ci = np.array([r["mean"] for r in rate]), np.array([r["ci95"] for r in rate])
            if len(ks) == 1:
                ax.axhline(means[0], linestyle="--", color="k", label=f"{method} (no adaptation)")
                continue
            line, = ax.plot(ks, means, marker="o", label=method)
            ax.fill_between(ks, means - ci, means + ci, color=line.get_color(), alpha=0.2)
        ax.set(xlabel="number of gradient steps k", ylabel="success rate", ylim=(-0.05, 1.05),
               title=f"{self.label}: success after k steps")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "success_curve.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        per_skill = evaluation.by_group.pivot_table(index=["group", "method"], columns="k", values="success/rate",
                                                    sort=False)  # one row each: the table as it is
        text = ("success rate per skill (deterministic policy; columns: k):\n"
                + per_skill.to_string(float_format=lambda v: f"{v:.2f}", na_rep="-"))
        return text, [path]


@ENVS.register("ml1")
class ML1(MetaWorld):
    benchmark_name = "ML1"


@ENVS.register("ml10")
class ML10(MetaWorld):
    benchmark_name = "ML10"


@ENVS.register("ml45")
class ML45(MetaWorld):
    benchmark_name = "ML45"
