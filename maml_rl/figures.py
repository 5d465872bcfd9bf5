"""Matplotlib, headless, imported only when a figure is drawn (a command that draws none starts faster),
and the training figures: the learning curve and a policy's activation by task condition."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(history: dict[str, list[float]], iteration: int, title: str, path: Path) -> Path:
    """Pre- and post-adaptation return of every iteration up to ``iteration``; returns ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    start = iteration - len(history["post"])  # a run resumed from a checkpoint without history starts later
    x = list(range(start, iteration))
    ax.plot(x, history["pre"], label="pre-adaptation (support episodes)", alpha=0.8)
    ax.plot(x, history["post"], label="post-adaptation (query episodes)", alpha=0.8)
    ax.set_title(title)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("average return per episode")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)  # below: never on the data
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_activation(table: dict[str, dict[str, float]], title: str, path: Path) -> Path:
    """A heatmap of ``{part: {condition: activation}}`` (e.g. experts × task condition) saved to ``path``."""
    import torch

    plt = pyplot()
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
