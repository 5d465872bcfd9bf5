"""Reports of an evaluation, all drawn from one long table (``Evaluation.table``, pandas): the
method × k summary (``results.json``, ``results.csv``, the terminal), the paired differences, the
per-task returns, and the figures.

The table has one row per method (label), training run, test task and k: ``method``, ``run`` (the
checkpoint's index, so that the seeds of one setting pool), ``seed``, ``task``, ``k``, ``return``,
``lr`` (the step size that led to k; empty at k = 0), ``reference`` (a family's fixed strategy,
e.g. buy-and-hold, rather than a policy), ``block`` (tasks of one block are not independent: the
family's ``task_blocks``, else one block per task), ``group`` (the family's ``task_groups``, e.g.
the asset; empty without) and, for a family with statistics, one column
``<statistics name>/<statistic>`` each (the deterministic policy's, e.g. ``backtest/sharpe``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import torch

from ..figures import pyplot

Z95 = 1.96  # the normal approximation's 95% quantile
PAIRED = ("paired", "paired_benchmark")  # the keys of a row's paired differences


def metric_name(label: str) -> str:
    """A label (``maml inner.lr=0.05``) as a metric or tag name (``maml_inner.lr_0.05``)."""
    return re.sub(r"[^\w\-./]", "_", label)


BOOTSTRAP_REPS = 1000  # replications of a block bootstrap (its interval moves by about 2 % between seeds)


def ci95(values: pd.Series, blocks: pd.Series | None = None) -> float:
    """The 95% confidence half-width of the mean of ``values``.

    Independent values (no ``blocks``, or one value per block): Z95·s/√n, the normal
    approximation (s with n − 1). Values in ``blocks`` that move together (several assets over the
    same dates): Z95 × the standard error of the mean under a bootstrap that resamples whole
    blocks with replacement (``arch.bootstrap.IIDBootstrap`` over the blocks' sums and counts,
    ``BOOTSTRAP_REPS`` replications, seed 0), so that n counts the blocks, not the values.
    """
    if blocks is None or blocks.nunique() == len(values):
        return Z95 * values.std(ddof=1) / math.sqrt(len(values))
    import numpy as np
    from arch.bootstrap import IIDBootstrap  # only for dependent tasks

    grouped = values.groupby(blocks.to_numpy())
    sums, counts = grouped.sum().to_numpy(np.float64), grouped.size().to_numpy(np.float64)
    if len(sums) < 2:
        return math.nan
    bootstrap = IIDBootstrap(sums, counts, seed=0)
    variance = bootstrap.cov(lambda s, c: np.array([s.sum() / c.sum()]), reps=BOOTSTRAP_REPS)
    return Z95 * math.sqrt(float(np.squeeze(variance)))


def blocks_of(rows: pd.DataFrame) -> pd.Series | None:
    """The ``block`` column of some rows of the long table (None for a table without one)."""
    return rows["block"] if "block" in rows.columns else None


def statistic_columns(table: pd.DataFrame) -> list[str]:
    """The family's statistic columns of ``table`` (``backtest/sharpe``, …; none for most families)."""
    return [c for c in table.columns if "/" in c]


