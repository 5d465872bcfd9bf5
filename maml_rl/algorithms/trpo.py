"""MAML-TRPO: a trust-region meta-update on the query surrogate (Schulman et al., 2015; Finn et al., 2017)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from tensordict import TensorDict

from ..core.maml import Adaptation
from ..core.objective import MetaObjective
from ..core.params import Params
from .settings import ALGORITHMS, TRPOConfig

log = logging.getLogger(__name__)

Vector = torch.Tensor


def flat(tensors) -> Vector:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Vector, like: Params) -> Params:
    out, i = {}, 0
    for name, p in like.items():
        out[name] = vector[i:i + p.numel()].view_as(p)
        i += p.numel()
    return out


def conjugate_gradient(fvp: Callable[[Vector], Vector], b: Vector, iters: int, tol: float = 1e-10) -> Vector:
    """Approximately solve F x = b for symmetric positive-definite F given only x ↦ F x.

    Standard CG (Nocedal & Wright, Alg. 5.2) as used by TRPO (Schulman et al., 2015, App. C).
    Shapes: ``b`` and the result ``[n]``.
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r.dot(r)
    for _ in range(iters):
        if rr < tol:
            break
        fp = fvp(p)
        alpha = rr / p.dot(fp)
        x += alpha * p
        r -= alpha * fp
        rr_new = r.dot(r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def subsample_episodes(episodes: TensorDict, fraction: float, generator: torch.Generator) -> TensorDict:
    """The same random ``ceil(fraction · E)`` episodes of every task, ``[task, E', time]``."""
    num = episodes.shape[1]
    keep = max(1, math.ceil(fraction * num))
    if keep >= num:
        return episodes
    index = torch.randperm(num, generator=generator)[:keep]
    return episodes[:, index]


def fisher_vector_product(objective: MetaObjective, theta: Params, adaptation: Adaptation, fraction: float,
                          damping: float, generator: torch.Generator) -> Callable[[Vector], Vector]:
    """v ↦ (F + damping·I) v, F the Hessian of the mean KL(π_θ'old ‖ π_θ'(θ)) at θ.

    At θ = θ_old the KL's gradient w.r.t. θ' vanishes, so its Hessian w.r.t. θ is exactly
    Jᵀ F' J, with J = dθ'/dθ (the inner loop's Jacobian, identity for first-order MAML) and F'
    the Fisher of each adapted policy. J v and Jᵀ u are Hessian-vector products of the inner
    loss through a kept graph; F' u is a Hessian-vector product of the KL at θ'. With
    ``fraction`` < 1 every product uses one random subsample of each task's support and
    query episodes, drawn once per update (standard TRPO's subsampled curvature, rllab's ``subsample_factor``);
    ``fraction = 1`` gives the exact product and reuses ``adaptation``, the differentiable
    inner loop already built from θ.
    """
    point = {k: v.detach().requires_grad_() for k, v in adaptation.adapted.items()}
    query = subsample_episodes(objective.query, fraction, generator)
    with torch.enable_grad():
        if query is not objective.query:
            supports = [subsample_episodes(s, fraction, generator) for s in objective.supports]
            adaptation = objective.adapt(theta, supports)
        elif not adaptation.differentiable:  # sampled without a graph (a meta-batch past one pass)
            adaptation = objective.adapt(theta)
        _, kl = objective.surrogate_and_kl(point, query)
        grad_kl = torch.autograd.grad(kl, list(point.values()), create_graph=True)
    num_tasks = objective.query.shape[0]

    def fvp(v: Vector) -> Vector:
        with torch.enable_grad():
            per_task = {k: x.expand(num_tasks, *x.shape) for k, x in unflat(v, theta).items()}
            u = adaptation.jvp(per_task)
            fu = torch.autograd.grad(grad_kl, list(point.values()), list(u.values()), retain_graph=True)
            w = adaptation.vjp(dict(zip(u.keys(), fu)))
        return flat(x.sum(0) for x in w.values()) + damping * v

    return fvp


@ALGORITHMS.register("trpo")
class TRPO:
    """The TRPO meta-update (Schulman et al., 2015, Section 6 and App. C) on ``MetaObjective``.

    Natural-gradient direction s = F⁻¹g by ``cg_iters`` steps of conjugate gradient, full step
    √(2 max_kl / sᵀFs)·s, then a backtracking line search (ratio ``ls_backtrack_ratio``, at
    most ``ls_max_steps`` tries) that accepts the first step that improves the surrogate with
    KL ≤ ``max_kl``. If none does, θ is left unchanged (a warning says so). TRPO keeps no state
    between updates; the progress bar shows the line search's steps (``ls``).
    """

    progress: ClassVar[dict[str, str]] = {"ls": "line_search_steps"}

    def __init__(self, config: TRPOConfig):
        self.config = config

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def step(self, objective: MetaObjective, params: Params, adaptation: Adaptation,
             generator: torch.Generator) -> dict:
        """Update ``params`` (the policy's live parameters) in place; return the step's statistics.

        ``adaptation`` is the inner loop from θ already built while sampling (reused where it is
        differentiable).
        """
        c = self.config
        # the exact Fisher-vector products below differentiate ``adaptation`` again: keep its graph
        surrogate, grads = objective.gradient(params, lambda obj, ad: obj.surrogate_and_kl(ad.adapted)[0],
                                              adaptation, retain_graph=c.fvp_subsample >= 1)
        g = flat(grads)
        fvp = fisher_vector_product(objective, params, adaptation, c.fvp_subsample, c.cg_damping, generator)
        direction = conjugate_gradient(fvp, g, c.cg_iters)
        shs = direction.dot(fvp(direction)).clamp_min(1e-12)
        full_step = torch.sqrt(2 * c.max_kl / shs) * direction
        return self._line_search(objective, params, surrogate, full_step)

    @torch.no_grad()
    def _line_search(self, objective: MetaObjective, params: Params, surrogate_before: float,
                     full_step: Vector) -> dict:
        c = self.config
        old = flat(params.values()).clone()
        for k in range(c.ls_max_steps):
            candidate = old + c.ls_backtrack_ratio ** k * full_step
            _assign(params, candidate)
            surrogate, kl = objective.evaluate(params)
            if surrogate > surrogate_before and kl <= c.max_kl:
                return {"surrogate_before": surrogate_before, "surrogate_after": surrogate, "kl": kl,
                        "line_search_steps": k + 1, "step_accepted": 1.0}
        _assign(params, old)
        log.warning("TRPO: the line search found no acceptable step in %d tries; θ unchanged", c.ls_max_steps)
        return {"surrogate_before": surrogate_before, "surrogate_after": surrogate_before, "kl": 0.0,
                "line_search_steps": c.ls_max_steps, "step_accepted": 0.0}


def _assign(params: Params, vector: Vector) -> None:
    for p, v in zip(params.values(), unflat(vector, params).values()):
        p.copy_(v)
