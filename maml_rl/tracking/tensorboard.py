"""TensorBoard tracking (``tracking=tensorboard``): scalars, figures and the config of each run as
event files (``torch.utils.tensorboard``), so that ``tensorboard --logdir`` shows a run or a sweep.

TensorBoard is imported only when a run starts. It keeps no store of runs, so a run is found
again by its event dir (the ``run_id`` a checkpoint records) and checkpoints are given by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import TRACKERS, TrackingConfig

IMAGES = (".png",)  # artifacts shown as images; the others stay in the run dir
TEXTS = (".json", ".csv", ".yaml", ".txt")  # and as text, up to TEXT_LIMIT characters
TEXT_LIMIT = 20_000


def markdown_table(values: dict[str, str]) -> str:
    """``{key: value}`` as a two-column Markdown table (TensorBoard's text tab renders it)."""
    return "\n".join(["| key | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in sorted(values.items()))])


@dataclass
class TensorBoardConfig(TrackingConfig):
    """``tracking=tensorboard``: ``uri`` a directory that collects every run's event files (created if
    need be), or null: each job writes into ``<run dir>/tensorboard/``, so ``tensorboard --logdir
    <sweep dir>`` (or ``--logdir outputs``) shows all of them. ``experiment`` is not used."""

    name: str = "tensorboard"


@TRACKERS.register("tensorboard", TensorBoardConfig)
class TensorBoardTracker:
    """The event files of one job under ``<root>/<run name>``: every metric as a scalar (tags grouped by
    their ``train/``, ``time/`` … prefix), every PNG artifact as an image (the learning curve at
    each checkpoint, an evaluation's figures), small text artifacts, the params and tags as
    Markdown tables, and the final status. See ``Tracker`` for the arguments."""

    name = "tensorboard"

    def __init__(self, config: TrackingConfig, *, run_dir: Path, launch_dir: Path, run_name: str,
                 tags: dict[str, str], params: dict[str, str], resume: tuple[str, str] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        if resume:  # (root, event dir): append to that run's event files
            self.uri, self.run_id = resume
        else:
            root = Path(launch_dir) / config.uri if config.uri else Path(run_dir) / "tensorboard"
            self.uri = str(root.resolve())
            self.run_id = str(Path(self.uri) / run_name.replace("/", "_"))
        # a sweep's job (Hydra writes multirun.yaml in the sweep dir): one --logdir shows every job
        sweep = Path(run_dir).resolve().parent
        self.logdir = str(sweep) if not config.uri and (sweep / "multirun.yaml").is_file() else self.uri
        self.writer = SummaryWriter(self.run_id)
        self.steps: dict[str, int] = {}  # per image tag: how many were logged (their step)
        if not resume:
            self.writer.add_text("params", markdown_table(params))
            self.set_tags(tags)

    def where(self) -> str:
        """The command that shows this run (with a sweep's other jobs, or the other runs under ``uri``)."""
        return f"tensorboard --logdir {self.logdir}   then http://127.0.0.1:6006"

    def set_tags(self, tags: dict[str, str]) -> None:
        self.writer.add_text("tags", markdown_table(tags), self.steps.setdefault("tags", 0))
        self.steps["tags"] += 1

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            return
        tag = f"{artifact_path}/{path.stem}" if artifact_path else path.stem
        step = self.steps.get(tag, 0)
        if path.suffix in IMAGES:
            from matplotlib.image import imread

            self.writer.add_image(tag, imread(path)[..., :3], step, dataformats="HWC")
        elif path.suffix in TEXTS:
            self.writer.add_text(tag, f"```\n{path.read_text()[:TEXT_LIMIT]}\n```", step)
        else:
            return
        self.steps[tag] = step + 1

    def finish(self, status: str = "FINISHED") -> None:
        self.writer.add_text("status", status)
        self.writer.close()

    @classmethod
    def checkpoint_of(cls, reference: str, config: TrackingConfig, launch_dir: Path) -> None:
        return None  # no store of runs: a checkpoint is given by its path or run dir

    @classmethod
    def start_sweep(cls, config, sweep_dir, launch_dir, tags, params) -> None:
        pass  # every job writes under the sweep dir (or the common root): one --logdir shows them all

    @classmethod
    def finish_sweep(cls, config, sweep_dir, maximize, best_params) -> None:
        return None
