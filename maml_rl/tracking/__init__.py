"""Tracking backends: the Tracker protocol, a null tracker and the registry (``base``), MLflow (``mlflow``), TensorBoard
(``tensorboard``). Each backend imports its library only when a run starts."""

from ..registry import import_modules
from .base import TRACKERS, NullTracker, Tracker, TrackingConfig, TrackingUnavailable

__all__ = ["TRACKERS", "NullTracker", "Tracker", "TrackingConfig", "TrackingUnavailable"]

import_modules(__name__)  # every module registers its plug-in (each imports its library only when a run starts)
