"""``mode=evaluate``: adaptation curves of MAML and its baselines on fresh tasks.

Protocol of Finn et al. (2017), Section 5.3 and Figure 4: on ``eval.num_tasks`` tasks drawn
from an evaluation stream disjoint from every training seed, for k = 0..``eval.num_steps``
collect ``eval.episodes_per_task`` episodes with the current parameters, record each task's mean
return, then take one step of the inner loop (``inner.estimator``) of size α_k on those episodes,
through the same ``InnerLoop`` as training. α_k comes from ``eval.lr`` (the family's protocol, e.g.
the paper's 0.1 then 0.05), or, with ``eval.lr_grid``, is chosen per method on validation tasks
(``select_step_sizes``). The oracle is evaluated at k = 0 only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict

from ..config import SEED_LIMIT, settings
from ..core.checkpoint import load_checkpoint, tracked_run
from ..core.maml import Adaptation
from ..core.sampler import episode_returns
from ..envs.base import TaskFamily
from ..figures import plot_activation
from ..policies.base import Policy, policy_from_state
from .build import (
    build_inner_loop,
    build_sampler,
    family_of,
    flatten,
    initial_policy,
    resolve_checkpoint,
)
from .report import metric_name, plot_curves, summarize, summarize_groups, write_tables

log = logging.getLogger(__name__)

METHODS = ("maml", "pretrained", "random", "oracle")


class EvaluationError(ValueError):
    """A checkpoint that cannot be evaluated; the message names the file and the mismatch."""


@dataclass
class Candidate:
    """One policy to evaluate: its method (baseline name), policy, the observation (oracle) and
    action space (normalised or not) it was trained with, source, tracked run id, training seed,
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


def load_candidate(reference: str, cfg: DictConfig, launch_dir: str | Path = ".",
                   family: TaskFamily | None = None) -> Candidate:
    """Load and check one checkpoint (a file, a run dir or a run id of ``cfg.tracking``) against
    the evaluation's task family.

    Raises:
        EvaluationError: missing file, another env, or an observation size that does not fit.
    """
    family = family or family_of(cfg)
    try:
        path = resolve_checkpoint(reference, settings(cfg, "tracking"), Path(launch_dir))
        state = load_checkpoint(path)
        policy = policy_from_state(state)
    except (ValueError, RuntimeError, OSError) as err:  # missing, unreadable or not a checkpoint
        message = str(err) if reference in str(err) else f"checkpoint {reference}: {err}"
        raise EvaluationError(message) from err
    if state["env"] != cfg.env.name:
        raise EvaluationError(f"checkpoint {path} was trained on env {state['env']!r}, "
                              f"but the evaluation env is {cfg.env.name!r}")
    oracle = bool(state.get("oracle", False))
    obs_dim = family.observation_size(oracle)
    if policy.obs_dim != obs_dim:
        raise EvaluationError(f"checkpoint {path} expects observations of size {policy.obs_dim}, "
                              f"env {cfg.env.name!r} (oracle={oracle}) gives {obs_dim}")
    run = tracked_run(state)
    return Candidate(state["baseline"], policy, oracle, state["config"]["env"]["normalize_actions"], str(path),
                     run[1] if run else None, state["config"].get("seed", 0), config=state["config"])


def random_candidate(cfg: DictConfig, family: TaskFamily | None = None) -> Candidate:
    """The untrained policy of seed ``cfg.seed`` (the same initialisation a training run starts from)."""
    policy = initial_policy(cfg, family or family_of(cfg))
    return Candidate("random", policy, False, cfg.env.normalize_actions, f"random initialisation, seed {cfg.seed}")


def held_out_tasks(cfg: DictConfig, family: TaskFamily | None = None) -> torch.Tensor:
    """The ``eval.num_tasks`` test tasks of evaluation seed ``eval.seed``: the family's ``"test"`` split
    (held-out windows of recorded data) drawn from ``evaluation_generator``."""
    family = family or family_of(cfg)
    return family.sample_tasks(cfg.eval.num_tasks, evaluation_generator(cfg.eval.seed), split="test")


def validation_generator(seed: int) -> torch.Generator:
    """The validation stream of evaluation seed ``seed``: torch seed 2**32 + seed, disjoint from the
    test tasks' stream (``evaluation_generator``) and from every training seed."""
    return torch.Generator().manual_seed(2 * SEED_LIMIT + seed)


