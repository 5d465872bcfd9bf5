"""Reports of an evaluation: the method × k table (terminal, CSV, JSON) and the figures."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend


def summarize(returns: torch.Tensor) -> dict[int, dict[str, float]]:
    """Mean and 95% confidence half-width (normal approximation, 1.96·s/√n) over tasks, per k."""
    n = returns.shape[1]
    return {k: {"mean": row.mean().item(), "ci95": 1.96 * row.std().item() / math.sqrt(n), "n_tasks": n}
            for k, row in enumerate(returns.double())}


def write_tables(results: dict, out_dir: Path) -> None:
    """``results.json`` (the contract) and ``results.csv`` (one row per method and k)."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "k", "mean", "ci95", "n_tasks"])
        for method, rows in results.items():
            for k, r in rows.items():
                writer.writerow([method, k, f"{r['mean']:.4f}", f"{r['ci95']:.4f}", r["n_tasks"]])


def format_table(results: dict, num_steps: int) -> str:
    """The method × k table as text: ``mean ± ci95`` per cell."""
    header = f"{'method':<12}" + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1))
    lines = [header]
    for method, rows in results.items():
        cells = [f"{rows[k]['mean']:8.2f} ± {rows[k]['ci95']:5.2f}" if k in rows else "-" for k in range(num_steps + 1)]
        lines.append(f"{method:<12}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def plot_curves(results: dict, num_steps: int, path: Path) -> None:
    """Average return vs. number of gradient steps, one line per method; the oracle as a line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(range(num_steps + 1))
    for method, rows in results.items():
        if method == "oracle":
            ax.axhline(rows[0]["mean"], color="k", linestyle="--", label="oracle")
            continue
        means = [rows[k]["mean"] for k in ks]
        ci = [rows[k]["ci95"] for k in ks]
        ax.errorbar(ks, means, yerr=ci, marker="o", capsize=3, label=method)
    ax.set_xlabel("number of gradient steps")
    ax.set_ylabel("average return")
    ax.set_xticks(ks)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(paths: dict, tasks: torch.Tensor, steps: int, path: Path, task: int = 0) -> None:
    """Figure 4's lower panels: one episode before adaptation and after the last step, goal marked."""
    methods = [m for m in paths if m != "oracle"]
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(4 * max(len(methods), 1), 4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        (pre, pre_mask), (post, post_mask) = paths[method][0], paths[method][-1]
        curves = [((pre, pre_mask), "--", "before adaptation"), ((post, post_mask), "-", f"after {steps} steps")]
        for (obs, mask), style, label in curves:
            xy = obs[task][mask[task].bool()][:, :2]  # states before each step, from the origin
            ax.plot(xy[:, 0], xy[:, 1], style, label=label)
        ax.plot(*tasks[task].tolist(), "r*", markersize=14, label="goal")
        ax.set_title(method)
        ax.set_xlim(-0.6, 0.6)
        ax.set_ylim(-0.6, 0.6)
        ax.set_aspect("equal")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
