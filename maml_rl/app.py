"""The app behind ``python -m maml_rl``: validate the config, then train, resume or evaluate."""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, validate

log = logging.getLogger("maml_rl")

# what a resumed run may change: how long it runs, how often it checkpoints, the threads it uses
RESUMABLE = ("resume", "num_iterations", "checkpoint_every", "threads", "mode")


def tracking_uri(cfg: DictConfig, launch_dir: Path) -> str:
    """The store where run ids are looked up (``tracking.uri`` or the launch dir's default store)."""
    from .tracking.mlflow import resolve_uri

    return resolve_uri(cfg.tracking.uri, launch_dir)


def fail(message: str, code: int = 2):
    """One line on stderr, then exit."""
    print(f"maml_rl: {message}", file=sys.stderr)
    sys.exit(code)


def remove_launch_dir(run_dir: Path) -> None:
    """Remove what Hydra wrote for this launch (``.hydra/``, ``maml_rl.log``), then the dir if nothing else is
    in it: a dir that holds anything more (a checkpoint, ``hydra.run.dir=.``) is left as it is."""
    if (run_dir / "checkpoint.pt").exists():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / "maml_rl.log").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def abandon(run_dir: Path, message: str):
    """Exit before any work, leaving no output dir behind."""
    remove_launch_dir(run_dir)
    fail(message)


def say_where(tracker) -> None:
    """The closing line that tells how to open the tracked run."""
    if tracker.run_id:
        print(f"tracked run {tracker.run_id}: {tracker.where()}")


def resumed_config(cfg: DictConfig, stored: dict, overrides: Sequence[str]) -> DictConfig:
    """The stored config of a run to resume, with the command line's ``RESUMABLE`` keys applied.

    Raises:
        ConfigError: for an override of any other key whose value differs from the run's.
    """
    from .run.callbacks import override_key

    resumed = OmegaConf.create(stored)
    for key in (override_key(o) for o in overrides if not o.startswith("hydra")):
        given, kept = OmegaConf.select(cfg, key, default=None), OmegaConf.select(resumed, key, default=None)
        if isinstance(given, DictConfig):  # a group option, e.g. env=ant
            given, kept = given.get("name"), (kept or {}).get("name")
        if key in RESUMABLE:
            if key not in ("resume", "mode"):
                OmegaConf.update(resumed, key, given)
        elif given != kept:
            raise ConfigError(f"resume: {key}={given} differs from the run's {key}={kept}; a resumed run keeps "
                              f"its config except {', '.join(RESUMABLE[1:4])}")
    return resumed


def resume_state(cfg: DictConfig, run_dir: Path) -> tuple[dict, Path] | None:
    """The checkpoint to continue from, and its run dir.

    ``resume=<run dir | checkpoint | MLflow run id>`` names it; otherwise a checkpoint already in
    this job's own output dir (a requeued cluster job) is continued.

    Raises:
        SystemExit: if ``resume`` names nothing loadable (message names it).
    """
    from .core.checkpoint import load_checkpoint
    from .run.build import resolve_checkpoint

    if cfg.resume:
        try:
            path = resolve_checkpoint(cfg.resume, tracking_uri(cfg, Path.cwd()))
            state = load_checkpoint(path)
        except (ValueError, OSError) as err:
            fail(f"cannot resume from {cfg.resume}: {err}")
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


