"""``make bench``: seconds per meta-iteration of the default config, with a breakdown.

The reference in the same run is the same config with exact Fisher-vector products
(``algorithm.fvp_subsample=1``); the printed ratio is reference / default.
Usage: ``python -m maml_rl.bench [--iterations N] [--warmup N] [override ...]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from .config import register, validate
from .trainer import Trainer

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ("time_iteration", "time_sampling", "time_inner", "time_outer")


def measure(overrides: list[str], iterations: int, warmup: int) -> dict[str, float]:
    """Median of each timing over ``iterations`` meta-iterations after ``warmup`` ones."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    validate(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp))
        for _ in range(warmup):
            trainer.meta_step()
        runs = [trainer.meta_step() for _ in range(iterations)]
    return {k: statistics.median(r[k] for r in runs) for k in (*KEYS, "env_steps_per_second")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    register()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.iterations} meta-iterations")
    rows = [("default", args.overrides), ("exact FVP (reference)", [*args.overrides, "algorithm.fvp_subsample=1.0"])]
    results = {name: measure(ov, args.iterations, args.warmup) for name, ov in rows}
    print(f"{'config':<24}{'s/iter':>8}{'sampling':>10}{'inner':>8}{'outer':>8}{'env steps/s':>13}")
    for name, r in results.items():
        print(f"{name:<24}{r['time_iteration']:>8.3f}{r['time_sampling']:>10.3f}{r['time_inner']:>8.3f}"
              f"{r['time_outer']:>8.3f}{r['env_steps_per_second']:>13.0f}")
    default, reference = results["default"]["time_iteration"], results["exact FVP (reference)"]["time_iteration"]
    print(f"speed-up of default over the exact-FVP reference: {reference / default:.2f}x")
    print(f"default vs the 0.75 s/iteration target: {default / 0.75:.2f} of the budget")


if __name__ == "__main__":
    main()
