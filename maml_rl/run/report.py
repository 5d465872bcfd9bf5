"""Reports of an evaluation: the method × k table (terminal, CSV, JSON) and the figures."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend


def metric_name(label: str) -> str:
    """A label (``maml inner.lr=0.05``) as a metric or tag name (``maml_inner.lr_0.05``)."""
    return re.sub(r"[^\w\-./]", "_", label)


def summarize(returns: torch.Tensor, seeds: int = 1) -> dict[int, dict[str, float]]:
    """Mean and 95% confidence half-width (normal approximation, 1.96·s/√n) per k.

    ``returns`` is ``[k, sample]`` with ``seeds`` seeds × n_tasks tasks per row.
    """
    n = returns.shape[1]
    return {k: {"mean": row.mean().item(), "ci95": 1.96 * row.std().item() / math.sqrt(n), "n_tasks": n // seeds,
                "n_seeds": seeds} for k, row in enumerate(returns.double())}


def add_paired(results: dict, per_task: dict[str, torch.Tensor]) -> None:
    """Add ``paired`` to every row of a method other than the reference (the first MAML label):
    the reference's return minus the method's on the same tasks, ``{"reference", "mean", "ci95"}``.

    Every method is evaluated on the same tasks, so the spread of task difficulty (a goal velocity
    of 0 or 3), which dominates each method's own interval, cancels in the per-task difference:
    the paired interval answers "does the reference beat this method on these tasks?". The 95%
    half-width is 1.96·s/√n over tasks (normal approximation). ``per_task`` is ``{label: [k, task]}``
    (each task's return averaged over seeds); labels and ``k`` are those of ``results``.
    """
    reference = next((label for label in per_task if label.split()[0] == "maml"), None)
    if reference is None:
        return
    for label, returns in per_task.items():
        if label == reference:
            continue
        for k in range(min(len(returns), len(per_task[reference]))):
            diff = (per_task[reference][k] - returns[k]).double()
            results[label][k]["paired"] = {"reference": reference, "mean": diff.mean().item(),
                                           "ci95": 1.96 * diff.std().item() / math.sqrt(diff.numel())}


def format_paired(results: dict, num_steps: int) -> str:
    """The paired table as text: reference − method on the same tasks, ``mean ± ci95`` per k
    (empty without a reference)."""
    rows = {m: r for m, r in results.items() if any("paired" in row for row in r.values())}
    if not rows:
        return ""
    reference = next(row["paired"]["reference"] for r in rows.values() for row in r.values() if "paired" in row)
    width = max([12, *(len(m) + 2 for m in rows)])
    lines = [f"{reference} minus each method on the same tasks (paired):",
             f"{'method':<{width}}" + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1))]
    for method, r in rows.items():
        cells = [f"{r[k]['paired']['mean']:8.2f} ± {r[k]['paired']['ci95']:5.2f}" if k in r and "paired" in r[k]
                 else "-" for k in range(num_steps + 1)]
        lines.append(f"{method:<{width}}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def backtest_names(results: dict) -> list[str]:
    """The backtest statistics in ``results`` (``return``, ``sharpe``, …; none outside a backtest)."""
    return list(dict.fromkeys(name for rows in results.values() for r in rows.values() for name in r.get("backtest", {})))


def write_tables(results: dict, out_dir: Path) -> None:
    """``results.json`` (the contract) and ``results.csv`` (one row per method and k: the paired
    difference from the reference in ``paired_mean`` and ``paired_ci95``, empty for the reference; with
    a backtest, ``bt_<statistic>`` and ``bt_<statistic>_ci95`` columns of the deterministic policy)."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    names = backtest_names(results)
    with open(out_dir / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "k", "mean", "ci95", "n_tasks", "n_seeds", "lr", "paired_mean", "paired_ci95",
                         *(f"bt_{n}{suffix}" for n in names for suffix in ("", "_ci95"))])
        for method, rows in results.items():
            for k, r in rows.items():
                tested, paired = r.get("backtest", {}), r.get("paired")
                writer.writerow([method, k, f"{r['mean']:.4f}", f"{r['ci95']:.4f}", r["n_tasks"], r["n_seeds"],
                                 step_size_text(r), *((f"{paired['mean']:.4f}", f"{paired['ci95']:.4f}") if paired
                                                      else ("", "")),
                                 *(f"{tested[n][key]:.4f}" if n in tested else ""
                                                      for n in names for key in ("mean", "ci95"))])