def train(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> float:
    """Meta-train (or, for ``baseline=random``, only initialise); returns the objective."""
    from .run.build import start_tracker
    from .run.callbacks import sweep_run_name
    from .run.trainer import Trainer
    from .tracking.mlflow import TrackingUnavailable

    resumed = resume_state(cfg, run_dir)
    try:
        if resumed:
            state, original = resumed
            try:
                cfg = resumed_config(cfg, state["config"], overrides if cfg.resume else ())
            except ConfigError as err:
                fail(f"invalid config: {err}")
            link = (state["tracking_uri"], state["mlflow_run_id"]) if state.get("mlflow_run_id") else None
            tracker = start_tracker(cfg, original, Path.cwd(), resume=link)
            if original.resolve() != run_dir.resolve():
                move_log(run_dir, original)
            run_dir = original
            log.info("resuming %s at iteration %d", run_dir, state["iteration"])
        else:
            tracker = start_tracker(cfg, run_dir, Path.cwd(), name=sweep_run_name(cfg, run_dir, overrides),
                                    overrides=" ".join(o for o in overrides if not o.startswith("hydra")))
    except TrackingUnavailable as err:
        abandon(run_dir, str(err))
    status = "FAILED"
    try:
        trainer = Trainer(cfg, run_dir, tracker)
        if resumed:
            trainer.load_state(resumed[0])
        objective = trainer.meta_train()
        status = "FINISHED"
    finally:
        try:
            tracker.finish(status)
        except Exception as err:  # the run failed already (e.g. the tracking server went away): say so, keep its error
            if status == "FINISHED":
                raise
            log.error("could not close the tracked run: %s", err)
    log.info("final post-adaptation return (mean of the last 20 iterations): %.3f", objective)
    print(f"checkpoint: {run_dir / 'checkpoint.pt'}")
    say_where(tracker)
    return objective


def run_evaluation(cfg: DictConfig, out_dir: Path, launch_dir: Path) -> dict:
    """Evaluate checkpoints into ``out_dir`` and a tracked evaluation run; returns ``results.json``'s content."""
    from .run.build import start_tracker
    from .run.evaluation import EvaluationError, evaluate, load_candidates
    from .run.report import format_backtest, format_paired, format_table, metric_name, step_sizes
    from .tracking.mlflow import TrackingUnavailable

    try:
        candidates = load_candidates(cfg, tracking_uri(cfg, launch_dir))
        tracker = start_tracker(cfg, out_dir, launch_dir, name=f"evaluate-{cfg.env.name}")
    except (EvaluationError, TrackingUnavailable) as err:
        abandon(out_dir, f"cannot evaluate: {err}")
    status = "FAILED"
    try:
        groups: dict[str, list] = {}
        for c in candidates:
            groups.setdefault(c.label, []).append(c)
        tracker.set_tags({"evaluated_runs": ",".join(c.run_id for c in candidates if c.run_id),
                          **{f"evaluated.{metric_name(label)}": ",".join(c.run_id or c.source for c in group)
                             for label, group in groups.items()}})
        results = evaluate(cfg, candidates, out_dir)
        print(format_table(results, cfg.eval.num_steps))
        if format_paired(results, cfg.eval.num_steps):
            print(format_paired(results, cfg.eval.num_steps))
        if format_backtest(results):
            print(format_backtest(results))
        tracker.set_tags({f"step_sizes.{metric_name(label)}": step_sizes(rows)
                          for label, rows in results.items() if step_sizes(rows)})
        for label, rows in results.items():
            for k, r in rows.items():
                tracker.log_metrics({f"eval/return_{metric_name(label)}": r["mean"],
                                     f"eval/ci95_{metric_name(label)}": r["ci95"],
                                     **({f"eval/paired_{metric_name(label)}": r["paired"]["mean"],
                                         f"eval/paired_ci95_{metric_name(label)}": r["paired"]["ci95"]}
                                        if "paired" in r else {}),
                                     **{f"backtest/{name}_{metric_name(label)}": v["mean"]
                                        for name, v in r.get("backtest", {}).items()}}, step=k)
        for name in ("results.json", "results.csv", "returns_per_task.csv", "adaptation_curve.png", "trajectories.png",
                     "equity_curves.png"):
            tracker.log_artifact(out_dir / name)
        for figure in sorted(out_dir.glob("activation_*.png")):  # a mixture's experts by task condition
            tracker.log_artifact(figure)
        status = "FINISHED"
    finally:
        tracker.finish(status)
    log.info("evaluation written to %s", out_dir)
    say_where(tracker)
    return results


def main(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> float | None:
    """Validate the composed config, then train or evaluate into ``run_dir``.

    ``overrides`` are the command line's (to check what a resume may change and to name sweep
    jobs). Returns the run's objective (mean post-adaptation return of the last 20 iterations)
    for Hydra's sweepers, or None for an evaluation.

    Raises:
        SystemExit: code 2 with one line on stderr for a bad config value or an unreachable store.
    """
    try:
        validate(cfg)
    except ConfigError as err:
        abandon(run_dir, f"invalid config: {err}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.mode == "evaluate":
        run_evaluation(cfg, run_dir, Path.cwd())
        return None
    return train(cfg, run_dir, overrides)
