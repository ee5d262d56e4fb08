"""Out-of-memory back-off under a memory cap: `torch.cuda.set_per_process_memory_fraction` caps
the caching allocator at CAP_GIB, too small for the configured batch of resnet50 at 224 px, and
the fit loop (resomap.train.fit.fit, as the train stage runs it) trains one epoch. Passes when it
finishes with oom_backoffs > 0 (the train metrics key) and a finite loss, and when
train.micro_batch_size: auto, under the same cap, probes a micro-batch at least as large as the
back-off reached and then trains without backing off."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.gpu_check.common import check_main, cuda_device, prepare, result, train_params

MODEL, RESOLUTION, BATCH, IMAGES, CAP_GIB = "resnet50", 224, 256, 512, 2.0


def run(work: Path) -> dict:
    import torch

    from resomap.data.prepared import load_prepared
    from resomap.models.registry import build_model
    from resomap.train.fit import fit

    device = cuda_device()
    data = load_prepared(prepare(work, RESOLUTION, train=IMAGES, val=50), ("train", "val"))
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = CAP_GIB * 2**30 / total
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    train = train_params(epochs=1, batch_size=BATCH, warmup_epochs=0)
    torch.manual_seed(0)
    fitted = fit(build_model(MODEL, data.num_classes), data, train, seed=0, device=device)
    loss = fitted.history[-1].train_loss
    torch.manual_seed(0)
    probed = fit(build_model(MODEL, data.num_classes), data, train_params(epochs=1, batch_size=BATCH, warmup_epochs=0, micro_batch_size="auto"),
                 seed=0, device=device)
    figure = (f"oom_backoffs {fitted.oom_backoffs}: micro-batch {BATCH} -> {fitted.micro_batch_size} under a {CAP_GIB:g} GiB cap, "
              f"train loss {loss:.3f}; micro_batch_size auto probed {probed.micro_batch_size}, {probed.oom_backoffs} back-offs after")
    passed = fitted.oom_backoffs > 0 and math.isfinite(loss) and probed.micro_batch_size >= fitted.micro_batch_size and probed.oom_backoffs == 0
    return result(passed, figure, probed_micro_batch_size=probed.micro_batch_size, model=MODEL, resolution=RESOLUTION, batch_size=BATCH,
                  cap_gib=CAP_GIB, memory_fraction=fraction, oom_backoffs=fitted.oom_backoffs, micro_batch_size=fitted.micro_batch_size,
                  train_loss=loss, peak_allocated_bytes=torch.cuda.max_memory_allocated(device))


if __name__ == "__main__":
    check_main(run, __doc__)