def write_per_task(returns: dict[str, list[tuple[int, torch.Tensor]]], out_dir: Path) -> None:
    """``returns_per_task.csv``: one row per method, training seed, test task and k (columns
    ``method, seed, task, k, return``), from ``{label: [(seed, [k, task] returns)]}``, for analyses
    the tables do not make (the tasks are the same for every method, in the same order)."""
    with open(out_dir / "returns_per_task.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "seed", "task", "k", "return"])
        for label, seeds in returns.items():
            for seed, rows in seeds:
                for k, row in enumerate(rows.tolist()):
                    writer.writerows([label, seed, task, k, f"{value:.4f}"] for task, value in enumerate(row))


def step_sizes(rows: dict) -> str:
    """α_1, α_2, … of one method's rows (``"0.1, 0.05, 0.05"``; empty without adaptation)."""
    return ", ".join(step_size_text(rows[k]) for k in sorted(rows) if k > 0 and rows[k].get("lr"))


def step_size_text(row: dict) -> str:
    """The step size that led to a row: ``0.1``, or the seeds' values joined by ``|`` where they differ."""
    return "|".join(f"{a:g}" for a in dict.fromkeys(row.get("lr", [])))


def format_table(results: dict, num_steps: int) -> str:
    """The method × k table as text: ``mean ± ci95`` per cell, then the step sizes α_1, α_2, …"""
    width = max([12, *(len(m) + 2 for m in results)])
    header = f"{'method':<{width}}" + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1)) + "   step sizes"
    lines = [header]
    for method, rows in results.items():
        cells = [f"{rows[k]['mean']:8.2f} ± {rows[k]['ci95']:5.2f}" if k in rows else "-" for k in range(num_steps + 1)]
        lines.append(f"{method:<{width}}" + "".join(f"{c:>18}" for c in cells) + f"   {step_sizes(rows) or '-'}")
    return "\n".join(lines)


def format_backtest(results: dict) -> str:
    """The backtest table as text: one line per method and k, ``mean ± ci95`` of every statistic of
    the deterministic policy (empty without a backtest)."""
    names = backtest_names(results)
    if not names:
        return ""
    width = max([14, *(len(m) + 2 for m in results)])
    lines = [f"{'backtest':<{width}}{'k':>3}" + "".join(f"{n:>20}" for n in names)]
    for method, rows in results.items():
        for k, r in rows.items():
            cells = [f"{r['backtest'][n]['mean']:9.3f} ± {r['backtest'][n]['ci95']:6.3f}" for n in names]
            lines.append(f"{method:<{width}}{k:>3}" + "".join(f"{c:>20}" for c in cells))
    return "\n".join(lines)