def _setup(candidate: Candidate, cfg: DictConfig, family: TaskFamily, tasks: torch.Tensor,
           generator: torch.Generator, episodes_per_task: int | None = None):
    """The sampler of ``candidate`` on ``tasks`` (``eval.episodes_per_task`` each) and its detached θ."""
    env = family.make_env(tasks.shape[0], episodes_per_task or cfg.eval.episodes_per_task, candidate.oracle,
                          generator, candidate.normalize_actions)
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
                     generator: torch.Generator, family: TaskFamily | None = None) -> Curve:
    """Mean return per task after k = 0..K inner steps of sizes ``step_sizes`` (α_1..α_K), with what
    the report draws from them (``Curve``)."""
    family = family or family_of(cfg)
    sampler, theta = _setup(candidate, cfg, family, tasks, generator)
    inner_loop = build_inner_loop(cfg, candidate.policy, len(step_sizes), step_sizes or list(cfg.eval.lr))
    support = family.support_tasks(tasks)
    batch = inner_loop.meta_batch(sampler, theta, tasks, differentiable=False, support_tasks=support)
    if support is tasks or not batch.supports:
        first, returns = batch.supports[0] if batch.supports else batch.query, batch.returns()
    else:  # adapted on other tasks (walk-forward): score θ_0 … θ_{K-1} on the test tasks themselves
        scored = [sampler(params) for params in batch.adaptation.params[:-1]]
        first, returns = scored[0], torch.stack([episode_returns(b).mean(1) for b in [*scored, batch.query]])
    last = batch.query
    paths = [(b["observation"][:, 0], b["mask"][:, 0]) for b in (first, last)]
    activation = candidate.policy.activation_by_condition(last, family.task_conditions(tasks))
    return Curve(returns, paths, activation, batch.adaptation.params)


def scores(family: TaskFamily, tasks: torch.Tensor, episodes: TensorDict) -> dict[str, torch.Tensor]:
    """The return and the family's ``episode_statistics`` of one episode per task, ``{name: [task]}``."""
    statistics = family.episode_statistics(tasks, episodes)
    return {"return": episode_returns(episodes)[:, 0], **{k: v[:, 0] for k, v in statistics.items()}}


def deterministic_runs(candidate: Candidate, cfg: DictConfig, family: TaskFamily, tasks: torch.Tensor,
                       params: list[dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], TensorDict]:
    """The deterministic policy (its mode) of every θ_k on one episode per task, scored by ``scores``
    (e.g. a backtest: return, annual return, Sharpe, …).

    Returns ``{statistic: [K + 1, task]}`` and the episodes' ``reward`` and ``action`` ``[K + 1, task, time]``.
    """
    sampler, _ = _setup(candidate, cfg, family, tasks, torch.Generator(), episodes_per_task=1)
    runs = [sampler(theta, deterministic=True) for theta in params]
    stats = [scores(family, tasks, episodes) for episodes in runs]
    played = torch.stack([e.select("reward", "action")[:, 0] for e in runs])
    return {k: torch.stack([s[k] for s in stats]) for k in stats[0]}, played


def reference_runs(family: TaskFamily, tasks: torch.Tensor) -> dict[str, tuple[dict[str, torch.Tensor], TensorDict]]:
    """The family's reference strategies (``TaskFamily.references``, e.g. buy-and-hold) on ``tasks``,
    scored as ``deterministic_runs`` scores a policy: ``{name: ({statistic: [1, task]}, episodes [1, task, time])}``."""
    out = {}
    for name, reference in family.references(tasks).items():
        episodes = reference.unsqueeze(1)  # one episode per task
        episodes["mask"] = torch.ones_like(episodes["reward"])
        out[name] = ({k: v[None] for k, v in scores(family, tasks, episodes).items()}, reference[None])
    return out