def summarize(table: pd.DataFrame, benchmark: str | None = None) -> dict:
    """``results.json``'s content from the long table: ``{method: {k: {"mean", "ci95", "n_tasks",
    "n_blocks", "n_seeds", "lr", "paired", "paired_benchmark", <statistics name>}}}`` in the
    table's order of methods.

    The mean and the 95% interval pool runs (seeds) × tasks, the interval over blocks of
    dependent tasks where the family gives them (``ci95``; ``n_blocks`` independent blocks); ``lr`` lists each run's step size at
    k ≥ 1; ``paired`` and, given a ``benchmark`` row (a family's reference, e.g. buy-and-hold),
    ``paired_benchmark`` are added by ``add_paired``; a family's statistics are ``{statistic:
    {"mean", "ci95", "n_tasks", "n_seeds"}}`` under its statistics name.
    """
    results: dict[str, dict[int, dict]] = {}
    columns = statistic_columns(table)
    for (method, k), rows in table.groupby(["method", "k"], sort=False):
        runs, blocks = rows["run"].nunique(), blocks_of(rows)
        cell = {"mean": float(rows["return"].mean()), "ci95": float(ci95(rows["return"], blocks)),
                "n_tasks": len(rows) // runs, "n_blocks": int(rows["task"].nunique() if blocks is None else blocks.nunique()),
                "n_seeds": runs}
        if k > 0 and rows["lr"].notna().any():
            cell["lr"] = [float(a) for a in rows.drop_duplicates("run")["lr"]]
        for column in columns:
            group, name = column.split("/", 1)
            cell.setdefault(group, {})[name] = {"mean": float(rows[column].mean()),
                                                "ci95": float(ci95(rows[column], blocks)),
                                                "n_tasks": len(rows) // runs, "n_seeds": runs}
        results.setdefault(method, {})[int(k)] = cell
    add_paired(results, table, benchmark)
    return results


def add_paired(results: dict, table: pd.DataFrame, benchmark: str | None = None) -> None:
    """Add paired differences on the same tasks, ``{"reference", "mean", "ci95"}``: ``paired`` to
    every row of a policy other than the reference (the first MAML label), the reference's return
    minus the method's at the same k, and the same for each of the family's statistics (under
    ``<statistics name>: {statistic: {…, "paired"}}``, e.g. Meta-World's success rate); and, when
    ``benchmark`` names a row of ``table`` (a fixed strategy, e.g. buy-and-hold),
    ``paired_benchmark`` to every policy's row: the method's return at k minus the benchmark's.

    Every method is evaluated on the same tasks, so the spread of task difficulty (a goal velocity
    of 0 or 3), which dominates each method's own interval, cancels in the per-task difference:
    the paired interval answers "does the reference beat this method on these tasks?". Each
    task's value is first averaged over the method's runs; the half-width is ``ci95``'s over tasks
    (over blocks of tasks where the table has them).
    """
    per_task = table.groupby(["method", "k", "task"], sort=False)[["return", *statistic_columns(table)]].mean()
    block = table.drop_duplicates("task").set_index("task")["block"] if "block" in table.columns else None

    def paired(diff: pd.Series, reference: str) -> dict:
        diff = diff.dropna()
        return {"reference": reference, "mean": float(diff.mean()),
                "ci95": float(ci95(diff, None if block is None else block.loc[diff.index]))}

    labels = list(dict.fromkeys(table.loc[~table["reference"], "method"]))
    reference = next((label for label in labels if label.split()[0] == "maml"), None)
    for label in labels:
        for k, cell in results[label].items():
            if reference is not None and label != reference and k in results[reference]:
                diff = per_task.loc[(reference, k)] - per_task.loc[(label, k)]
                cell["paired"] = paired(diff["return"], reference)
                for column in statistic_columns(table):
                    group, name = column.split("/", 1)
                    if diff[column].notna().any():
                        cell[group][name]["paired"] = paired(diff[column], reference)
            if benchmark in results:  # a fixed strategy: its one row (k = 0) against every k
                diff = per_task.loc[(label, k), "return"] - per_task.loc[(benchmark, 0), "return"]
                cell["paired_benchmark"] = paired(diff, benchmark)


def summarize_groups(table: pd.DataFrame) -> pd.DataFrame:
    """One row per group (the family's ``task_groups``: the asset, the skill), method and k: ``group,
    method, k, mean, ci95, n_tasks`` of the return, and each statistic column's mean and
    ``<column>_ci95`` (an empty frame for a table without groups). Within a group every task is
    its own block (one asset's test windows do not overlap)."""
    if "group" not in table.columns or not table["group"].astype(bool).any():
        return pd.DataFrame(columns=["group", "method", "k", "mean", "ci95", "n_tasks"])

    rows = []
    for (group, method, k), part in table.groupby(["group", "method", "k"], sort=False):
        row = {"group": group, "method": method, "k": int(k), "mean": float(part["return"].mean()),
               "ci95": float(ci95(part["return"])), "n_tasks": int(part["task"].nunique())}  # NaN for one task
        for column in statistic_columns(table):
            row[column], row[f"{column}_ci95"] = float(part[column].mean()), float(ci95(part[column]))
        rows.append(row)
    return pd.DataFrame(rows)


def format_groups(groups: pd.DataFrame, num_steps: int) -> str:
    """``summarize_groups`` as text: per group, ``mean ± ci95`` per method and k (empty without groups)."""
    if groups.empty:
        return ""
    width = max([14, *(len(m) + 2 for m in groups["method"])])
    lines = []
    for group, part in groups.groupby("group", sort=False):
        lines.append(f"{group} ({int(part['n_tasks'].iloc[0])} tasks)".ljust(width)
                     + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1)))
        for method, rows in part.groupby("method", sort=False):
            cells = {int(r.k): cell_text({"mean": r.mean, "ci95": r.ci95}) for r in rows.itertuples()}
            lines.append(f"{method:<{width}}" + "".join(f"{cells.get(k, '-'):>18}" for k in range(num_steps + 1)))
    return "\n".join(lines)


