"""The run layer: the training loop, evaluation, reports, builders and Hydra callbacks (knows DictConfig)."""