def select_step_sizes(candidate: Candidate, cfg: DictConfig, num_steps: int, family: TaskFamily) -> list[float]:
    """Each step's size for ``candidate``, chosen greedily from ``eval.lr_grid`` on validation tasks.

    On ``eval.num_val_tasks`` tasks of the validation stream (never the test tasks), from θ and
    its support episodes: every grid value α takes step k from the chosen θ_{k-1}, the episodes of
    the result are sampled with the same random numbers for every α, and the α with the highest
    mean return becomes α_k (its episodes the next step's support); a step size whose return is
    not a number (a diverged step) is never chosen. Each method is thus compared at step sizes
    that suit it, chosen without looking at the test tasks. Costs 1 + ``num_steps`` × |grid| batches.
    """
    generator = validation_generator(cfg.eval.seed)
    tasks = family.sample_tasks(cfg.eval.num_val_tasks, generator, split="validation")
    sampler, theta = _setup(candidate, cfg, family, tasks, generator)
    support_tasks = family.support_tasks(tasks)
    elsewhere = support_tasks is not tasks  # walk-forward: adapt on support tasks, score on the tasks

    def support_of(params):
        """Support episodes of θ_k in the support tasks (the sampler left on the scored tasks)."""
        sampler.set_tasks(support_tasks)
        episodes = sampler(params)
        sampler.set_tasks(tasks)
        return episodes

    adaptation = build_inner_loop(cfg, candidate.policy, 0).start(theta, tasks.shape[0])
    support, chosen = (support_of if elsewhere else sampler)(adaptation.adapted), []
    scores = [episode_returns(sampler(adaptation.adapted) if elsewhere else support).mean().item()]
    for k in range(num_steps):
        state, best = generator.get_state(), None
        for alpha in cfg.eval.lr_grid:
            generator.set_state(state)  # common random numbers: every α sees the same noise
            inner_loop = build_inner_loop(cfg, candidate.policy, k + 1, [*chosen, alpha])
            trial = inner_loop.step(Adaptation(list(adaptation.params), fixed=adaptation.fixed), support, False)
            episodes = sampler(trial.adapted)
            score = episode_returns(episodes).mean().nan_to_num(nan=-math.inf).item()
            if best is None or score > best[0]:
                best = (score, alpha, trial, episodes)
        scores.append(best[0])
        chosen.append(best[1])
        adaptation = best[2]
        support = support_of(adaptation.adapted) if elsewhere else best[3]
    log.info("%s: step sizes %s chosen on %d validation tasks (returns %s)", candidate.label, chosen,
             tasks.shape[0], " ".join(f"{r:.2f}" for r in scores))
    return chosen


def step_sizes_of(candidate: Candidate, cfg: DictConfig, family: TaskFamily) -> list[float]:
    """α_1..α_K of ``candidate``: none for the oracle, chosen from ``eval.lr_grid`` if given, else ``eval.lr``."""
    if candidate.oracle:
        return []
    if cfg.eval.lr_grid:
        return select_step_sizes(candidate, cfg, cfg.eval.num_steps, family)
    inner_loop = build_inner_loop(cfg, candidate.policy, cfg.eval.num_steps, list(cfg.eval.lr))
    return [inner_loop.step_size(k) for k in range(cfg.eval.num_steps)]


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
    two outer loops (``algorithm=<a>`` and ``algorithm=<b>``) given together in ``eval.checkpoints`` must not
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


def load_candidates(cfg: DictConfig, launch_dir: str | Path = ".", family: TaskFamily | None = None) -> list[Candidate]:
    """Every checkpoint of ``eval.checkpoints`` and ``eval.sweep_dir``, checked, labelled and sorted
    (maml, pretrained, random, oracle), plus the random initialisation unless one is given or
    ``eval.include_random`` is off.

    Raises:
        EvaluationError: nothing to evaluate, or a bad checkpoint (before any work).
    """
    family = family or family_of(cfg)
    references = [(ref, "") for ref in cfg.eval.checkpoints]
    if cfg.eval.sweep_dir:
        if not Path(cfg.eval.sweep_dir).is_dir():
            raise EvaluationError(f"eval.sweep_dir={cfg.eval.sweep_dir}: no such directory")
        references += sweep_references(Path(cfg.eval.sweep_dir))
    candidates = []
    for reference, overrides in references:
        candidate = load_candidate(reference, cfg, launch_dir, family)
        candidate.label = f"{candidate.method} {overrides}".strip()
        candidates.append(candidate)
    set_apart(candidates)
    if not candidates:
        raise EvaluationError(f"no checkpoint to evaluate in eval.checkpoints={list(cfg.eval.checkpoints)} "
                              f"eval.sweep_dir={cfg.eval.sweep_dir}")
    if cfg.eval.include_random and "random" not in {c.method for c in candidates}:
        candidates.append(random_candidate(cfg, family))
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(candidates, key=lambda c: (order.get(c.method, len(METHODS)), c.label, c.seed))


@dataclass
class Evaluation:
    """What ``evaluate`` found: the test ``tasks``, the long ``table`` (one row per method, run, task
    and k; see ``report``), ``results`` (``results.json``'s content, from the table), ``paths``
    (``{label: [(observations, mask) before, after]}`` of each adapted method's first run), the
    deterministic runs ``played`` (``{label: [K + 1, task, time]}`` with ``reward`` and ``action``, first run,
    and the references'), K
    (``num_steps``), the per-group summary (``by_group``), the files written (``files``) and the family's
    text report (``report``)."""

    tasks: torch.Tensor
    table: pd.DataFrame
    results: dict
    paths: dict
    played: dict
    num_steps: int
    by_group: pd.DataFrame = field(default_factory=pd.DataFrame)  # ``report.summarize_groups``: per group, method, k
    files: list[Path] = field(default_factory=list)
    report: str = ""  # the family's own report (``TaskFamily.reports``), for the terminal


