"""Check that this checkout computes what a reference commit computed: the per-iteration
``pre_adaptation_return``, ``post_adaptation_return`` and ``kl`` of the default 2D-navigation
config (seed 0, one thread) must be bit-identical.

The reference commit's package is unpacked from git (``git archive``) into a temporary dir and
run in a subprocess of the same Python; where the commit cannot be read (a shallow clone),
``tests/data/same_math_navigation_seed0.json`` — the reference's 20 iterations recorded on the
development machine — stands in for it.

    python experiments/same_math.py                     # 20 iterations against 18104d2
    python experiments/same_math.py --recorded-first    # against the recorded file, the commit only if they differ
    python experiments/same_math.py --iterations 5 --against <commit>
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "18104d2"  # the last commit before the package was reorganised into core / plug-ins / run
RECORDED = ROOT / "tests" / "data" / "same_math_navigation_seed0.json"
KEYS = ("pre_adaptation_return", "post_adaptation_return", "kl")

# the reference commit's API: maml_rl.config.register and the Trainer (maml_rl.trainer before the reorganisation)
REFERENCE_DRIVER = """
import json, sys, tempfile
from pathlib import Path
import torch
from hydra import compose, initialize_config_dir
import maml_rl
from maml_rl.config import register
try:
    from maml_rl.run.trainer import Trainer
except ImportError:
    from maml_rl.trainer import Trainer
assert maml_rl.__file__.startswith(sys.argv[1]), maml_rl.__file__  # the reference's package, not this checkout's
register()
torch.set_num_threads(1)
with initialize_config_dir(config_dir=str(Path(sys.argv[1]) / "conf"), version_base="1.3"):
    cfg = compose(config_name="config", overrides=["seed=0", "threads=1"])
with tempfile.TemporaryDirectory() as tmp:
    trainer = Trainer(cfg, Path(tmp))
    rows = [trainer.meta_step() for _ in range(int(sys.argv[2]))]
print(json.dumps([{k: m[k] for k in KEYS} for m in rows]))
""".replace("KEYS", repr(KEYS))


def current(iterations: int) -> list[dict[str, float]]:
    """This checkout's metrics, in this process on one thread."""
    from hydra import compose, initialize_config_dir

    from maml_rl.config import register
    from maml_rl.run.build import build_trainer

    register()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=["seed=0", "threads=1"])
        with tempfile.TemporaryDirectory() as tmp:
            trainer = build_trainer(cfg, Path(tmp))
            rows = [trainer.meta_step() for _ in range(iterations)]
    finally:
        torch.set_num_threads(threads)
    return [{k: m[k] for k in KEYS} for m in rows]


def reference(commit: str, iterations: int) -> tuple[list[dict[str, float]], str]:
    """The reference commit's metrics and where they come from (the commit, or the recorded file)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "maml_rl", "conf"], capture_output=True,
                                 check=False)
        if archive.returncode == 0:
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            run = subprocess.run([sys.executable, "-c", REFERENCE_DRIVER, tmp, str(iterations)], cwd=tmp,
                                 env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                                 check=True)
            return json.loads(run.stdout.strip().splitlines()[-1]), f"commit {commit}"
    recorded = json.loads(RECORDED.read_text())
    if iterations > len(recorded):
        raise SystemExit(f"commit {commit} is not readable here and {RECORDED} holds only {len(recorded)} iterations")
    return recorded[:iterations], str(RECORDED.relative_to(ROOT))


def compare(got: list[dict], expected: list[dict], source: str) -> int:
    """Print both side by side; the number of iterations that differ."""
    print(f"{'it':>3}  " + "  ".join(f"{k:>24}" for k in KEYS) + f"   (reference: {source})")
    mismatches = 0
    for i, (a, b) in enumerate(zip(got, expected)):
        same = all(a[k] == b[k] for k in KEYS)
        mismatches += not same
        print(f"{i:>3}  " + "  ".join(f"{a[k]:>24.17g}" for k in KEYS) + ("" if same else "   differs from "
                                                                          + str([b[k] for k in KEYS])))
    print(f"{len(got) - mismatches} of {len(got)} iterations bit-identical")
    return mismatches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--against", default=REFERENCE, help=f"reference commit (default {REFERENCE})")
    parser.add_argument("--recorded-first", action="store_true",
                        help="compare with the recorded reference first; run the commit only if they differ "
                             "(a machine whose arithmetic differs from the one that recorded it)")
    args = parser.parse_args()
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    got = current(args.iterations)
    if args.recorded_first and args.against == REFERENCE and args.iterations <= len(json.loads(RECORDED.read_text())):
        recorded = json.loads(RECORDED.read_text())[:args.iterations]
        if all(a[k] == b[k] for a, b in zip(got, recorded) for k in KEYS):
            return compare(got, recorded, f"{RECORDED.relative_to(ROOT)}, recorded from commit {REFERENCE}")
    expected, source = reference(args.against, args.iterations)
    return 1 if compare(got, expected, source) else 0


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
