"""Heatmaps: Grad-CAM (grad-cam), Integrated Gradients and Saliency (captum), on batches on the device.

Every method returns one non-negative map per image at the input resolution, scaled to [0, 1]
per image: raw magnitudes do not compare across methods or resolutions (IG's shrink as the
pixel count grows), their ranking does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from resomap.models.registry import model_spec


@dataclass(frozen=True)
class CamLayer:
    name: str
    module: nn.Module
    size: int  # side of its feature map at the cell's resolution


def _feature_sides(model: nn.Module, names: list[str], resolution: int, device) -> dict[str, int]:
    """Side of each named module's output map for one input at `resolution`."""
    sides, handles = {}, []

    def record(name: str):
        def hook(module, inputs, output) -> None:  # returning a value would replace the output
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                sides.setdefault(name, output.shape[-1])

        return hook

    for name in names:
        handles.append(model.get_submodule(name).register_forward_hook(record(name)))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, resolution, resolution, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return sides


def _cam_candidates(model: nn.Module, model_name: str) -> list[str]:
    """The registered CAM layer and the sibling layers before it, in forward order. A layer whose
    output the next sibling overwrites in place (conv -> ReLU(inplace)) is skipped: its saved
    activation would not be what the gradient refers to."""
    path = model_spec(model_name).cam_layer
    if not path:
        return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    parent_name, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    children = list(parent.named_children())
    names = [name for name, _ in children][: [name for name, _ in children].index(leaf) + 1]
    keep = []
    for i, name in enumerate(names):
        following = children[i + 1][1] if i + 1 < len(children) else None
        if not getattr(following, "inplace", False):
            keep.append(f"{parent_name}.{name}" if parent_name else name)
    return keep


def select_cam_layer(model: nn.Module, model_name: str, resolution: int, min_cam_size: int, device) -> CamLayer:
    """The deepest candidate whose map is at least `min_cam_size` on a side (the usual last layer
    has stride 32: at 32 px its 1x1 map makes Grad-CAM a constant); the largest map if none is."""
    names = _cam_candidates(model, model_name)
    sides = _feature_sides(model, names, resolution, device)
    names = [n for n in names if n in sides]
    fitting = [n for n in names if sides[n] >= min_cam_size]
    name = fitting[-1] if fitting else max(names, key=lambda n: sides[n])
    return CamLayer(name, model.get_submodule(name), sides[name])


def _scale_per_image(maps: torch.Tensor) -> np.ndarray:
    """(K, R, R) non-negative -> float32 in [0, 1] per image (an all-zero map stays zero)."""
    flat = maps.flatten(1)
    peak = flat.max(1).values.clamp_min(1e-12)
    return (flat / peak[:, None]).view_as(maps).float().cpu().numpy()


def cam_maps(model: nn.Module, layer: CamLayer, x: torch.Tensor, targets: list[int], plus_plus: bool = False) -> np.ndarray:
    """Grad-CAM (or Grad-CAM++) per image for its own target, computed in fp32; hooks released on exit."""
    # imported on use: grad-cam brings torchvision, OpenCV and scikit-learn (2.4 s of start-up)
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = GradCAMPlusPlus if plus_plus else GradCAM
    with method(model=model, target_layers=[layer.module]) as cam:
        maps = cam(input_tensor=x.float(), targets=[ClassifierOutputTarget(t) for t in targets])
    return np.clip(maps, 0, None).astype(np.float32)


def gradient_maps(model: nn.Module, method: str, x: torch.Tensor, targets: list[int], ig_batch: int, ig_steps: int) -> np.ndarray:
    """Captum attributions reduced to one map per image: |attribution| summed over channels."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency  # on use, like grad-cam

    target = torch.tensor(targets, device=x.device)
    x = x.float().requires_grad_(True)
    if method == "integrated_gradients":
        # internal_batch_size bounds memory: steps x images forwards run in chunks of this size
        attribution = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=ig_steps, internal_batch_size=ig_batch
        )
    elif method == "smoothgrad":
        attribution = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=8, stdevs=0.15, target=target)
    else:
        attribution = Saliency(model).attribute(x, target=target, abs=True)
    return _scale_per_image(attribution.detach().abs().sum(1))


def explain_batch(
    model: nn.Module, method: str, x: torch.Tensor, targets: list[int], layer: CamLayer, *, ig_batch: int, ig_steps: int
) -> np.ndarray:
    """(K, R, R) float32 maps in [0, 1] for normalised images `x` (K, 3, R, R)."""
    model.eval()
    with torch.enable_grad():
        if method in ("gradcam", "gradcam_pp"):
            return cam_maps(model, layer, x, targets, plus_plus=method == "gradcam_pp")
        return gradient_maps(model, method, x, targets, ig_batch, ig_steps)
