"""Where adaptation takes a 2D-navigation policy, and what knowing only the goal's direction is worth.

For fresh goals g (the evaluation task stream): collect support episodes with θ, adapt with the
run's inner loop (``inner.num_steps`` steps of size ``inner.lr``), then follow the adapted
policy's mean action for the horizon. The first table gives, per bin of goal distance |g|, how far
from the origin the policy ends up, the cosine between its end point and g, and its distance to g.

The second table is the return of the policy that moves at full speed (±0.1 per coordinate) to
r·g/|g| for one fixed reach r and stays there: what an adaptation that finds each goal's direction, but
not its distance, scores at best (the maximum over r). A second column gives the same on the
goals of the run's last meta-batches (kept in the checkpoint), the tasks behind the mean
post-adaptation return of its last 20 iterations.

    python experiments/navigation_reach.py outputs/<date>/<time>/checkpoint.pt [--tasks 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
from itertools import pairwise
from pathlib import Path

import torch
from omegaconf import OmegaConf

from maml_rl.core.checkpoint import load_checkpoint
from maml_rl.envs.navigation import Navigation2DEnv
from maml_rl.run.build import build_inner_loop, build_sampler, family_of, resolve_checkpoint
from maml_rl.run.evaluation import evaluation_generator, load_candidate
from maml_rl.tracking import TRACKERS

REACHES = (0.30, 0.35, 0.38, 0.40, 0.42, 0.45)
BINS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.75)


@torch.no_grad()
def fixed_reach_return(goals: torch.Tensor, reach: float, horizon: int = 100) -> torch.Tensor:
    """Return per goal, ``[task]``, of moving at full speed to ``reach``·g/|g| (goals ``[task, 2]``)."""
    env = Navigation2DEnv(goals.shape[0], 1, dtype=goals.dtype)
    env.set_tasks(goals)
    target = (reach * goals / goals.norm(dim=-1, keepdim=True).clamp_min(1e-12))[:, None]
    td, total = env.reset(), torch.zeros(goals.shape[0], 1, dtype=goals.dtype)
    alive = torch.ones(goals.shape[0], 1, dtype=torch.bool)
    for _ in range(horizon):
        td["action"] = target - td["observation"]  # the env clips to its ±0.1 per coordinate
        td = env.step(td)["next"]
        total += td["reward"][..., 0] * alive
        alive &= ~td["done"][..., 0]
    return total[:, 0]


@torch.no_grad()
def adapted_end_points(path: str, cfg, num_tasks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Goals ``[task, 2]`` and the adapted mean policy's position after the horizon ``[task, 2]``.

    ``cfg`` is the checkpoint's config. The oracle is not adapted (as in ``mode=evaluate``).
    """
    family = family_of(cfg)
    candidate = load_candidate(path, cfg, family=family)
    policy, generator = candidate.policy, evaluation_generator(seed + 1)
    goals = family.sample_tasks(num_tasks, evaluation_generator(seed))
    support_env, env = (family.make_env(num_tasks, n, candidate.oracle, normalize_actions=candidate.normalize_actions)
                        for n in (cfg.episodes_per_task, 1))
    inner_loop = build_inner_loop(cfg, policy, 0 if candidate.oracle else cfg.inner.num_steps)
    theta = {k: v.detach() for k, v in policy.params().items()}
    sampler = build_sampler(cfg, support_env, policy, generator)
    _, adaptation, _ = inner_loop.collect_and_adapt(sampler, theta, goals, differentiable=False)
    params = {k: v.detach() for k, v in adaptation.adapted.items()}
    env.set_tasks(goals)
    td = env.reset()
    for _ in range(cfg.env.horizon):
        td["action"] = policy.mode(policy.distribution(params, td["observation"]))
        td = env.step(td)["next"]
    return goals, td["observation"][:, 0, :2].to(goals.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a checkpoint.pt of a navigation run (or its run dir)")
    parser.add_argument("--tasks", type=int, default=1000, help="fresh goals (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (default 0)")
    args = parser.parse_args()
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1, got {args.tasks}")
    try:
        state = load_checkpoint(resolve_checkpoint(args.checkpoint, TRACKERS.settings({"name": "none"}), Path.cwd()))
    except (OSError, ValueError) as err:  # missing or not a checkpoint
        parser.error(str(err))
    cfg = OmegaConf.create(state["config"])
    recent = state.get("recent_tasks") or []  # none in checkpoints written before it was kept
    recent_goals = torch.cat(recent) if recent else None
    if cfg.env.name != "navigation":
        parser.error(f"checkpoint {args.checkpoint} was trained on env {cfg.env.name!r}; this analysis needs 'navigation'")
    goals, end = adapted_end_points(args.checkpoint, cfg, args.tasks, args.seed)
    distance, reach = goals.norm(dim=-1), end.norm(dim=-1)
    cosine = (goals * end).sum(-1) / (distance * reach).clamp_min(1e-12)
    error = (end - goals).norm(dim=-1)
    print(f"{'|goal|':<12}{'tasks':>6}{'|end|':>8}{'cosine':>8}{'|end - goal|':>14}")
    for low, high in pairwise(BINS):
        sel = (distance >= low) & (distance < high)
        if sel.any():
            print(f"{f'{low:.2f}-{high:.2f}':<12}{int(sel.sum()):>6}{reach[sel].mean():>8.3f}"
                  f"{cosine[sel].mean():>8.3f}{error[sel].mean():>14.3f}")
    print(f"\n{'fixed reach':<12}{'return':>8}" + (f"{f'last {len(recent)} meta-batches':>24}" if recent else ""))
    for r in REACHES:
        row = f"{r:<12.2f}{fixed_reach_return(goals, r, cfg.env.horizon).mean():>8.2f}"
        if recent:
            row += f"{fixed_reach_return(recent_goals, r, cfg.env.horizon).mean():>24.2f}"
        print(row)


if __name__ == "__main__":
    main()
