"""Augmentation recipes beyond crop and flip, batched on the device with a draw per image:
RandAugment, TrivialAugment (wide) and AutoAugment (ImageNet policy), random resized crop, colour
jitter and random erasing.

kornia's own policy modules draw the operation once per batch (RandAugment: `n` ops for the whole
batch; TrivialAugment and AutoAugment: one sub-policy per batch) from torch's global generator,
so here every image draws its own ops and magnitudes on the CPU from the cell's generator, and
each op (a loop over the op kinds, never over images) runs kornia's kernel on the images that
drew it.  `draw_policy` returns one row per image, so micro-batches and DDP ranks slice a batch's
draws like `draw_crop_flip`'s, and an image's result never depends on the split."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch

from resomap.core.config import Augment, ResizedCrop
from resomap.core.device import upload
from resomap.data.augment import MEAN

GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
ENHANCE = ("brightness", "color", "contrast", "sharpness")  # PIL's enhancers: factor 1 + magnitude
UNSIGNED = ("posterize", "solarize", "auto_contrast", "equalize", "invert", "identity")
OPS = ("identity", *GEOMETRIC, *ENHANCE, "posterize", "solarize", "auto_contrast", "equalize", "invert")
GEOMETRIC_IDS = torch.tensor([OPS.index(name) for name in GEOMETRIC])
UNSIGNED_IDS = torch.tensor([OPS.index(name) for name in UNSIGNED])

# torchvision's magnitude spaces: an op's magnitude is its maximum times t in [0, 1] (RandAugment:
# t = m / 30; TrivialAugment: a bin of 31 drawn per image; AutoAugment: its policy's bin / 9).
# Translations are fractions of the side; posterize removes round(t * max) of 8 bits; solarize's
# threshold is 1 - t.
RANDAUGMENT_SPACE = {
    "identity": 0.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 150 / 331, "translate_y": 150 / 331,
    "rotate": 30.0, "brightness": 0.9, "color": 0.9, "contrast": 0.9, "sharpness": 0.9,
    "posterize": 4.0, "solarize": 1.0, "auto_contrast": 0.0, "equalize": 0.0,
}
# TrivialAugmentWide; its 32-pixel translation is taken at 224 px and scaled to the side
TRIVIALAUGMENT_SPACE = {
    **RANDAUGMENT_SPACE, "shear_x": 0.99, "shear_y": 0.99, "translate_x": 32 / 224, "translate_y": 32 / 224,
    "rotate": 135.0, "brightness": 0.99, "color": 0.99, "contrast": 0.99, "sharpness": 0.99, "posterize": 6.0,
}
AUTOAUGMENT_SPACE = {**RANDAUGMENT_SPACE, "invert": 0.0}
ERASING_SCALE, ERASING_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision's RandomErasing
ATTEMPTS = 10  # boxes tried per image before falling back, as torchvision does


@dataclass(frozen=True)
class Columns:
    """Where each draw sits in a row of `draw_policy`'s (batch, columns) tensor."""

    layers: int  # ops applied one after another

    crop = slice(0, 4)  # random resized crop: top, left, height, width
    jitter = slice(4, 7)  # brightness, contrast, saturation factors
    erase = slice(7, 12)  # erase or not, top, left, height, width

    @property
    def ops(self) -> slice:
        return slice(12, 12 + self.layers)

    @property
    def magnitudes(self) -> slice:
        return slice(12 + self.layers, 12 + 2 * self.layers)

    @property
    def width(self) -> int:
        return 12 + 2 * self.layers


def is_active(augment: Augment) -> bool:
    """Whether anything beyond crop and flip is on; when not, nothing is drawn or applied."""
    return bool(augment.policy != "none" or augment.random_resized_crop or augment.color_jitter or augment.random_erasing)


def _layers(augment: Augment) -> int:
    return {"none": 0, "randaugment": augment.ops, "trivialaugment": 1, "autoaugment": 2}[augment.policy]


