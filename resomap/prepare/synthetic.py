"""Built-in synthetic dataset: one large shape per image, plain or textured, on a cluttered background.

Each image holds one object (disc, square or triangle, with random position, size, rotation and
colour) on a smooth colour gradient, among a few smaller plain distractor shapes, with mild pixel
noise. Three classes differ only in coarse outline; the other seven differ from the plain shape of
the same outline only in a stripe, checker or dot texture whose period is a fixed fraction of the
object's size: coarse (about 1/3), medium (1/5.5) or fine (1/11). The texture is a lighter or darker
shade of the object's colour, so once downsampling averages it away a textured object looks like a
plain one of a slightly different colour. Fine textures survive at 64 px but not at 32, medium ones
at 32 but not at 16, coarse ones at 16, so accuracy falls step by step as the resolution drops.
"""

from __future__ import annotations

import colorsys
from functools import partial
from typing import NamedTuple

import numpy as np

from resomap.core.errors import ResoMapError
from resomap.prepare.samples import SPLITS, UNLABELED, LoadedImage, Sample, SourceData

NATIVE_SIZE = 256


class _ClassSpec(NamedTuple):
    """What a class draws: an outline and, for textured classes, a texture and its scale."""

    shape: str  # "disc" | "square" | "triangle"
    texture: str | None  # "stripes" | "checker" | "dots" | None for plain
    periods: float  # texture periods across the object's diameter; 0 for plain


# Texture periods across the object's circumscribed diameter. After an antialiased resize to R px,
# where that diameter is 0.35-0.5 R, fine (11) keeps most of its contrast at 64 px and loses nearly
# all of it at 32, medium at 32 and 16, coarse still shows at 16 (checked by tests/test_synthetic.py).
_COARSE, _MEDIUM, _FINE = 2.75, 5.5, 11.0

_SPECS = {
    "disc": _ClassSpec("disc", None, 0.0),
    "square": _ClassSpec("square", None, 0.0),
    "triangle": _ClassSpec("triangle", None, 0.0),
    "disc_stripes_coarse": _ClassSpec("disc", "stripes", _COARSE),
    "disc_checker_coarse": _ClassSpec("disc", "checker", _COARSE),
    "square_stripes_medium": _ClassSpec("square", "stripes", _MEDIUM),
    "square_checker_medium": _ClassSpec("square", "checker", _MEDIUM),
    "triangle_stripes_fine": _ClassSpec("triangle", "stripes", _FINE),
    "triangle_checker_fine": _ClassSpec("triangle", "checker", _FINE),
    "triangle_dots_fine": _ClassSpec("triangle", "dots", _FINE),
}
CLASS_NAMES: tuple[str, ...] = tuple(_SPECS)

_SHAPES = ("disc", "square", "triangle")
_OBJECT_DIAMETER = (0.35, 0.5)  # circumscribed diameter / image side; a narrow range keeps each
# texture scale fading within one halving of the resolution
_CLUTTER_COUNT = (2, 6)
_CLUTTER_DIAMETER = (0.2, 0.45)  # / object diameter: distractors are always clearly smaller
_MIN_CONTRAST = 0.25  # RGB distance (0..1) from object colour and shade to every background colour
_DOT_RADIUS = 0.32  # / lattice spacing
# lattice spacing / texture period, so that all textures of one scale fade at the same resolution:
# a checker's strongest frequencies run along its diagonals, sqrt(2) above its lattice frequency
_LATTICE = {"stripes": 1.0, "checker": float(np.sqrt(2)), "dots": 1.0}


def _window(cx: float, cy: float, r: float, size: int):
    """Slices around a shape and its pixel-centre offsets (a row, a column): shapes cost their area only."""
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, size)
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, size)
    dx = np.arange(x0, x1, dtype=np.float32) + np.float32(0.5 - cx)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - cy)
    return (slice(y0, y1), slice(x0, x1)), dx, dy


def _project(dx: np.ndarray, dy: np.ndarray, angle: float, scale: float = 1.0) -> np.ndarray:
    """Offsets along direction `angle`, times `scale`: a row plus a column, so one full-size pass."""
    return dx * np.float32(scale * np.cos(angle)) + dy * np.float32(scale * np.sin(angle))


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float, angle: float) -> np.ndarray:
    """Pixels inside a shape of circumradius r, turned by `angle`, centred at the offsets' origin."""
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = r / np.sqrt(2)
        across = np.abs(_project(dx, dy, angle + np.pi / 2)) <= half
        return (np.abs(_project(dx, dy, angle)) <= half) & across
    # equilateral triangle: inside three edges, each at distance r/2 from the centre
    inside = _project(dx, dy, angle) <= r / 2
    for k in (1, 2):
        inside &= _project(dx, dy, angle + k * 2 * np.pi / 3) <= r / 2
    return inside


