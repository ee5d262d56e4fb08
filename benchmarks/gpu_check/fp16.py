"""fp16 autocast with GradScaler and gradient clipping: train.amp=fp16, train.grad_clip_norm=1.0,
two epochs of the train stage's loop. Passes when both epochs' losses are finite, the scaler was
enabled and its scale is recorded (finite, > 0), and clipping ran once per optimizer step."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.gpu_check.common import check_main, cuda_device, prepare, require, result, train_params

MODEL, RESOLUTION, IMAGES, EPOCHS = "resnet8", 32, 512, 2


def run(work: Path) -> dict:
    import torch

    from resomap.core.device import memory_format
    from resomap.data.placement import training_memory
    from resomap.data.prepared import load_split
    from resomap.models.registry import build_model
    from resomap.train.step import make_train_step, train_one_epoch

    device = cuda_device()
    train = train_params(epochs=EPOCHS, amp="fp16", grad_clip_norm=1.0)
    split = training_memory(load_split(prepare(work, RESOLUTION, train=IMAGES) / "train"), device)
    torch.manual_seed(0)
    model = build_model(MODEL, 10).to(device, memory_format=memory_format(train.channels_last))
    step = make_train_step(model, train, device, len(split))
    require(step.dtype == torch.float16, f"train.amp=fp16 gave autocast dtype {step.dtype}")
    require(step.scaler.is_enabled(), "GradScaler is not enabled under fp16")
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        norm = clip(parameters, max_norm, *args, **kwargs)
        norms.append(norm.detach())  # kept on the device: read after the epochs
        return norm

    torch.nn.utils.clip_grad_norm_ = recording_clip
    try:
        generator = torch.Generator().manual_seed(0)
        losses = [train_one_epoch(step, split, generator, epoch)[0] for epoch in range(1, EPOCHS + 1)]
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
    scale = step.scaler.get_scale()
    steps = EPOCHS * (len(split) // train.batch_size)
    norm_values = [value for value in torch.stack(norms).float().cpu().tolist()] if norms else []
    finite_norms = [value for value in norm_values if math.isfinite(value)]
    figure = (f"losses {', '.join(f'{loss:.3f}' for loss in losses)}; scaler scale {scale:g}; "
              f"clipped {len(norms)}/{steps} steps, max pre-clip norm {max(finite_norms, default=float('nan')):.3g}")
    ok = all(math.isfinite(loss) for loss in losses) and math.isfinite(scale) and scale > 0 and len(norms) == steps
    return result(ok, figure, model=MODEL, resolution=RESOLUTION, losses=losses, scaler_scale=scale, clip_calls=len(norms),
                  optimizer_steps=steps, skipped_nonfinite_norms=len(norm_values) - len(finite_norms),
                  max_grad_norm=max(finite_norms, default=None))


if __name__ == "__main__":
    check_main(run, __doc__)
