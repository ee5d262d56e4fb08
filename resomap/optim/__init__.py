"""Optimizers and learning-rate schedules, shared by the train stage and the profile stage."""