def curve_rows(label: str, run: int, seed: int, returns: torch.Tensor, step_sizes: list[float],
               statistics: dict[str, torch.Tensor], prefix: str, reference: bool = False) -> pd.DataFrame:
    """The long table's rows of one run: ``returns`` ``[K + 1, task]``, the step sizes α_1..α_K, and
    the deterministic policy's ``statistics`` ``{name: [K + 1, task]}`` as ``<prefix>/<name>`` columns."""
    steps, tasks = returns.shape
    k = torch.arange(steps).repeat_interleave(tasks)
    alphas = [math.nan, *step_sizes]  # none leads to k = 0
    frame = pd.DataFrame({"method": label, "run": run, "seed": seed, "task": torch.arange(tasks).repeat(steps).numpy(),
                          "k": k.numpy(), "return": returns.double().flatten().numpy(),
                          "lr": [alphas[i] for i in k.tolist()], "reference": reference})
    for name, values in statistics.items():
        frame[f"{prefix}/{name}"] = values.double().flatten().numpy()
    return frame


def evaluate(cfg: DictConfig, candidates: list[Candidate], out_dir: Path, family: TaskFamily | None = None,
             tasks: torch.Tensor | None = None) -> Evaluation:
    """Adaptation curves of ``candidates`` on the same fresh tasks, gathered in one long table.

    Candidates that share a label (the seeds of one setting) are pooled: the mean and the 95%
    interval are over seeds × tasks (``n_seeds``, ``n_tasks`` per seed). Row k ≥ 1 also names the
    step size α_k that led to it (``lr``: one per seed). For a family with statistics
    (``TaskFamily.statistics``, e.g. a backtest), every θ_k's deterministic policy is also
    scored (``deterministic_runs``), and the family's references (buy-and-hold, flat) are rows of
    their own. Every policy's row also has ``paired``: the first MAML label's return minus the
    method's on the same tasks (``report.add_paired``). Writes ``results.json`` (``{label: {k:
    {"mean", "ci95", "n_tasks", "n_seeds", "lr", "paired", <statistics name>}}}``), ``results.csv``,
    ``returns_per_task.csv``, ``adaptation_curve.png``, the family's reports
    (``TaskFamily.reports``) and, for a policy with parts (a mixture's experts),
    ``activation_<label>_s<seed>.png`` to ``out_dir``.
    """
    family = family or family_of(cfg)
    prefix, note = family.statistics_name, family.support_note()
    tasks = held_out_tasks(cfg, family) if tasks is None else tasks
    out_dir.mkdir(parents=True, exist_ok=True)
    frames, paths, played, files = [], {}, {}, []
    for run, c in enumerate(candidates):
        step_sizes = step_sizes_of(c, cfg, family)
        if note and step_sizes and note not in c.label:  # adapted on the scored data: say so wherever it shows
            c.label = f"{c.label} ({note})"
        curve = adaptation_curve(c, cfg, tasks, step_sizes, evaluation_generator(cfg.eval.seed + 1), family)
        if curve.activation:
            files.append(plot_activation(curve.activation, f"{c.label} (seed {c.seed}) after {len(step_sizes)} steps",
                                         out_dir / f"activation_{metric_name(c.label).replace('/', '_')}_s{c.seed}.png"))
        if step_sizes:  # the paths before and after adaptation
            paths.setdefault(c.label, curve.paths)
        statistics = {}
        if family.statistics:
            statistics, runs = deterministic_runs(c, cfg, family, tasks, curve.params)
            played.setdefault(c.label, runs)
        frames.append(curve_rows(c.label, run, c.seed, curve.returns, step_sizes, statistics, prefix))
    if family.statistics:
        for name, (statistics, runs) in reference_runs(family, tasks).items():
            frames.append(curve_rows(name, 0, 0, statistics["return"], [], statistics, prefix, reference=True))
            played[name] = runs
    table = pd.concat(frames, ignore_index=True)
    blocks, groups = family.task_blocks(tasks), family.task_groups(tasks)
    table["block"] = (torch.arange(tasks.shape[0]) if blocks is None else blocks).numpy()[table["task"]]
    table["group"] = pd.Series(groups or [""] * tasks.shape[0]).to_numpy()[table["task"]]
    results, by_group = summarize(table, family.benchmark), summarize_groups(table)
    files += write_tables(results, table, out_dir, by_group)
    title = f"{cfg.env.name}: return after k inner steps on {cfg.eval.num_tasks} new tasks"
    plot_curves(results, cfg.eval.num_steps, out_dir / "adaptation_curve.png", title)
    evaluation = Evaluation(tasks, table, results, paths, played, cfg.eval.num_steps, by_group)
    evaluation.report, reported = family.reports(evaluation, out_dir)
    evaluation.files = [*files, out_dir / "adaptation_curve.png", *reported]
    return evaluation
