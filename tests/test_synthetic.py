"""The synthetic dataset: deterministic, balanced, true masks, and textures that fade where designed."""

from functools import cache

import numpy as np
import pytest
from PIL import Image

from resomap.core.errors import ResoMapError
from resomap.prepare.samples import SPLITS
from resomap.prepare.synthetic import CLASS_NAMES, NATIVE_SIZE, render_image, synthetic_source

SIZES = {"train": 23, "val": 10, "test": 7}


def _images(source, split):
    return [sample.load() for sample in source.splits[split]]


def _interior(mask: np.ndarray, size: int) -> np.ndarray:
    """Pixels wholly inside the object after resizing, minus a 1 px rim where resampling mixes in the edge."""
    inside = np.asarray(Image.fromarray(mask.astype(np.float32)).resize((size, size), Image.BOX)) > 0.999
    eroded = inside.copy()
    eroded[1:] &= inside[:-1]
    eroded[:-1] &= inside[1:]
    eroded[:, 1:] &= inside[:, :-1]
    eroded[:, :-1] &= inside[:, 1:]
    return eroded


def _texture_std(image: np.ndarray, mask: np.ndarray, size: int) -> float:
    """Grey-level spread inside the object after an antialiased resize: the texture's surviving contrast."""
    small = Image.fromarray(image).resize((size, size), Image.BICUBIC) if size != NATIVE_SIZE else image
    grey = np.asarray(small, dtype=np.float32).mean(axis=-1)
    interior = _interior(mask, size)
    return float(grey[interior].std()) if interior.sum() >= 4 else np.nan


@cache
def _texture_stds(name: str, sizes: tuple[int, ...], count: int = 32) -> np.ndarray:
    """(count, len(sizes)) texture spreads of `count` renders of class `name`."""
    label = CLASS_NAMES.index(name)
    renders = [render_image(label, np.random.default_rng([5, label, k])) for k in range(count)]
    return np.array([[_texture_std(img, mask, size) for size in sizes] for img, mask in renders])


def test_class_list():
    assert NATIVE_SIZE == 256
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == 10
    assert {"disc", "square", "triangle", "triangle_dots_fine", "square_checker_medium"} <= set(CLASS_NAMES)


