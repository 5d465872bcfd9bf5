"""``mode=evaluate``: adaptation curves of MAML and its baselines on fresh tasks.

Protocol of Finn et al. (2017), Section 5.3 and Figure 4: on ``eval.num_tasks`` tasks drawn
from an evaluation stream disjoint from every training seed, for k = 0..``eval.num_steps``
collect ``eval.episodes_per_task`` episodes with the current parameters, record each task's mean
return, then take one step of the inner loop (``inner.estimator``) of size α_k on those episodes,
through the same ``MetaLearner`` as training. α_k comes from ``eval.lr`` (the paper's 0.1 then
0.05 on navigation), or, with ``eval.lr_grid``, is chosen per method on validation tasks
(``select_step_sizes``). The oracle is evaluated at k = 0 only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict

from ..config import SEED_LIMIT
from ..core.checkpoint import load_checkpoint
from ..core.maml import Adaptation
from ..core.sampler import episode_returns
from ..envs import ENVS
from ..policies import Policy, policy_from_state
from .build import build_env, build_learner, build_sampler, flatten, initial_policy, resolve_checkpoint, task_conditions
from .report import (
    add_paired,
    metric_name,
    plot_activation,
    plot_curves,
    plot_equity,
    plot_trajectories,
    summarize,
    write_per_task,
    write_tables,
)

log = logging.getLogger(__name__)

METHODS = ("maml", "pretrained", "random", "oracle")


class EvaluationError(ValueError):
    """A checkpoint that cannot be evaluated; the message names the file and the mismatch."""


@dataclass
class Candidate:
    """One policy to evaluate: its method (baseline name), policy, the observation (oracle) and
    action space (normalised or not) it was trained with, source, MLflow run id, training seed,
    and its label: the method and the sweep overrides that set it apart (checkpoints that share
    a label are seeds of one setting, aggregated)."""

    method: str
    policy: Policy
    oracle: bool
    normalize_actions: bool
    source: str
    run_id: str | None = None
    seed: int = 0
    label: str = ""
    config: dict = field(default_factory=dict)  # the training config (empty for the random initialisation)

    def __post_init__(self):
        self.label = self.label or self.method


def evaluation_generator(seed: int) -> torch.Generator:
    """The task/noise stream of evaluation seed ``seed``: torch seed 2**31 + seed, never a training seed."""
    return torch.Generator().manual_seed(SEED_LIMIT + seed)


def load_candidate(reference: str, cfg: DictConfig, tracking_uri: str) -> Candidate:
    """Load and check one checkpoint against the evaluation env.

    Raises:
        EvaluationError: missing file, another env, or an observation size that does not fit.
    """
    try:
        path = resolve_checkpoint(reference, tracking_uri)
        state = load_checkpoint(path)
        policy = policy_from_state(state)
    except (ValueError, RuntimeError, OSError) as err:  # missing, unreadable or not a checkpoint
        message = str(err) if reference in str(err) else f"checkpoint {reference}: {err}"
        raise EvaluationError(message) from err
    if state["env"] != cfg.env.name:
        raise EvaluationError(f"checkpoint {path} was trained on env {state['env']!r}, "
                              f"but the evaluation env is {cfg.env.name!r}")
    oracle = bool(state.get("oracle", False))
    obs_dim = build_env(cfg, 1, 1, oracle).observation_spec["observation"].shape[-1]
    if policy.obs_dim != obs_dim:
        raise EvaluationError(f"checkpoint {path} expects observations of size {policy.obs_dim}, "
                              f"env {cfg.env.name!r} (oracle={oracle}) gives {obs_dim}")
    return Candidate(state["baseline"], policy, oracle, state["config"]["env"]["normalize_actions"], str(path),
                     state.get("mlflow_run_id"), state["config"].get("seed", 0), config=state["config"])


def random_candidate(cfg: DictConfig) -> Candidate:
    """The untrained policy of seed ``cfg.seed`` (the same initialisation a training run starts from)."""
    policy = initial_policy(cfg, build_env(cfg, 1, 1, False))
    return Candidate("random", policy, False, cfg.env.normalize_actions, f"random initialisation, seed {cfg.seed}")


def held_out_tasks(cfg: DictConfig) -> torch.Tensor:
    """The ``eval.num_tasks`` test tasks of evaluation seed ``eval.seed``: the env's ``"test"`` split
    (held-out windows of recorded data) drawn from ``evaluation_generator``."""
    generator = evaluation_generator(cfg.eval.seed)
    return build_env(cfg, 1, 1, False).sample_tasks(cfg.eval.num_tasks, generator, split="test")


def validation_generator(seed: int) -> torch.Generator:
    """The validation stream of evaluation seed ``seed``: torch seed 2**32 + seed, disjoint from the
    test tasks' stream (``evaluation_generator``) and from every training seed."""
    return torch.Generator().manual_seed(2 * SEED_LIMIT + seed)


