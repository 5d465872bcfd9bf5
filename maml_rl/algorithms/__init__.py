"""Outer-loop meta-optimisers."""
