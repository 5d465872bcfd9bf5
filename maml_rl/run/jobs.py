"""The two jobs of ``python -m maml_rl``, each with its tracked run's lifecycle: meta-training
(new or resumed) and evaluation. The app validates and dispatches to them; the sweep callbacks
run the evaluation after a sweep."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError, settings
from ..core.checkpoint import load_checkpoint, tracked_run
from ..tracking import Tracker, TrackingUnavailable
from .build import build_trainer, family_of, resolve_checkpoint, start_tracker
from .exits import Refused, remove_launch_dir
from .report import (
    format_counts,
    format_groups,
    format_paired,
    format_statistics,
    format_table,
    metric_name,
    statistics_of,
    step_sizes,
)
from .sweeps import override_key, sweep_run_name
from .trainer import Stopped

log = logging.getLogger("maml_rl")

# what a resumed run may change: how long it runs, how often it checkpoints, the threads it uses
RESUMABLE = ("resume", "num_iterations", "checkpoint_every", "threads", "mode")


def say_where(tracker: Tracker) -> None:
    """The closing line that tells how to open the tracked run."""
    where = tracker.where()
    if tracker.run_id and where:
        print(f"tracked run {tracker.run_id}: {where}")


def finish(tracker: Tracker, status: str) -> None:
    """End the tracked run with ``status``; a failure to do so after the job failed is logged, not raised
    (the job's own error is the one to see)."""
    try:
        tracker.finish(status)
    except Exception as err:  # e.g. the tracking server went away
        if status == "FINISHED":
            raise
        log.error("could not close the tracked run: %s", err)


def resumed_config(cfg: DictConfig, stored: dict, overrides: Sequence[str]) -> DictConfig:
    """The stored config of a run to resume, with the command line's ``RESUMABLE`` keys applied.

    Raises:
        ConfigError: for an override of any other key whose value differs from the run's.
    """
    resumed = OmegaConf.create(stored)
    for key in (override_key(o) for o in overrides if not o.startswith("hydra")):
        given, kept = OmegaConf.select(cfg, key, default=None), OmegaConf.select(resumed, key, default=None)
        if isinstance(given, DictConfig):  # a group option, e.g. env=<name>
            given, kept = given.get("name"), (kept or {}).get("name")
        if key in RESUMABLE:
            if key not in ("resume", "mode"):
                OmegaConf.update(resumed, key, given)
        elif given != kept:
            raise ConfigError(f"resume: {key}={given} differs from the run's {key}={kept}; a resumed run keeps "
                              f"its config except {', '.join(RESUMABLE[1:4])}")
    return resumed


def resume_state(cfg: DictConfig, run_dir: Path, launch_dir: Path) -> tuple[dict, Path] | None:
    """The checkpoint to continue from, and its run dir.

    ``resume=<run dir | checkpoint | tracked run id>`` names it; otherwise a checkpoint already in
    this job's own output dir (a requeued cluster job) is continued.

    Raises:
        Refused: if ``resume`` names nothing loadable (the message names it and why).
    """
    if cfg.resume:
        try:
            path = resolve_checkpoint(cfg.resume, settings(cfg, "tracking"), launch_dir)
            state = load_checkpoint(path)
        except (ValueError, OSError) as err:
            raise Refused(f"cannot resume from {cfg.resume}: {err}") from None
        original = Path(state.get("run_dir") or path.parent)  # a run id's checkpoint is a downloaded copy
        return state, original if original.is_dir() else path.parent
    if (run_dir / "checkpoint.pt").is_file():
        return load_checkpoint(run_dir / "checkpoint.pt"), run_dir
    return None


def move_log(run_dir: Path, original: Path) -> None:
    """Send the log to the resumed run's own dir and remove the output dir Hydra made for this launch."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename).parent == run_dir.resolve():
            root.removeHandler(handler)
            handler.close()
            moved = logging.FileHandler(original / Path(handler.baseFilename).name, mode="a")
            moved.setFormatter(handler.formatter)
            root.addHandler(moved)
    remove_launch_dir(run_dir)


def train(cfg: DictConfig, run_dir: Path, launch_dir: Path, overrides: Sequence[str] = ()) -> float:
    """Meta-train (or, for ``baseline=random``, only initialise) into ``run_dir``, or continue the run
    ``resume`` names; returns the objective (the mean post-adaptation return of the last iterations).

    Raises:
        Refused: nothing to resume, a resumed run given another config, or an unusable tracking store.
        Stopped: a stop signal; the tracked run is marked KILLED, the checkpoint written.
    """
    resumed = resume_state(cfg, run_dir, launch_dir)
    if resumed:
        try:
            cfg = resumed_config(cfg, resumed[0]["config"], overrides if cfg.resume else ())
        except ConfigError as err:
            raise Refused(f"invalid config: {err}") from None
    family = family_of(cfg)
    try:
        family.observation_size(cfg.baseline.oracle)  # a family that cannot give the oracle its observation
    except ValueError as err:
        raise Refused(f"invalid config: {err}") from None
    try:
        if resumed:
            state, original = resumed
            tracker = start_tracker(cfg, original, launch_dir, resume=tracked_run(state))
            if original.resolve() != run_dir.resolve():
                move_log(run_dir, original)
            run_dir = original
            log.info("resuming %s at iteration %d", run_dir, state["iteration"])
        else:
            tracker = start_tracker(cfg, run_dir, launch_dir, name=sweep_run_name(cfg, run_dir, overrides),
                                    overrides=" ".join(o for o in overrides if not o.startswith("hydra")))
    except TrackingUnavailable as err:
        raise Refused(str(err)) from None
    status = "FAILED"
    try:
        trainer = build_trainer(cfg, run_dir, tracker, family)
        if resumed:
            trainer.load_state(resumed[0])
        objective = trainer.meta_train()
        status = "FINISHED"
    except (Stopped, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        finish(tracker, status)
    if trainer.recent:
        log.info("final post-adaptation return (mean of the last %d iterations): %.3f", len(trainer.recent), objective)
    print(f"checkpoint: {run_dir / 'checkpoint.pt'}")
    say_where(tracker)
    return objective


def evaluation_metrics(results: dict, k: int, label: str) -> dict[str, float]:
    """One method's row k as metrics: ``eval/return_<label>``, ``eval/ci95_<label>``, the paired
    difference, and each statistic as ``<statistics name>/<statistic>_<label>``."""
    row, name = results[label][k], metric_name(label)
    metrics = {f"eval/return_{name}": row["mean"], f"eval/ci95_{name}": row["ci95"]}
    for key, metric in (("paired", "paired"), ("paired_benchmark", "vs_benchmark")):
        if key in row:
            metrics.update({f"eval/{metric}_{name}": row[key]["mean"], f"eval/{metric}_ci95_{name}": row[key]["ci95"]})
    for group, values in statistics_of(row).items():
        metrics.update({f"{group}/{statistic}_{name}": v["mean"] for statistic, v in values.items()})
    return metrics


def run_evaluation(cfg: DictConfig, out_dir: Path, launch_dir: Path) -> dict:
    """Evaluate checkpoints into ``out_dir`` and a tracked evaluation run; print the tables; returns
    ``results.json``'s content.

    Raises:
        Refused: a checkpoint that cannot be evaluated or an unusable tracking store (nothing written).
    """
    from .evaluation import EvaluationError, evaluate, held_out_tasks, load_candidates  # pandas: only here

    family = family_of(cfg)
    try:
        tasks = held_out_tasks(cfg, family)
    except ValueError as err:  # more test tasks than the family holds
        raise Refused(f"cannot evaluate: {err}") from None
    try:
        candidates = load_candidates(cfg, launch_dir, family)
        tracker = start_tracker(cfg, out_dir, launch_dir, name=f"evaluate-{cfg.env.name}")
    except (EvaluationError, TrackingUnavailable) as err:
        raise Refused(f"cannot evaluate: {err}") from None
    status = "FAILED"
    try:
        groups: dict[str, list] = {}
        for c in candidates:
            groups.setdefault(c.label, []).append(c)
        tracker.set_tags({"evaluated_runs": ",".join(c.run_id for c in candidates if c.run_id),
                          **{f"evaluated.{metric_name(label)}": ",".join(c.run_id or c.source for c in group)
                             for label, group in groups.items()}})
        evaluation = evaluate(cfg, candidates, out_dir, family, tasks)
        results = evaluation.results
        tables = (format_counts(results), format_table(results, cfg.eval.num_steps),
                  format_paired(results, cfg.eval.num_steps), format_paired(results, cfg.eval.num_steps,
                                                                            "paired_benchmark"),
                  format_statistics(results), format_groups(evaluation.by_group, cfg.eval.num_steps),
                  evaluation.report)
        print("\n\n".join(t for t in tables if t))
        tracker.set_tags({f"step_sizes.{metric_name(label)}": step_sizes(rows)
                          for label, rows in results.items() if step_sizes(rows)})
        for k in range(cfg.eval.num_steps + 1):
            tracker.log_metrics({m: v for label in results if k in results[label]
                                 for m, v in evaluation_metrics(results, k, label).items()}, step=k)
        for path in evaluation.files:
            tracker.log_artifact(path)
        status = "FINISHED"
    finally:
        finish(tracker, status)
    log.info("evaluation written to %s", out_dir)
    say_where(tracker)
    return results
