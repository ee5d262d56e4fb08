import torch
import torchvision.transforms.v2.functional as TF

from resomap.data.augment import MEAN, STD, crop_flip, draw_crop_flip, normalize


def reference(image: torch.Tensor, padding: int, offset: torch.Tensor, flip: bool) -> torch.Tensor:
    """torchvision's per-image RandomCrop(padding) then RandomHorizontalFlip, with fixed draws."""
    size = image.shape[-1]
    out = TF.crop(TF.pad(image, [padding]), int(offset[0]), int(offset[1]), size, size)
    return TF.horizontal_flip(out) if flip else out


def test_batched_crop_flip_matches_torchvision_per_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8, generator=generator)
    offsets, flips = draw_crop_flip(16, 4, True, generator)
    assert flips.any() and not flips.all(), "the draw should exercise both branches"
    batched = crop_flip(images, 4, offsets, flips)
    for i in range(16):
        assert torch.equal(batched[i], reference(images[i], 4, offsets[i], bool(flips[i])))


def test_normalize_matches_torchvision():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    expected = TF.normalize(TF.to_dtype(images, torch.float32, scale=True), list(MEAN), list(STD))
    torch.testing.assert_close(normalize(images), expected)


def test_the_train_loops_augmentation_matches_the_torchvision_pipeline():
    """draw_crop_flip + crop_flip + normalize, as the train loop runs them on a batch (in
    channels-last), equal torchvision's RandomCrop(padding) + RandomHorizontalFlip + ToDtype +
    Normalize applied image by image with the same draws."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (32, 3, 24, 24), dtype=torch.uint8, generator=generator)
    offsets, flips = draw_crop_flip(32, 3, True, generator)
    batched = normalize(crop_flip(images, 3, offsets, flips), torch.channels_last)
    assert batched.is_contiguous(memory_format=torch.channels_last)
    for i in range(32):
        expected = TF.normalize(TF.to_dtype(reference(images[i], 3, offsets[i], bool(flips[i])), torch.float32, scale=True), list(MEAN), list(STD))
        torch.testing.assert_close(batched[i], expected)


def test_the_draws_are_uniform_like_torchvisions():
    """RandomCrop picks each offset in [0, 2 * padding] with equal chance, RandomHorizontalFlip
    flips half the images; hflip off never flips."""
    generator = torch.Generator().manual_seed(0)
    offsets, flips = draw_crop_flip(20000, 2, True, generator)
    counts = torch.bincount(offsets.flatten(), minlength=5).float() / offsets.numel()
    torch.testing.assert_close(counts, torch.full((5,), 0.2), atol=0.01, rtol=0)
    assert abs(flips.float().mean().item() - 0.5) < 0.01
    _, no_flips = draw_crop_flip(100, 2, False, generator)
    assert not no_flips.any()