def _setup(candidate: Candidate, cfg: DictConfig, tasks: torch.Tensor, generator: torch.Generator):
    """The sampler of ``candidate`` on ``tasks`` (``eval.episodes_per_task`` each) and its detached θ."""
    env = build_env(cfg, tasks.shape[0], cfg.eval.episodes_per_task, candidate.oracle, generator,
                    candidate.normalize_actions)
    sampler = build_sampler(cfg, env, candidate.policy, generator)
    sampler.set_tasks(tasks)
    return sampler, {n: v.detach() for n, v in candidate.policy.params().items()}


@dataclass
class Curve:
    """One candidate's adaptation on the test tasks: ``returns`` ``[K + 1, task]``; for k = 0 and
    k = K the observations of each task's first episode ``[task, time, obs_dim]`` with their masks
    (``paths``); the activation by task condition after the last step (``None`` for a policy
    without parts); and θ_0..θ_K, each with a leading task dim (``params``)."""

    returns: torch.Tensor
    paths: list[tuple[torch.Tensor, torch.Tensor]]
    activation: dict | None
    params: list[dict[str, torch.Tensor]]


def adaptation_curve(candidate: Candidate, cfg: DictConfig, tasks: torch.Tensor, step_sizes: list[float],
                     generator: torch.Generator) -> Curve:
    """Mean return per task after k = 0..K inner steps of sizes ``step_sizes`` (α_1..α_K), with what
    the report draws from them (``Curve``)."""
    sampler, theta = _setup(candidate, cfg, tasks, generator)
    learner = build_learner(cfg, candidate.policy, len(step_sizes), step_sizes or list(cfg.eval.lr))
    batch = learner.meta_batch(sampler, theta, tasks, differentiable=False)
    first, last = batch.supports[0] if batch.supports else batch.query, batch.query
    paths = [(b["observation"][:, 0], b["mask"][:, 0]) for b in (first, last)]
    activation = candidate.policy.activation_by_condition(last, task_conditions(cfg, tasks))
    return Curve(batch.returns(), paths, activation, batch.adaptation.params)


def scores(env, episodes: TensorDict) -> dict[str, torch.Tensor]:
    """The return and the env family's ``episode_statistics`` of one episode per task, ``{name: [task]}``."""
    return {"return": episode_returns(episodes)[:, 0], **{k: v[:, 0] for k, v in env.episode_statistics(episodes).items()}}


