"""The training recipe's keys, all on (docs/params.md, "Losses, mixing and weight averaging"):
what the fit tests add to their params to cover focal loss, balanced weights, MixUp, CutMix and EMA."""

RECIPE = dict(label_smoothing=0.1, loss="focal", class_weights="balanced", mixup_alpha=0.2, cutmix_alpha=1.0,
              mix_prob=0.8, ema_decay=0.9)