def draw_policy(batch: int, augment: Augment, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """One row of draws per image (float32, on the CPU), from the cell's generator, once per batch;
    (batch, 0) and no draw at all when only crop and flip are on."""
    if not is_active(augment):
        return torch.zeros(batch, 0)
    columns = Columns(_layers(augment))
    draws = torch.zeros(batch, columns.width)
    if augment.random_resized_crop:
        draws[:, columns.crop] = _draw_crop(batch, augment.random_resized_crop, height, width, generator)
    if augment.color_jitter:
        low, high = max(0.0, 1 - augment.color_jitter), 1 + augment.color_jitter
        draws[:, columns.jitter] = low + (high - low) * torch.rand(batch, 3, generator=generator)
    if augment.policy != "none":
        ops, magnitudes = _draw_ops(batch, augment, generator)
        draws[:, columns.ops], draws[:, columns.magnitudes] = ops.float(), magnitudes
    if augment.random_erasing:
        draws[:, columns.erase] = _draw_erasing(batch, augment.random_erasing, height, width, generator)
    return draws


def _draw_ops(batch: int, augment: Augment, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and layer: an index into OPS and its signed magnitude in the op's own unit."""
    if augment.policy == "autoaugment":
        return _draw_autoaugment(batch, generator)
    op_ids, maxima = _space_table(augment.policy)
    layers = _layers(augment)
    chosen = torch.randint(0, len(op_ids), (batch, layers), generator=generator)
    if augment.policy == "randaugment":
        fraction = torch.full((batch, layers), augment.magnitude / 30)
    else:
        fraction = torch.randint(0, 31, (batch, layers), generator=generator) / 30
    ops = op_ids[chosen]
    return ops, _signed(ops, maxima[chosen] * fraction, generator)


@cache
def _space_table(policy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ops a RandAugment or TrivialAugment image draws from, as indices into OPS, and their maximal magnitudes."""
    space = RANDAUGMENT_SPACE if policy == "randaugment" else TRIVIALAUGMENT_SPACE
    return torch.tensor([OPS.index(name) for name in space]), torch.tensor(list(space.values()))


def _draw_autoaugment(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A sub-policy per image; each of its two ops applied with its own probability, else identity."""
    names, probabilities, fractions = _autoaugment_table()
    sub = torch.randint(0, len(names), (batch,), generator=generator)
    applied = torch.rand(batch, 2, generator=generator) < probabilities[sub]
    ops = torch.where(applied, names[sub], OPS.index("identity"))
    maxima = torch.tensor([AUTOAUGMENT_SPACE.get(name, 0.0) for name in OPS])[ops]
    return ops, _signed(ops, maxima * fractions[sub], generator)


@cache
def _autoaugment_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """kornia's copy of the paper's ImageNet policy (25 sub-policies of two (op, probability, bin)
    entries) as op indices, probabilities and magnitude fractions (bin / 9, torchvision's 10 bins)."""
    from kornia.augmentation.auto.autoaugment.autoaugment import imagenet_policy  # kornia: ~1.6 s of imports

    names = torch.tensor([[OPS.index(op) for op, _, _ in sub] for sub in imagenet_policy])
    probabilities = torch.tensor([[p for _, p, _ in sub] for sub in imagenet_policy])
    fractions = torch.tensor([[(b or 0) / 9 for _, _, b in sub] for sub in imagenet_policy])
    return names, probabilities, fractions


def _signed(ops: torch.Tensor, magnitudes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random sign per image and layer, for the ops whose magnitude has a direction."""
    negative = torch.rand(ops.shape, generator=generator) < 0.5
    unsigned = torch.isin(ops, UNSIGNED_IDS)
    return torch.where(negative & ~unsigned, -magnitudes, magnitudes)


def _draw_boxes(batch: int, height: int, width: int, scale, ratio, generator: torch.Generator, strict: bool):
    """torchvision's box draw, for a batch: up to ATTEMPTS (area, aspect) pairs per image, the first
    that fits wins (inside the image; strictly smaller when `strict`, as RandomErasing asks);
    returns heights, widths, tops, lefts and whether any attempt fitted."""
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, ATTEMPTS, generator=generator))
    log_ratio = torch.tensor(ratio).log()
    aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(batch, ATTEMPTS, generator=generator))
    h, w = (area / aspect).sqrt().round(), (area * aspect).sqrt().round()
    if strict:
        fits = (h < height) & (w < width)
    else:
        fits = (h > 0) & (w > 0) & (h <= height) & (w <= width)
    first = fits.float().argmax(1, keepdim=True)
    h, w, found = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0], fits.any(1)
    corner = torch.rand(batch, 2, generator=generator)
    top = (corner[:, 0] * (height - h + 1)).floor().clamp(max=height - h)
    left = (corner[:, 1] * (width - w + 1)).floor().clamp(max=width - w)
    return h, w, top, left, found


def _draw_crop(batch: int, crop: ResizedCrop, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop's boxes (top, left, height, width); where no attempt fits, torchvision's
    fallback: the centred largest box within the ratio range."""
    h, w, top, left, found = _draw_boxes(batch, height, width, crop.scale, crop.ratio, generator, strict=False)
    fallback_w = min(width, round(height * crop.ratio[1])) if width / height > crop.ratio[1] else width
    fallback_h = min(height, round(width / crop.ratio[0])) if width / height < crop.ratio[0] else height
    fallback = torch.tensor([(height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w], dtype=torch.float32)
    return torch.where(found[:, None], torch.stack([top, left, h, w], 1), fallback)


def _draw_erasing(batch: int, probability: float, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """RandomErasing's boxes: (erase, top, left, height, width); no box fitting means no erasing."""
    h, w, top, left, found = _draw_boxes(batch, height, width, ERASING_SCALE, ERASING_RATIO, generator, strict=True)
    erase = (torch.rand(batch, generator=generator) < probability) & found
    return torch.stack([erase.float(), top, left, h, w], 1)


def apply_policy(images: torch.Tensor, augment: Augment, draws: torch.Tensor) -> torch.Tensor:
    """uint8 images as they leave crop_flip -> float in [0, 1] with this slice of the batch's draws
    applied, in this order: resized crop, colour jitter, the policy's ops, erasing.  Returns the
    images untouched when nothing beyond crop and flip is on (`normalize` takes either)."""
    if draws.shape[1] == 0:
        return images
    columns = Columns(_layers(augment))
    x = images.float() / 255.0
    if augment.random_resized_crop:
        x = _resized_crop(x, draws[:, columns.crop])
    if augment.color_jitter:
        x = _color_jitter(x, upload(draws[:, columns.jitter], x.device))
    for layer in range(columns.layers):
        x = _apply_ops(x, draws[:, columns.ops][:, layer].long(), draws[:, columns.magnitudes][:, layer])
    if augment.random_erasing:
        x = _erase(x, upload(draws[:, columns.erase], x.device))
    return x


def _resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box resized back to the full side, bilinear with F.interpolate's half-pixel
    centres, as two gathers (rows, then columns): a full box is the identity bit for bit (kornia's
    crop_and_resize solves for a homography and is off by up to 2e-6 there)."""
    top, left, h, w = upload(boxes, x.device).unbind(1)
    x = _resample(x, top, h, dim=2)
    return _resample(x, left, w, dim=3)


def _resample(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, dim: int) -> torch.Tensor:
    """Bilinear along one axis: output pixel i reads start + (i + 0.5) * length / size - 0.5."""
    size = x.shape[dim]
    shape = [len(x), 1, 1, 1]
    shape[dim] = size
    position = start[:, None] + (torch.arange(size, device=x.device) + 0.5) * (length / size)[:, None] - 0.5
    last = (start + length - 1)[:, None]
    position = position.clamp(min=start[:, None], max=last)  # edge pixels repeat, as in F.interpolate
    lower = position.floor()
    weight = (position - lower).view(shape)
    upper = torch.minimum(lower + 1, last)
    expand = list(x.shape)
    below = x.gather(dim, lower.long().view(shape).expand(expand))
    above = x.gather(dim, upper.long().view(shape).expand(expand))
    return below * (1 - weight) + above * weight


def _kornia_enhance():
    """kornia.enhance, imported on first use: kornia costs ~1.6 s of imports, which a cell with
    only crop and flip never pays."""
    from kornia import enhance

    return enhance


def _color_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, in that order, with PIL's definitions (kornia's kernels)."""
    enhance = _kornia_enhance()
    x = enhance.adjust_brightness_accumulative(x, factors[:, 0])
    x = enhance.adjust_contrast_with_mean_subtraction(x, factors[:, 1])
    return enhance.adjust_saturation_with_gray_subtraction(x, factors[:, 2])


def _erase(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Fill each drawn box with the normalisation mean: 0 after normalize, like torchvision's
    RandomErasing(value=0) after Normalize."""
    erase, top, left, h, w = (v[:, None, None] for v in boxes.unbind(1))
    rows = torch.arange(x.shape[-2], device=x.device)[None, :, None]
    cols = torch.arange(x.shape[-1], device=x.device)[None, None, :]
    inside = (erase > 0) & (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return torch.where(inside[:, None], mean, x)


def _apply_ops(x: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """One layer: each op kind runs once, on the images that drew it (the geometric ones share one
    warp with a matrix per image).  Group membership is read on the CPU: no device sync."""
    out = x.clone()
    geometric = torch.isin(ops, GEOMETRIC_IDS)
    groups = [(geometric, _warp)] + [(ops == OPS.index(name), KERNELS[name]) for name in OPS if name in KERNELS]
    for members, kernel in groups:
        index = members.nonzero()[:, 0]
        if len(index):
            on_device = upload(index, x.device)
            out.index_copy_(0, on_device, kernel(x.index_select(0, on_device), ops[index], magnitudes[index]))
    return out


def _warp(x: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    """Shear, translation or rotation about the image centre, one affine matrix per image, black
    outside the image (torchvision's fill); kornia's warp_affine, bilinear."""
    from kornia.geometry.transform import warp_affine  # kornia: ~1.6 s of imports

    height, width = x.shape[-2:]
    matrices = upload(_affine_matrices(ops, magnitudes, height, width), x.device)
    return warp_affine(x, matrices, (height, width), mode="bilinear", padding_mode="zeros", align_corners=True)


def _affine_matrices(ops: torch.Tensor, magnitudes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(n, 2, 3) matrices in pixels, built on the CPU: each image's one geometric op."""
    shear_x, shear_y, move_x, move_y, angle = ((ops == OPS.index(name)) * magnitudes for name in GEOMETRIC)
    move_x, move_y, angle = move_x * width, move_y * height, angle * (math.pi / 180)
    cos, sin = angle.cos(), angle.sin()
    linear = torch.stack([torch.stack([cos, -sin + shear_x], 1), torch.stack([sin + shear_y, cos], 1)], 1)
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2])
    shift = centre - linear @ centre + torch.stack([move_x, move_y], 1)
    return torch.cat([linear, shift[:, :, None]], 2)


def _enhance(kernel_name: str):
    def kernel(x: torch.Tensor, _ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
        return getattr(_kornia_enhance(), kernel_name)(x, upload(1 + magnitudes, x.device))

    return kernel


def _posterize(x: torch.Tensor, _ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    return _kornia_enhance().posterize(x, upload(8 - magnitudes.round().long(), x.device))


def _solarize(x: torch.Tensor, _ops: torch.Tensor, magnitudes: torch.Tensor) -> torch.Tensor:
    return _kornia_enhance().solarize(x, upload(1 - magnitudes, x.device))


def _plain(kernel_name: str):
    def kernel(x: torch.Tensor, _ops: torch.Tensor, _magnitudes: torch.Tensor) -> torch.Tensor:
        return getattr(_kornia_enhance(), kernel_name)(x)

    return kernel


# identity and the geometric ops have no entry: one is nothing to do, the others share `_warp`
KERNELS = {
    "brightness": _enhance("adjust_brightness_accumulative"),
    "color": _enhance("adjust_saturation_with_gray_subtraction"),
    "contrast": _enhance("adjust_contrast_with_mean_subtraction"),
    "sharpness": _enhance("sharpness"),
    "posterize": _posterize,
    "solarize": _solarize,
    "auto_contrast": _plain("normalize_min_max"),
    "equalize": _plain("equalize"),
    "invert": _plain("invert"),
}