def backtest(candidate: Candidate, cfg: DictConfig, tasks: torch.Tensor,
             params: list[dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The deterministic policy (its mode) of every θ_k on one episode per task, scored by ``scores``
    (a trading backtest: return, annual return, Sharpe, …).

    Returns ``{statistic: [K + 1, task]}`` and the rewards ``[K + 1, task, time]``.
    """
    env = build_env(cfg, tasks.shape[0], 1, candidate.oracle, None, candidate.normalize_actions)
    sampler = build_sampler(cfg, env, candidate.policy, torch.Generator())
    sampler.set_tasks(tasks)
    runs = [sampler(theta, deterministic=True) for theta in params]
    stats = [scores(env, episodes) for episodes in runs]
    return {k: torch.stack([s[k] for s in stats]) for k in stats[0]}, torch.stack([e["reward"][:, 0] for e in runs])


def benchmark_backtests(cfg: DictConfig, tasks: torch.Tensor) -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """The env family's reference strategies (``TaskEnv.benchmarks``, e.g. buy-and-hold) on ``tasks``,
    scored as ``backtest`` scores a policy: ``{name: ({statistic: [1, task]}, rewards [1, task, time])}``."""
    env = build_env(cfg, tasks.shape[0], 1, False)
    env.set_tasks(tasks)
    out = {}
    for name, rewards in env.benchmarks().items():
        episodes = TensorDict({"reward": rewards[:, None], "mask": torch.ones_like(rewards[:, None])},
                              batch_size=rewards[:, None].shape)
        out[name] = ({k: v[None] for k, v in scores(env, episodes).items()}, rewards[None])
    return out


def add_backtests(results: dict, tests: dict, cfg: DictConfig, tasks: torch.Tensor) -> None:
    """Rows for the benchmarks, and ``backtest`` = ``{statistic: {"mean", "ci95", ...}}`` on every row of
    ``results`` from ``tests`` (``{label: [backtest(...) per seed]}``, extended with the benchmarks)."""
    for name, run in benchmark_backtests(cfg, tasks).items():
        results[name] = summarize(run[0]["return"])
        tests[name] = [run]
    for label, runs in tests.items():
        for k, row in results[label].items():
            row["backtest"] = {name: summarize(torch.cat([s[name][k:k + 1] for s, _ in runs], dim=1))[0]
                               for name in runs[0][0]}


def select_step_sizes(candidate: Candidate, cfg: DictConfig, num_steps: int) -> list[float]:
    """Each step's size for ``candidate``, chosen greedily from ``eval.lr_grid`` on validation tasks.

    On ``eval.num_val_tasks`` tasks of the validation stream (never the test tasks), from θ and
    its support episodes: every grid value α takes step k from the chosen θ_{k-1}, the episodes of
    the result are sampled with the same random numbers for every α, and the α with the highest
    mean return becomes α_k (its episodes the next step's support); a step size whose return is
    not a number (a diverged step) is never chosen. Each method is thus compared at step sizes
    that suit it, chosen without looking at the test tasks. Costs 1 + ``num_steps`` × |grid| batches.
    """
    generator = validation_generator(cfg.eval.seed)
    tasks = build_env(cfg, 1, 1, False).sample_tasks(cfg.eval.num_val_tasks, generator, split="train")
    sampler, theta = _setup(candidate, cfg, tasks, generator)
    adaptation = build_learner(cfg, candidate.policy, 0).start(theta, tasks.shape[0])
    support, chosen = sampler(adaptation.adapted), []
    scores = [episode_returns(support).mean().item()]
    for k in range(num_steps):
        state, best = generator.get_state(), None
        for alpha in cfg.eval.lr_grid:
            generator.set_state(state)  # common random numbers: every α sees the same noise
            learner = build_learner(cfg, candidate.policy, k + 1, [*chosen, alpha])
            trial = learner.step(Adaptation(list(adaptation.params), fixed=adaptation.fixed), support, False)
            episodes = sampler(trial.adapted)
            score = episode_returns(episodes).mean().nan_to_num(nan=-math.inf).item()
            if best is None or score > best[0]:
                best = (score, alpha, trial, episodes)
        scores.append(best[0])
        chosen.append(best[1])
        adaptation, support = best[2], best[3]
    log.info("%s: step sizes %s chosen on %d validation tasks (returns %s)", candidate.label, chosen,
             tasks.shape[0], " ".join(f"{r:.2f}" for r in scores))
    return chosen


def step_sizes_of(candidate: Candidate, cfg: DictConfig) -> list[float]:
    """α_1..α_K of ``candidate``: none for the oracle, chosen from ``eval.lr_grid`` if given, else ``eval.lr``."""
    if candidate.oracle:
        return []
    if cfg.eval.lr_grid:
        return select_step_sizes(candidate, cfg, cfg.eval.num_steps)
    learner = build_learner(cfg, candidate.policy, cfg.eval.num_steps, list(cfg.eval.lr))
    return [learner.step_size(k) for k in range(cfg.eval.num_steps)]


def sweep_references(sweep_dir: Path) -> list[tuple[str, str]]:
    """``(checkpoint, overrides that set its job apart)`` for every ``<sweep_dir>/*/checkpoint.pt``.

    The overrides are those of the job's ``.hydra/overrides.yaml`` whose values differ between the
    jobs, less ``baseline`` (the method) and ``seed`` (seeds of one setting are aggregated).
    """
    jobs = sorted(Path(sweep_dir).glob("*/checkpoint.pt"))
    overrides = []
    for path in jobs:
        listed = path.parent / ".hydra" / "overrides.yaml"
        pairs = [o.lstrip("+~").split("=", 1) for o in (OmegaConf.load(listed) if listed.is_file() else [])]
        overrides.append({k: v for k, v in (p for p in pairs if len(p) == 2)})
    keys = {k for o in overrides for k in o} - {"baseline", "seed"}
    varying = sorted(k for k in keys if len({o.get(k) for o in overrides}) > 1)
    return [(str(p), " ".join(f"{k}={o[k]}" for k in varying if k in o)) for p, o in zip(jobs, overrides)]


NOT_A_SETTING = ("seed", "mode", "resume", "threads", "checkpoint_every", "eval.", "tracking.", "baseline.")


def set_apart(candidates: list[Candidate]) -> None:
    """Add to the label of candidates that share one the training settings in which they differ.

    Candidates with one label are pooled as seeds of one setting, so checkpoints of, say,
    ``algorithm=trpo`` and ``algorithm=promp`` given together in ``eval.checkpoints`` must not
    share one. Keys that do not make a setting (seed, threads, tracking, ...) are ignored; where a
    plug-in's ``name`` differs, the label shows ``<group>=<name>`` and not its other keys.
    """
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(c.label, []).append(c)
    for group in groups.values():
        flats = [flatten(c.config) for c in group]
        keys = sorted({k for f in flats for k in f if not k.startswith(NOT_A_SETTING)})
        differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
        renamed = {k.rsplit(".", 1)[0] for k in differing if k.endswith(".name")}
        shown = [k for k in differing if k.rsplit(".", 1)[0] not in renamed or k.endswith(".name")]
        for c, f in zip(group, flats):
            parts = [f"{k[:-5]}={f.get(k)}" if k.endswith(".name") else f"{k}={f.get(k)}" for k in shown]
            c.label = " ".join([c.label, *parts])


def load_candidates(cfg: DictConfig, tracking_uri: str) -> list[Candidate]:
    """Every checkpoint of ``eval.checkpoints`` and ``eval.sweep_dir``, checked, labelled and sorted
    (maml, pretrained, random, oracle), plus the random initialisation unless one is given or
    ``eval.include_random`` is off.

    Raises:
        EvaluationError: nothing to evaluate, or a bad checkpoint (before any work).
    """
    references = [(ref, "") for ref in cfg.eval.checkpoints]
    if cfg.eval.sweep_dir:
        if not Path(cfg.eval.sweep_dir).is_dir():
            raise EvaluationError(f"eval.sweep_dir={cfg.eval.sweep_dir}: no such directory")
        references += sweep_references(Path(cfg.eval.sweep_dir))
    candidates = []
    for reference, overrides in references:
        candidate = load_candidate(reference, cfg, tracking_uri)
        candidate.label = f"{candidate.method} {overrides}".strip()
        candidates.append(candidate)
    set_apart(candidates)
    if not candidates:
        raise EvaluationError(f"no checkpoint to evaluate in eval.checkpoints={list(cfg.eval.checkpoints)} "
                              f"eval.sweep_dir={cfg.eval.sweep_dir}")
    if cfg.eval.include_random and "random" not in {c.method for c in candidates}:
        candidates.append(random_candidate(cfg))
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(candidates, key=lambda c: (order.get(c.method, len(METHODS)), c.label, c.seed))


def evaluate(cfg: DictConfig, candidates: list[Candidate], out_dir: Path) -> dict:
    """Adaptation curves of ``candidates`` on the same fresh tasks, one row per label.

    Candidates that share a label (the seeds of one setting) are pooled: the mean and the 95%
    interval are over seeds × tasks (``n_seeds``, ``n_tasks`` per seed). Row k ≥ 1 also names the
    step size α_k that led to it (``lr``: one per seed). For an env family that backtests
    (``TaskEnv.statistics``: trading), each row also has ``backtest``: the deterministic policy's
    statistics, ``{name: {"mean", "ci95"}}``, and the family's benchmarks (buy-and-hold, flat) are
    rows of their own. Every method's row also has ``paired``: the first MAML label's return minus
    the method's on the same tasks (``report.add_paired``). Writes ``results.json`` (``{label: {k:
    {"mean", "ci95", "n_tasks", "n_seeds", "lr", "paired", "backtest"}}}``), ``results.csv``,
    ``returns_per_task.csv``, ``adaptation_curve.png``, for navigation
    ``trajectories.png``, for a backtest ``equity_curves.png``, and for a policy with parts (a
    mixture's experts) ``activation_<label>_s<seed>.png`` to ``out_dir``.
    """
    backtests = bool(ENVS[cfg.env.name].cls.statistics)  # the family reports episode statistics (trading)
    tasks = held_out_tasks(cfg)
    curves, paths, lrs, tests = {}, {}, {}, {}
    for c in candidates:
        step_sizes = step_sizes_of(c, cfg)
        curve = adaptation_curve(c, cfg, tasks, step_sizes, evaluation_generator(cfg.eval.seed + 1))
        if curve.activation:
            out_dir.mkdir(parents=True, exist_ok=True)
            plot_activation(curve.activation, f"{c.label} (seed {c.seed}) after {len(step_sizes)} steps",
                            out_dir / f"activation_{metric_name(c.label).replace('/', '_')}_s{c.seed}.png")
        curves.setdefault(c.label, []).append((c.seed, curve.returns))
        lrs.setdefault(c.label, []).append(step_sizes)
        if step_sizes:  # the trajectories before and after adaptation
            paths.setdefault(c.label, curve.paths)
        if backtests:
            tests.setdefault(c.label, []).append(backtest(c, cfg, tasks, curve.params))
    results = {}
    for label, seeds in curves.items():
        rows = [returns for _, returns in seeds]
        results[label] = summarize(torch.cat(rows, dim=1), len(rows))
        for k in range(1, len(results[label])):
            results[label][k]["lr"] = [seed_lrs[k - 1] for seed_lrs in lrs[label]]
    add_paired(results, {label: torch.stack([r for _, r in seeds]).mean(0) for label, seeds in curves.items()})
    if backtests:
        add_backtests(results, tests, cfg, tasks)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_tables(results, out_dir)
    write_per_task(curves, out_dir)
    title = f"{cfg.env.name}: return after k inner steps on {cfg.eval.num_tasks} new tasks"
    plot_curves(results, cfg.eval.num_steps, out_dir / "adaptation_curve.png", title)
    if cfg.env.name == "navigation" and paths:
        plot_trajectories(paths, tasks, cfg.eval.num_steps, out_dir / "trajectories.png")
    if tests:
        plot_equity(tests, tasks, out_dir / "equity_curves.png")
    return results
