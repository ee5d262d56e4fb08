"""torch.compile with recompile logging (TORCH_LOGS=recompiles): train.compile=true for a short
cell through the fit loop (resomap.train.fit.fit). Every record of dynamo's recompiles log is
counted, by epoch; passes when no recompile happens after the first epoch (its training and its
validation compile what the cell needs) and reports compile_seconds as the train stage does."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from benchmarks.gpu_check.common import check_main, cuda_device, prepare, result, train_params

MODEL, RESOLUTION, IMAGES, EPOCHS = "tiny_cnn", 32, 512, 3
RECOMPILES_LOGGER = "torch._dynamo.guards.__recompiles"  # torch._logging's artifact logger of TORCH_LOGS=recompiles


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0][:200] if record.getMessage() else "")


def recompiles_after(per_epoch: list[int]) -> int:
    """Recompiles after the first epoch, from the cumulative count at the end of each epoch."""
    return per_epoch[-1] - per_epoch[0] if per_epoch else 0


def run(work: Path) -> dict:
    import torch

    from resomap.core.device import configure_backends
    from resomap.data.prepared import load_prepared
    from resomap.models.registry import build_model
    from resomap.train.fit import fit

    if "recompiles" not in os.environ.get("TORCH_LOGS", ""):
        torch._logging.set_logs(recompiles=True)
    records = Records()
    logger = logging.getLogger(RECOMPILES_LOGGER)
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    device = cuda_device()
    configure_backends(device, compiling=True)  # as the train stage does with train.compile
    data = load_prepared(prepare(work, RESOLUTION, train=IMAGES), ("train", "val"))
    train = train_params(epochs=EPOCHS, compile=True)
    per_epoch = []
    torch.manual_seed(0)
    fitted = fit(build_model(MODEL, data.num_classes), data, train, seed=0, device=device,
                 on_epoch=lambda stats: per_epoch.append(len(records.messages)))
    after = recompiles_after(per_epoch)
    losses = [stats.train_loss for stats in fitted.history]
    figure = (f"{after} recompiles after epoch 1 ({per_epoch[0] if per_epoch else 0} in it); "
              f"compile_seconds {fitted.compile_seconds:.1f}; {fitted.history[-1].images_per_s:.0f} img/s in epoch {EPOCHS}")
    return result(after == 0 and all(math.isfinite(loss) for loss in losses) and len(per_epoch) == EPOCHS, figure,
                  model=MODEL, resolution=RESOLUTION, epochs=EPOCHS, recompiles_by_epoch=per_epoch, recompiles_after_epoch_1=after,
                  recompile_messages=records.messages[:20], compile_seconds=fitted.compile_seconds, losses=losses)


if __name__ == "__main__":
    check_main(run, __doc__)