def plot_equity(tests: dict, tasks: torch.Tensor, path: Path, windows: int = 4) -> None:
    """Cumulative reward (trading: percent log-return of the equity) of each method's deterministic
    policy, before adaptation and after the last step, and of the benchmarks, on the first
    ``windows`` test tasks; ``tests`` is ``{label: [(statistics, rewards [K + 1, task, time]), …]}``
    (the first seed is drawn)."""
    shown = min(windows, tasks.shape[0])
    fig, axes = plt.subplots(1, shown, figsize=(4.2 * shown, 3.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        for j, (label, runs) in enumerate(tests.items()):
            rewards = runs[0][1][:, i].double().cumsum(-1)
            if len(rewards) == 1:
                ax.plot(rewards[0], color=f"C{j}", linestyle=":" if "flat" in label else "--", label=label)
                continue
            ax.plot(rewards[0], color=f"C{j}", alpha=0.5, linewidth=0.8, label=f"{label}, k=0")
            ax.plot(rewards[-1], color=f"C{j}", label=f"{label}, k={len(rewards) - 1}")
        ax.set_title(f"test task {i}", fontsize=9)
        ax.set_xlabel("bar")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("cumulative reward (% log-return)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7)
    fig.suptitle("deterministic policies on held-out windows vs benchmarks")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(results: dict, num_steps: int, path: Path, title: str) -> None:
    """``curves_figure`` saved to ``path``."""
    fig = curves_figure(results, num_steps, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_figure(results: dict, num_steps: int, title: str) -> plt.Figure:
    """Average return vs. number of gradient steps (Finn et al., 2017, Figure 4): one line per method
    (its step sizes in the legend) with its shaded 95% confidence band, markers offset so the bands do not hide each other; a
    method evaluated without adaptation (the oracle) as a horizontal band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = torch.arange(num_steps + 1, dtype=torch.float64)
    adapted = [m for m, rows in results.items() if len(rows) > 1 or num_steps == 0]
    fixed = [m for m in results if m not in adapted]
    for i, (method, rows) in enumerate(results.items()):
        n = rows[0]["n_tasks"] * rows[0].get("n_seeds", 1)
        if method not in adapted:  # the oracle, a benchmark: one line each, told apart by their style
            mean, ci = rows[0]["mean"], rows[0]["ci95"]
            style = ["--", ":", "-.", (0, (5, 1))][fixed.index(method) % 4]
            ax.axhline(mean, color="k", linestyle=style, label=f"{method} (no adaptation, n={n})")
            ax.axhspan(mean - ci, mean + ci, color="k", alpha=0.1)
            continue
        x = ks + 0.06 * (adapted.index(method) - (len(adapted) - 1) / 2)
        means = torch.tensor([rows[k]["mean"] for k in range(num_steps + 1)])
        ci = torch.tensor([rows[k]["ci95"] for k in range(num_steps + 1)])
        alphas = f", α {step_sizes(rows)}" if step_sizes(rows) else ""
        line, = ax.plot(x, means, marker="o", label=f"{method} (n={n}{alphas})")
        ax.fill_between(x, means - ci, means + ci, color=line.get_color(), alpha=0.2)
    ax.set_title(title)
    ax.set_xlabel("number of gradient steps k")
    ax.set_ylabel("average return per episode")
    ax.set_xticks(ks.tolist())
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title="mean ± 95% CI")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_learning_curve(history: dict[str, list[float]], iteration: int, title: str, path: Path) -> Path:
    """Pre- and post-adaptation return of every iteration up to ``iteration``; returns ``path``."""
    fig, ax = plt.subplots(figsize=(7, 4))
    start = iteration - len(history["post"])  # a run resumed from a checkpoint without history starts later
    x = list(range(start, iteration))
    ax.plot(x, history["pre"], label="pre-adaptation (support episodes)", alpha=0.8)
    ax.plot(x, history["post"], label="post-adaptation (query episodes)", alpha=0.8)
    ax.set_title(title)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("average return per episode")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_activation(table: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    """A heatmap of ``{part: {condition: activation}}`` (e.g. experts × task condition) saved to ``path``."""
    rows, columns = list(table), sorted({c for values in table.values() for c in values})
    data = torch.tensor([[table[r].get(c, float("nan")) for c in columns] for r in rows])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 1.1 * len(columns)), 1.2 + 0.5 * len(rows)))  # room for the title
    image = ax.imshow(data.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in zip(((i, j) for i in range(len(rows)) for j in range(len(columns))), data.flatten().tolist()):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="w" if value < 0.6 else "k", fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="mean gate weight")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_trajectories(paths: dict, tasks: torch.Tensor, steps: int, path: Path, task: int = 0) -> None:
    """Figure 4's lower panels: one episode of one task before adaptation and after the last step,
    the goal marked; positions in the plane, limits that fit every path."""
    methods = list(paths)
    fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(4 * max(len(methods), 1), 4.6), squeeze=False)
    goal = tasks[task, :2].tolist()
    points = [torch.tensor([goal, [0.0, 0.0]])]
    for ax, method in zip(axes[0], methods):
        (pre, pre_mask), (post, post_mask) = paths[method][0], paths[method][-1]
        curves = [((pre, pre_mask), "--", "before adaptation"), ((post, post_mask), "-", f"after {steps} steps")]
        for (obs, mask), style, label in curves:
            xy = obs[task][mask[task].bool()][:, :2].double()  # positions before each step, from the origin
            xy = xy[xy.isfinite().all(-1)]  # a diverged step size leaves no position to draw
            points.append(xy)
            ax.plot(xy[:, 0], xy[:, 1], style, label=label)
        ax.plot(*goal, "r*", markersize=14, label="goal")
        ax.set_title(method)
        ax.set_xlabel("x position")
        ax.set_ylabel("y position")
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    corners = torch.cat(points)
    center = (corners.min(0).values + corners.max(0).values) / 2
    half = (corners.max(0).values - corners.min(0).values).max().item() / 2 + 0.05  # a square that holds every path
    for ax in axes[0]:
        ax.set_xlim(center[0].item() - half, center[0].item() + half)
        ax.set_ylim(center[1].item() - half, center[1].item() + half)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle(f"2D navigation, task {task}: one episode before and after adaptation")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
