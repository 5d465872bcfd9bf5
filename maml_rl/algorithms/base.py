"""The OuterLoop protocol (the meta-optimiser) and the algorithm registry."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..core.maml import Adaptation
from ..core.objective import MetaObjective
from ..core.params import Params
from .settings import ALGORITHMS, OuterLoopConfig


@runtime_checkable
class OuterLoop(Protocol):
    """A meta-update of θ on the query surrogate of θ'_i(θ) (``MetaObjective``).

    ``step`` updates ``params`` (the policy's live parameters) in place and returns its
    statistics, which must include ``"kl"``: the mean KL(π_θ'old ‖ π_θ'new) on the query states
    after the update (logged as ``kl`` every iteration). ``adaptation`` is the inner
    loop already built from θ while sampling; its graph is kept only where the meta-batch fits
    one pass of the outer objective (``Adaptation.differentiable``): an outer loop that
    differentiates θ'(θ) reuses it then and re-runs it otherwise (``MetaObjective.adapt``,
    ``MetaObjective.gradient``). ``state_dict`` / ``load_state_dict`` carry
    the optimiser's state across a checkpoint (an empty dict when it has none). ``progress``
    names the statistics of ``step`` the progress bar shows besides the returns and ``kl``,
    ``{short label: metric name}`` (``{"ls": "line_search_steps"}``; empty for none).
    """

    progress: dict[str, str]

    def step(self, objective: MetaObjective, params: Params, adaptation: Adaptation,
             generator: torch.Generator) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...



def build_outer_loop(settings: OuterLoopConfig) -> OuterLoop:
    """The outer loop named ``settings.name``, built from its settings.

    Raises:
        ValueError: for an unknown name (lists the known ones).
    """
    return ALGORITHMS[settings.name].cls(settings)
