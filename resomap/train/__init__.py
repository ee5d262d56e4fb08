"""The train stage: the fit loop, one optimisation step, checkpoints and resume, DDP."""
