"""The app behind ``python -m maml_rl``: validate the config, then train, resume or evaluate."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, validate

log = logging.getLogger("maml_rl")


def tracking_uri(cfg: DictConfig, launch_dir: Path) -> str:
    """The store where run ids are looked up (``tracking.uri`` or the launch dir's default store)."""
    from .tracking.mlflow import resolve_uri

    return resolve_uri(cfg.tracking.uri, launch_dir)


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
            print(f"maml_rl: cannot resume from {cfg.resume}: {err}", file=sys.stderr)
            sys.exit(2)
        original = Path(state.get("run_dir") or path.parent)  # a run id's checkpoint is a downloaded copy
        return state, original if original.is_dir() else path.parent
    if (run_dir / "checkpoint.pt").is_file():
        return load_checkpoint(run_dir / "checkpoint.pt"), run_dir
    return None


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Meta-train (or, for ``baseline=random``, only initialise); returns the final post-adaptation return."""
    from .run.build import start_tracker
    from .run.trainer import Trainer

    resumed = resume_state(cfg, run_dir)
    if resumed:
        state, run_dir = resumed
        cfg = OmegaConf.create(state["config"])
        link = (state["tracking_uri"], state["mlflow_run_id"]) if state.get("mlflow_run_id") else None
        tracker = start_tracker(cfg, run_dir, Path.cwd(), resume=link)
        log.info("resuming %s at iteration %d", run_dir, state["iteration"])
    else:
        tracker = start_tracker(cfg, run_dir, Path.cwd())
    log.info("tracking run %s in %s; outputs in %s", tracker.run_id, tracker.uri, run_dir)
    status = "FAILED"
    try:
        trainer = Trainer(cfg, run_dir, tracker)
        if resumed:
            trainer.load_state(resumed[0])
        objective = trainer.meta_train()
        status = "FINISHED"
    finally:
        tracker.finish(status)
    log.info("final post-adaptation return (mean of the last 20 iterations): %.3f", objective)
    return objective


def run_evaluation(cfg: DictConfig, out_dir: Path, launch_dir: Path) -> dict:
    """Evaluate checkpoints into ``out_dir`` and a tracked evaluation run; returns ``results.json``'s content."""
    from .run.build import start_tracker
    from .run.evaluation import EvaluationError, evaluate
    from .run.report import format_table

    try:
        results, candidates = evaluate(cfg, out_dir, tracking_uri(cfg, launch_dir))
    except EvaluationError as err:
        print(f"maml_rl: cannot evaluate: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_table(results, cfg.eval.num_steps))
    tracker = start_tracker(cfg, out_dir, launch_dir, run_name=f"evaluate-{cfg.env.name}")
    links = {f"evaluated.{c.method}": c.run_id or c.source for c in candidates}
    tracker.set_tags({"evaluated_runs": ",".join(c.run_id for c in candidates if c.run_id), **links})
    for method, rows in results.items():
        for k, r in rows.items():
            tracker.log_metrics({f"return_{method}": r["mean"], f"ci95_{method}": r["ci95"]}, step=k)
    for name in ("results.json", "results.csv", "adaptation_curve.png", "trajectories.png"):
        tracker.log_artifact(out_dir / name)
    tracker.finish()
    log.info("evaluation written to %s (tracking run %s)", out_dir, tracker.run_id)
    return results


def main(cfg: DictConfig, run_dir: Path) -> float | None:
    """Validate the composed config, then train or evaluate into ``run_dir``.

    Returns the run's objective (mean post-adaptation return of the last 20 iterations) for
    Hydra's sweepers, or None for an evaluation.

    Raises:
        SystemExit: code 2 with one line on stderr for a bad config value.
    """
    try:
        validate(cfg)
    except ConfigError as err:
        print(f"maml_rl: invalid config: {err}", file=sys.stderr)
        sys.exit(2)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.mode == "evaluate":
        run_evaluation(cfg, run_dir, Path.cwd())
        return None
    return train(cfg, run_dir)