def step_sizes(rows: dict) -> str:
    """α_1, α_2, … of one method's rows (``"0.1, 0.05, 0.05"``; empty without adaptation)."""
    return ", ".join(step_size_text(rows[k]) for k in sorted(rows) if k > 0 and rows[k].get("lr"))


def step_size_text(row: dict) -> str:
    """The step size that led to a row: ``0.1``, or the runs' values joined by ``|`` where they differ."""
    return "|".join(f"{a:g}" for a in dict.fromkeys(row.get("lr", [])))


def statistics_of(cell: dict) -> dict[str, dict]:
    """A row's statistics groups, ``{statistics name: {statistic: {"mean", "ci95", …}}}`` (its dict
    values other than the paired differences)."""
    return {key: value for key, value in cell.items() if isinstance(value, dict) and key not in PAIRED}


def statistic_groups(results: dict) -> dict[str, list[str]]:
    """``{statistics name: [statistic, …]}`` found in ``results`` (``{"backtest": ["return", "sharpe", …]}``)."""
    groups: dict[str, dict[str, None]] = {}
    for rows in results.values():
        for cell in rows.values():
            for key, value in statistics_of(cell).items():
                groups.setdefault(key, {}).update(dict.fromkeys(value))
    return {key: list(names) for key, names in groups.items()}


