"""Tracking backends: the Tracker protocol, a null tracker and the registry (``base``), MLflow (``mlflow``)."""

from . import mlflow  # noqa: F401  (registers tracking=mlflow)
from .base import TRACKERS, NullTracker, Tracker, TrackingConfig

__all__ = ["TRACKERS", "NullTracker", "Tracker", "TrackingConfig"]
