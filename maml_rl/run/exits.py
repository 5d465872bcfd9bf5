"""How a command ends when it cannot start or is stopped: one line, an exit code, and no output dir
left behind by a refusal. Torch-free, so that a refused config costs no more than composing it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Stopped


class Refused(Exception):
    """A job that cannot start; the message is the one line the user reads (nothing was done)."""


def remove_launch_dir(run_dir: Path) -> None:
    """Remove what Hydra wrote for this launch (``.hydra/``, ``maml_rl.log``), then the dir and the
    parents Hydra made for it (``outputs/<date>/``) as far as they are empty, up to the launch dir:
    a dir that holds anything more (a checkpoint, other runs, ``hydra.run.dir=.``) is left as it is."""
    if (run_dir / "checkpoint.pt").exists():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / "maml_rl.log").unlink(missing_ok=True)
    launch = Path.cwd().resolve()
    for folder in [run_dir.resolve(), *run_dir.resolve().parents]:
        if folder == launch or launch not in folder.parents:
            break
        try:
            folder.rmdir()
        except OSError:  # not empty: something else lives there
            break


def refuse(run_dir: Path, message: str):
    """Exit 2 with one line on stderr, leaving no output dir behind."""
    remove_launch_dir(run_dir)
    print(f"maml_rl: {message}", file=sys.stderr)
    sys.exit(2)


def stopped(err: Stopped, run_dir: Path):
    """The one line after a stop (where the checkpoint is, how to continue), then exit 128 + the signal
    (130 for SIGINT, 143 for SIGTERM)."""
    print(f"maml_rl: {err}: checkpoint {err.checkpoint}; continue with: python -m maml_rl resume={run_dir}")
    sys.exit(128 + err.signum)
