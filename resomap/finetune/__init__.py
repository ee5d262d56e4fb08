"""FixRes fine-tuning: a trained cell tuned a few epochs at another resolution (the finetune stage)."""
