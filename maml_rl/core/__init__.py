"""The meta-learning core: sampler, advantages, inner loop, objective and checkpoints (torch only)."""

ESTIMATORS = ("maml", "lvc")  # forms of the inner loss (maml.InnerLoop), here so that the schema reads them without torch
