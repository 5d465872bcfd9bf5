"""``python -m maml_rl --help`` and where the config lives: read from files only, so that the help
answers before torch or any plug-in is imported."""

from __future__ import annotations

import re
from pathlib import Path


def shipped(folder: str) -> Path:
    """A top-level folder of the project (``conf``, ``experiments``): inside the installed package
    (a wheel carries them as ``maml_rl/<folder>``), else beside it in a checkout."""
    package = Path(__file__).resolve().parent
    return package / folder if (package / folder).is_dir() else package.parent / folder


CONF = shipped("conf")  # the config groups
EXPERIMENTS = shipped("experiments")  # presets: the `experiment` group


def headline(comment: str) -> str:
    """A preset's description: its comment's first sentence, up to a ``": "`` outside parentheses."""
    sentence = re.split(r"\.(?:\s|$)", comment, maxsplit=1)[0]
    depth = 0
    for i, char in enumerate(sentence):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and sentence.startswith(": ", i):
            return sentence[:i]
    return sentence


GROUPS = {"env": "the task distribution", "algorithm": "the outer loop (meta-optimiser)",
          "inner": "the adaptation step", "baseline": "what is trained",
          "policy": "the policy", "tracking": "where runs are recorded"}


def help_text() -> str:
    """``python -m maml_rl --help``: the groups and their options, the main keys, the presets."""
    def options(group: str) -> str:
        return ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))

    presets = []
    for preset in sorted(EXPERIMENTS.glob("*.yaml")):
        comment = " ".join(ln[2:] for ln in preset.read_text().split("\n\n")[0].splitlines()
                           if ln.startswith("# ") and "@package" not in ln)
        presets.append(f"  {preset.stem:<20} {headline(comment)}")
    keys = "seed num_iterations meta_batch_size episodes_per_task checkpoint_every gamma gae_lambda threads"
    return "\n".join([
        "maml_rl: meta-reinforcement learning (MAML and its baselines), one Hydra app.",
        "",
        "  python -m maml_rl [group=option ...] [key=value ...]     train (mode=train)",
        "  python -m maml_rl mode=evaluate eval.checkpoints=[RUN, ...]   adaptation curves",
        "  python -m maml_rl --multirun key=a,b,c ...               a sweep (hydra/launcher=slurm for a cluster)",
        "  python -m maml_rl resume=RUN [num_iterations=N]          continue a run",
        "  python -m maml_rl --cfg job [overrides]                  print the composed config",
        "",
        "Config groups:",
        *(f"  {g:<10} {what}: {options(g)}" for g, what in GROUPS.items()),
        "  hydra/launcher  where sweep jobs run: basic (default), submitit_local, slurm",
        "",
        f"Main keys: {keys} (see --cfg job); mode (train | evaluate), resume (a run dir, checkpoint or MLflow run id),",
        "eval.* (mode=evaluate), inner.lr / inner.num_steps, algorithm.*, policy.*, tracking.uri.",
        "",
        "Presets (experiment=NAME):",
        *presets,
        "",
        "Docs: README.md and docs/ in the repository.",
    ])