def test_source_shape_and_names():
    source = synthetic_source(SIZES, seed=3)
    assert source.classes == CLASS_NAMES and source.has_masks
    assert {split: len(samples) for split, samples in source.splits.items()} == SIZES
    assert source.splits["test"][4].name == "synthetic/test/000004"
    image, mask = source.splits["val"][0].load()
    assert image.shape == (NATIVE_SIZE, NATIVE_SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == (NATIVE_SIZE, NATIVE_SIZE) and mask.dtype == bool


def test_same_seed_gives_identical_samples():
    a, b = synthetic_source(SIZES, seed=11), synthetic_source(SIZES, seed=11)
    for split in SPLITS:
        assert [(s.name, s.label) for s in a.splits[split]] == [(s.name, s.label) for s in b.splits[split]]
    for (img_a, mask_a), (img_b, mask_b) in zip(_images(a, "test"), _images(b, "test")):
        assert img_a.tobytes() == img_b.tobytes() and mask_a.tobytes() == mask_b.tobytes()


def test_seeds_and_splits_give_different_images():
    first = synthetic_source(SIZES, seed=1)
    other_seed = synthetic_source(SIZES, seed=2)
    seen = {img.tobytes() for split in SPLITS for img, _ in _images(first, split)}
    assert len(seen) == sum(SIZES.values())  # no image repeats within or across splits
    assert not seen & {img.tobytes() for img, _ in _images(other_seed, "test")}


def test_sample_does_not_depend_on_split_sizes():
    small = synthetic_source({"train": 5, "val": 0, "test": 3}, seed=4)
    large = synthetic_source({"train": 40, "val": 9, "test": 12}, seed=4)
    for split in ("train", "test"):
        for s, b in zip(small.splits[split], large.splits[split]):
            assert (s.name, s.label) == (b.name, b.label)
            assert s.load()[0].tobytes() == b.load()[0].tobytes()


@pytest.mark.parametrize("count", [0, 7, 30, 53])
def test_labels_balanced_and_shuffled(count):
    source = synthetic_source({"train": count, "val": 0, "test": 0}, seed=8)
    labels = [s.label for s in source.splits["train"]]
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    assert len(labels) == count and counts.max() - counts.min() <= 1
    if count >= 30:
        assert labels[: len(CLASS_NAMES)] != list(range(len(CLASS_NAMES)))


@pytest.mark.parametrize("sizes, seed", [
    ({"train": 1, "val": 1}, 0),
    ({"train": 1, "val": 1, "test": 1, "extra": 1}, 0),
    ({"train": -1, "val": 1, "test": 1}, 0),
    ({"train": 1.5, "val": 1, "test": 1}, 0),
    ({"train": 1, "val": 1, "test": 1}, -3),
])
def test_bad_arguments_raise(sizes, seed):
    with pytest.raises(ResoMapError):
        synthetic_source(sizes, seed)


# Mask area / image area for each outline, from the object's circumscribed diameter d of 0.35-0.5
# of the image side: disc pi/4 d^2, square d^2/2, triangle 3 sqrt(3)/16 d^2; 5% margin for pixelation.
AREA_PER_D2 = {"disc": np.pi / 4, "square": 0.5, "triangle": 3 * np.sqrt(3) / 16}


@pytest.mark.parametrize("label", range(len(CLASS_NAMES)))
def test_mask_is_the_whole_object_inside_the_image(label):
    outline = CLASS_NAMES[label].split("_")[0]
    for k in range(6):
        image, mask = render_image(label, np.random.default_rng([9, label, k]))
        assert 0.95 * 0.35**2 <= mask.mean() / AREA_PER_D2[outline] <= 1.05 * 0.5**2
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        # a 2 px ring just outside the mask is background or clutter, far from the object's colours
        ring = np.zeros_like(mask)
        for dy, dx in [(-2, 0), (2, 0), (0, -2), (0, 2)]:
            ring |= np.roll(mask, (dy, dx), axis=(0, 1))
        ring &= ~mask
        inside, outside = image[mask][::50].astype(float), image[ring].astype(float)
        nearest = np.linalg.norm(outside[:, None] - inside[None], axis=-1).min(axis=1)
        assert np.median(nearest) > 40


@pytest.mark.parametrize("name", ["disc", "square", "triangle"])
def test_plain_objects_are_one_flat_colour(name):
    """Only pixel noise (-3..4 levels) inside the mask: the mask holds no background or clutter."""
    label = CLASS_NAMES.index(name)
    for k in range(6):
        image, mask = render_image(label, np.random.default_rng([10, label, k]))
        assert image[mask].astype(float).std(axis=0).max() < 3.0


def test_clutter_breaks_the_smooth_background():
    """Outside the object the image is not just a noisy gradient: distractors stand off a fitted plane."""
    for k in range(6):
        image, mask = render_image(k, np.random.default_rng([11, k]))
        ys, xs = np.nonzero(~mask)
        design = np.stack([np.ones_like(xs), xs, ys], axis=1).astype(float)
        values = image[~mask].astype(float)
        fit, *_ = np.linalg.lstsq(design, values, rcond=None)
        off_plane = np.abs(values - design @ fit).max(axis=1) > 30
        assert 0.002 < off_plane.mean() < 0.3


# (class, a resolution where its texture must show, one where it must have faded; None: not required)
SCALES = [
    ("disc_stripes_coarse", 16, None),
    ("disc_checker_coarse", 16, None),
    ("square_stripes_medium", 32, 16),
    ("square_checker_medium", 32, 16),
    ("triangle_stripes_fine", 64, 32),
    ("triangle_checker_fine", 64, 32),
    ("triangle_dots_fine", 64, 32),
]


@pytest.mark.parametrize("name, shows, fades", SCALES)
def test_texture_fades_at_its_design_resolution(name, shows, fades):
    """Median share of the native texture contrast left after an antialiased resize.

    Most of it must be left at `shows` px, little at `fades` px.
    """
    sizes = (NATIVE_SIZE, shows) if fades is None else (NATIVE_SIZE, shows, fades)
    stds = _texture_stds(name, sizes)
    left = stds[:, 1:] / stds[:, :1]
    # objects too small to keep an interior are skipped; they are the ones that lose most texture
    assert np.isfinite(left).mean() >= 0.4
    kept = np.nanmedian(left, axis=0)
    assert kept[0] >= 0.45
    if fades is not None:
        assert kept[1] <= 0.15


def test_fine_texture_tells_triangles_apart_at_64_px_but_hardly_at_32():
    """Grey-level spread inside the triangle: fine textures stand far above plain ones at 64 px, not at 32."""
    plain = _texture_stds("triangle", (64, 32))
    fine = np.concatenate([_texture_stds(name, (64, 32)) for name in CLASS_NAMES if name.endswith("_fine")])
    assert np.nanmax(plain) < 1.5  # noise averaged away: a plain object is flat at both sizes
    assert np.nanpercentile(fine[:, 0], 10) > 5 * np.nanmax(plain[:, 0])
    assert np.nanmedian(fine[:, 1]) < 0.25 * np.nanmedian(fine[:, 0])