def _fraction(x: np.ndarray) -> np.ndarray:
    """x mod 1; numpy's float `%` is tens of times slower than this."""
    return x - np.floor(x)


def _texture_mask(kind: str, dx: np.ndarray, dy: np.ndarray, period: float, angle: float,
                  phase: np.ndarray) -> np.ndarray:
    """Pixels in the shaded part of a texture whose strongest frequency has the given period (pixels)."""
    lattice = period * _LATTICE[kind]
    t = _fraction(_project(dx, dy, angle, 1 / lattice) + np.float32(phase[0]))
    if kind == "stripes":
        return t < 0.5
    w = _fraction(_project(dx, dy, angle + np.pi / 2, 1 / lattice) + np.float32(phase[1]))
    if kind == "checker":
        return (t < 0.5) ^ (w < 0.5)
    t -= 0.5
    w -= 0.5
    return t * t + w * w <= _DOT_RADIUS**2  # dots


def _paint(region: np.ndarray, where: np.ndarray, colour: np.ndarray) -> None:
    """Set `region` (HxWx3) to `colour` where `where` holds; per channel, as boolean indexing is slower."""
    for c in range(3):
        np.copyto(region[:, :, c], colour[c], where=where)


def _random_colour(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]):
    """RGB (float32, 0..255) of any hue, with saturation and value drawn from the given ranges."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array(rgb, dtype=np.float32) * np.float32(255)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A linear gradient between two muted colours (float32 0..255, HxWx3), and those two colours."""
    ends = np.stack([_random_colour(rng, (0.0, 0.4), (0.15, 0.95)) for _ in range(2)])
    angle = rng.uniform(0, 2 * np.pi)
    pixels = np.arange(size, dtype=np.float32)
    tx, ty = pixels * np.float32(np.cos(angle)), pixels * np.float32(np.sin(angle))
    span = tx.max() - tx.min() + ty.max() - ty.min()
    tx, ty = (tx - tx.min()) / span, (ty - ty.min()) / span  # tx[x] + ty[y] runs 0..1 over the image
    img = np.empty((size, size, 3), dtype=np.float32)
    for c in range(3):  # a row plus a column per channel: broadcasting over the length-3 axis is slow
        step = ends[1, c] - ends[0, c]
        np.add(tx * step + ends[0, c], (ty * step)[:, None], out=img[:, :, c])
    return img, ends


