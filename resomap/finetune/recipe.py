"""The training params of a fine-tune: the cell's own recipe, shortened and calmed. FixRes tunes
with the test-time preprocessing (no crop, no mixing, no policy) at a small constant rate, so the
model adapts to how test images look at the new resolution rather than learning anew."""

from __future__ import annotations

import dataclasses

from resomap.core.config import Augment, EarlyStopping, FinetuneParams, TrainParams


def finetune_train_params(train: TrainParams, finetune: FinetuneParams) -> TrainParams:
    """train's optimizer, batch size, loss, precision and head; finetune's epochs and rate; every
    schedule, augmentation and extra phase off (horizontal flips kept: they do not change scale)."""
    return dataclasses.replace(
        train,
        epochs=finetune.epochs,
        lr=finetune.lr,
        scheduler="none",
        warmup_epochs=0,
        pretrained="none",
        init_from=None,
        freeze_epochs=0,
        progressive=None,
        pseudo_label=None,
        save_top_k=1,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        ema_decay=None,
        early_stopping=EarlyStopping(monitor=train.early_stopping.monitor),
        augment=Augment(hflip=train.augment.hflip, crop_padding=0.0),
    )
