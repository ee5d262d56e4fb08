import torch
import torchvision.transforms.v2.functional as TF

from resomap.data.augment import MEAN, STD, crop_flip, crop_flip_params, normalize


def reference(image: torch.Tensor, padding: int, offset: torch.Tensor, flip: bool) -> torch.Tensor:
    """torchvision's per-image RandomCrop(padding) then RandomHorizontalFlip, with fixed draws."""
    size = image.shape[-1]
    out = TF.crop(TF.pad(image, [padding]), int(offset[0]), int(offset[1]), size, size)
    return TF.horizontal_flip(out) if flip else out


def test_batched_crop_flip_matches_torchvision_per_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=generator)
    offsets, flips = crop_flip_params(16, 4, generator)
    assert flips.any() and not flips.all(), "the draw should exercise both branches"
    batched = crop_flip(images, 4, offsets, flips)
    for i in range(16):
        assert torch.equal(batched[i], reference(images[i], 4, offsets[i], bool(flips[i])))


def test_normalize_matches_torchvision():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    expected = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(MEAN), list(STD))
    torch.testing.assert_close(normalize(images), expected)
