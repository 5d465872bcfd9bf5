"""Tracking backends: the Tracker protocol, a null tracker and the registry (``base``), MLflow (``mlflow``)."""

from ..registry import import_modules
from .base import TRACKERS, NullTracker, Tracker, TrackingConfig

__all__ = ["TRACKERS", "NullTracker", "Tracker", "TrackingConfig"]

import_modules(__name__, __path__)  # every module registers its plug-in