def _distance_to_segment(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance from an RGB point to the nearest colour of the gradient from a to b."""
    ab = b - a
    t = np.clip(np.dot(point - a, ab) / max(float(np.dot(ab, ab)), 1e-6), 0, 1)
    return float(np.linalg.norm(point - (a + t * ab)))


def _object_colours(rng: np.random.Generator, background_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Object colour and its texture shade (0..255), both standing out from the background.

    Drawn the same way for every class, so colour carries no class information; the shade is a
    lighter or darker version of the colour so that a blurred texture only tints the object.
    """
    while True:
        colour = _random_colour(rng, (0.4, 1.0), (0.35, 1.0))
        lighter = rng.random() < 0.5
        shade = colour + np.float32(0.55) * (255 - colour) if lighter else colour * np.float32(0.5)
        contrast = min(_distance_to_segment(c, *background_ends) for c in (colour, shade))
        if contrast >= 255 * _MIN_CONTRAST:
            return colour, shade


def _draw_clutter(img: np.ndarray, rng: np.random.Generator, object_r: float) -> None:
    """Paint 2-6 smaller plain shapes anywhere; the object is drawn after them, so they may sit behind it."""
    size = img.shape[0]
    for _ in range(rng.integers(_CLUTTER_COUNT[0], _CLUTTER_COUNT[1] + 1)):
        r = object_r * rng.uniform(*_CLUTTER_DIAMETER)
        cx, cy = rng.uniform(0, size, 2)
        angle = rng.uniform(0, 2 * np.pi)
        shape = _SHAPES[rng.integers(len(_SHAPES))]
        colour = _random_colour(rng, (0.0, 1.0), (0.1, 1.0))
        sl, dx, dy = _window(cx, cy, r, size)
        _paint(img[sl], _shape_mask(shape, dx, dy, r, angle), colour)


def _draw_object(img: np.ndarray, rng: np.random.Generator, spec: _ClassSpec, r: float,
                 colours: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Paint the labelled object fully inside the image; returns its full-size mask."""
    size = img.shape[0]
    cx, cy = rng.uniform(r, size - r, 2)
    shape_angle, texture_angle = rng.uniform(0, 2 * np.pi, 2)
    phase = rng.random(2)
    sl, dx, dy = _window(cx, cy, r, size)
    inside = _shape_mask(spec.shape, dx, dy, r, shape_angle)
    region = img[sl]
    _paint(region, inside, colours[0])
    if spec.texture is not None:
        period = 2 * r / spec.periods
        shaded = inside & _texture_mask(spec.texture, dx, dy, period, texture_angle, phase)
        _paint(region, shaded, colours[1])
    mask = np.zeros((size, size), dtype=bool)
    mask[sl] = inside
    return mask


def _add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add uniform noise of +-3.5 grey levels and round to uint8; raw random bytes are the cheapest draw."""
    count = img.size
    bits = rng.integers(0, 2**64, -(-count // 8), dtype=np.uint64).view(np.uint8)[:count]
    img += (bits >> 5).reshape(img.shape)  # 0..7
    img -= np.float32(3.0)  # centres the noise (-3.5) and rounds on the truncating cast (+0.5)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def render_image(
    label: int, rng: np.random.Generator, size: int = NATIVE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (size, size, 3) and the object's bool mask (size, size).

    All geometry scales with `size`; the dataset's resolution study assumes NATIVE_SIZE, since
    textures start to alias when rendered directly at small sizes.
    """
    spec = _SPECS[CLASS_NAMES[label]]
    img, background_ends = _background(rng, size)
    colours = _object_colours(rng, background_ends)
    r = size * rng.uniform(*_OBJECT_DIAMETER) / 2
    _draw_clutter(img, rng, r)
    mask = _draw_object(img, rng, spec, r, colours)
    return _add_noise(img, rng), mask


def _block_labels(seed: int, split_index: int, block: int) -> np.ndarray:
    """One shuffled copy of every label: a split's labels are consecutive blocks, so classes stay balanced."""
    return np.random.default_rng([seed, split_index, 1, block]).permutation(len(CLASS_NAMES))


def _load(seed: int, split_index: int, index: int, label: int, native_size: int) -> LoadedImage:
    """Render one sample from its own RNG stream, so it never depends on other samples or splits."""
    return render_image(label, np.random.default_rng([seed, split_index, 0, index]), native_size)


# Each split's random streams: the pool comes after train/val/test, so adding it moves none of theirs.
_SPLIT_STREAMS = (*SPLITS, UNLABELED)


def _split_samples(split: str, count: int, seed: int, native_size: int) -> list[Sample]:
    """The first `count` samples of a split, each with its label and a lazy renderer."""
    split_index = _SPLIT_STREAMS.index(split)
    n_blocks = -(-count // len(CLASS_NAMES))
    labels = [int(label) for b in range(n_blocks) for label in _block_labels(seed, split_index, b)][:count]
    return [
        Sample(f"synthetic/{split}/{i:06d}", label, partial(_load, seed, split_index, i, label, native_size))
        for i, label in enumerate(labels)
    ]


def _is_count(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def synthetic_source(sizes: dict[str, int], seed: int, native_size: int = NATIVE_SIZE) -> SourceData:
    """The synthetic dataset with `sizes[split]` images per split, rendered lazily when loaded, and
    an unlabeled pool of `sizes["unlabeled"]` (optional key; 0 or absent: none) whose labels are
    the true ones, kept to score pseudo-labels.

    Sample i of a split is the same image whatever the other sizes are, and splits never share images.
    Geometry is drawn in fractions of the side, so a larger `native_size` renders the same scene
    with finer detail (prepare uses it above 256 px instead of upsampling).
    """
    if not set(SPLITS) <= set(sizes) <= set(_SPLIT_STREAMS):
        raise ResoMapError(f"synthetic sizes need the keys {list(SPLITS)} (and optionally '{UNLABELED}'), got {sorted(sizes)}")
    bad = {k: v for k, v in sizes.items() if not _is_count(v)}
    if bad:
        raise ResoMapError(f"synthetic sizes must be non-negative integers, got {bad}")
    if not _is_count(seed):
        raise ResoMapError(f"synthetic seed must be a non-negative integer, got {seed!r}")
    splits = {split: _split_samples(split, sizes[split], seed, native_size) for split in SPLITS}
    pool = _split_samples(UNLABELED, sizes.get(UNLABELED, 0), seed, native_size)
    return SourceData(classes=CLASS_NAMES, splits=splits, has_masks=True, unlabeled=pool)
