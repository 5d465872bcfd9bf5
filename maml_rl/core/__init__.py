"""The meta-learning core: sampler, advantages, inner loop, objective and checkpoints (torch only)."""