def write_tables(results: dict, table: pd.DataFrame, out_dir: Path, by_group: pd.DataFrame | None = None) -> list[Path]:
    """``results.json`` (the contract, see docs/outputs.md), ``results.csv`` (one row per method and
    k: the paired difference from the reference in ``paired_mean`` and ``paired_ci95``, empty for the
    reference; ``<statistics name>_<statistic>`` and ``…_ci95`` columns for a family's statistics)
    ``returns_per_task.csv`` (the policies' rows of the long table: ``method, seed, task``, the
    task's ``group`` and ``block`` where the family gives them, ``k, return`` and the deterministic
    policy's statistics, ``<statistics name>/<statistic>``) and, for a family
    with task groups, ``results_by_group.csv`` (``by_group``, ``summarize_groups``'s frame). Returns the paths."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    groups = statistic_groups(results)
    rows = []
    for method, cells in results.items():
        for k, cell in cells.items():
            paired, benchmark = cell.get("paired", {}), cell.get("paired_benchmark", {})
            row = {"method": method, "k": k, "mean": cell["mean"], "ci95": cell["ci95"], "n_tasks": cell["n_tasks"],
                   "n_seeds": cell["n_seeds"], "lr": step_size_text(cell), "paired_mean": paired.get("mean"),
                   "paired_ci95": paired.get("ci95"), "benchmark_mean": benchmark.get("mean"),
                   "benchmark_ci95": benchmark.get("ci95")}
            for group, names in groups.items():
                for name in names:
                    value = cell.get(group, {}).get(name, {})
                    row[f"{group}_{name}"], row[f"{group}_{name}_ci95"] = value.get("mean"), value.get("ci95")
            rows.append(row)
    pd.DataFrame(rows).to_csv(out_dir / "results.csv", index=False, float_format="%.4f")
    columns = ["method", "seed", "task", *(c for c in ("group", "block") if c in table.columns), "k", "return",
               *statistic_columns(table)]
    per_task = table.loc[~table["reference"], columns]
    per_task.to_csv(out_dir / "returns_per_task.csv", index=False, float_format="%.4f")
    files = [out_dir / name for name in ("results.json", "results.csv", "returns_per_task.csv")]
    if by_group is not None and not by_group.empty:
        by_group.to_csv(out_dir / "results_by_group.csv", index=False, float_format="%.4f")
        files.append(out_dir / "results_by_group.csv")
    return files


def format_counts(results: dict) -> str:
    """How many test tasks the tables pool, and how many of them are independent."""
    cell = next(iter(next(iter(results.values())).values()))
    tasks, blocks = cell["n_tasks"], cell.get("n_blocks", cell["n_tasks"])
    seeds = f" × {cell['n_seeds']} seeds" if cell["n_seeds"] > 1 else ""
    if blocks == tasks:
        return f"{tasks} test tasks{seeds}, independent: intervals are 1.96 s/√n"
    return (f"{tasks} test tasks{seeds} in {blocks} independent blocks (tasks of one block move together): "
            "intervals resample blocks")


def cell_text(cell: dict | None) -> str:
    return f"{cell['mean']:8.2f} ± {cell['ci95']:5.2f}" if cell else "-"


def format_table(results: dict, num_steps: int) -> str:
    """The method × k table as text: ``mean ± ci95`` per cell, then the step sizes α_1, α_2, …"""
    width = max([12, *(len(m) + 2 for m in results)])
    lines = [f"{'method':<{width}}" + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1)) + "   step sizes"]
    for method, rows in results.items():
        cells = [cell_text(rows.get(k)) for k in range(num_steps + 1)]
        lines.append(f"{method:<{width}}" + "".join(f"{c:>18}" for c in cells) + f"   {step_sizes(rows) or '-'}")
    return "\n".join(lines)


def format_paired(results: dict, num_steps: int, key: str = "paired") -> str:
    """A paired table as text, ``mean ± ci95`` per k (empty without one): ``key="paired"``, the
    reference minus each method on the same tasks; ``"paired_benchmark"``, each method minus the
    benchmark."""
    rows = {m: r for m, r in results.items() if any(key in row for row in r.values())}
    if not rows:
        return ""
    reference = next(row[key]["reference"] for r in rows.values() for row in r.values() if key in row)
    width = max([12, *(len(m) + 2 for m in rows)])
    title = (f"{reference} minus each method on the same tasks (paired):" if key == "paired" else
             f"each method minus {reference} on the same tasks (paired):")
    lines = [title, f"{'method':<{width}}" + "".join(f"{f'k={k}':>18}" for k in range(num_steps + 1))]
    for method, r in rows.items():
        cells = [cell_text(r[k].get(key)) if k in r else "-" for k in range(num_steps + 1)]
        lines.append(f"{method:<{width}}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def format_statistics(results: dict) -> str:
    """Each statistics group (a family's, e.g. ``backtest``) as text: one line per method and k,
    ``mean ± ci95`` of every statistic of the deterministic policy, then each statistic's paired
    table (the reference minus each method on the same tasks; empty for none)."""
    blocks = []
    for group, names in statistic_groups(results).items():
        width = max([14, *(len(m) + 2 for m in results)])
        lines = [f"{group:<{width}}{'k':>3}" + "".join(f"{n:>20}" for n in names)]
        for method, rows in results.items():
            for k, cell in rows.items():
                values = cell.get(group, {})
                cells = [f"{values[n]['mean']:9.3f} ± {values[n]['ci95']:6.3f}" if n in values else "-" for n in names]
                lines.append(f"{method:<{width}}{k:>3}" + "".join(f"{c:>20}" for c in cells))
        blocks.append("\n".join(lines))
        num_steps = max(k for rows in results.values() for k in rows)
        for name in names:
            view = {m: {k: {"paired": c[group][name]["paired"]} for k, c in rows.items()
                        if "paired" in c.get(group, {}).get(name, {})} for m, rows in results.items()}
            table = format_paired(view, num_steps)
            if table:
                blocks.append(table.replace("(paired):", f"(paired), {group} {name}:", 1))
    return "\n\n".join(blocks)


def plot_curves(results: dict, num_steps: int, path: Path, title: str) -> None:
    """``curves_figure`` saved to ``path``."""
    plt = pyplot()
    fig = curves_figure(results, num_steps, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curves_figure(results: dict, num_steps: int, title: str):
    """Average return vs. number of gradient steps (Finn et al., 2017, Figure 4): one line per method
    (its step sizes in the legend) with its shaded 95% confidence band, markers offset so the bands do not hide each other; a
    method evaluated without adaptation (the oracle) as a horizontal band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ks = torch.arange(num_steps + 1, dtype=torch.float64)
    adapted = [m for m, rows in results.items() if len(rows) > 1 or num_steps == 0]
    fixed = [m for m in results if m not in adapted]
    for i, (method, rows) in enumerate(results.items()):
        n = rows[0]["n_tasks"] * rows[0].get("n_seeds", 1)
        blocks = rows[0].get("n_blocks", rows[0]["n_tasks"])
        n = f"{n} in {blocks} blocks" if blocks < rows[0]["n_tasks"] else n
        if method not in adapted:  # the oracle, a benchmark: one line each, told apart by style and shade
            mean, ci = rows[0]["mean"], rows[0]["ci95"]
            j = fixed.index(method)
            style, color = ["--", ":", "-.", (0, (5, 1))][j % 4], ["k", "0.45", "tab:brown", "tab:olive"][j // 4 % 4]
            ax.axhline(mean, color=color, linestyle=style, label=f"{method} (no adaptation, n={n})")
            ax.axhspan(mean - ci, mean + ci, color=color, alpha=0.1)
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
