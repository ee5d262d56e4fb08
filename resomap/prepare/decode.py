"""Decode image files of any mode into upright RGB uint8 arrays; say in one line why a file cannot be."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resomap.core.errors import ResoMapError

# Modes whose pixels run past 255: PIL's own convert("RGB") would clip them, not scale them.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})

# Decompression-bomb guard: PIL's own default limit, but an error here rather than PIL's warning.
MAX_PIXELS = 89_478_485


class BadImageError(ResoMapError):
    """A file with an image extension that cannot be decoded; the message is the one-line reason."""


def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file upright (EXIF orientation applied) as RGB uint8 (H, W, 3).

    Raises BadImageError (the reason, without the path) when the file cannot be decoded.
    """
    return _decode(Path(path), probe=False)


def image_problem(path: Path) -> str | None:
    """Why `path` cannot be used as an image, or None when it decodes.

    The whole file is decoded (JPEGs at 1/8 scale, which still reads every byte), so truncated
    and corrupt files are caught here, before any split is drawn.
    """
    try:
        _decode(Path(path), probe=True)
    except BadImageError as error:
        return str(error)
    return None


def _decode(path: Path, probe: bool) -> np.ndarray:
    if path.is_symlink() and not path.exists():
        raise BadImageError("broken symlink (its target does not exist)")
    if not path.is_file():
        raise BadImageError("not a regular file")
    if path.stat().st_size == 0:
        raise BadImageError("empty file (0 bytes)")
    kind = "image"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS decides below
            opened = Image.open(path)
        with opened as image:
            kind = image.format or kind
            _check_pixels(image)
            if probe:
                image.draft(None, (1, 1))  # JPEG: DCT-domain downscale; other formats ignore it
            return pil_to_rgb(ImageOps.exif_transpose(image))
    except BadImageError:
        raise
    except UnidentifiedImageError:
        raise BadImageError("not an image PIL can read (unknown format or not an image)") from None
    except Image.DecompressionBombError as error:
        raise BadImageError(f"too many pixels, decompression-bomb guard ({_one_line(error)})") from None
    except Exception as error:  # noqa: BLE001 - malformed files raise OSError, SyntaxError, ValueError, struct.error...
        message = _one_line(error) or type(error).__name__
        state = "truncated" if "truncated" in message.lower() else "corrupt"
        raise BadImageError(f"{state} {kind} ({message})") from None


def _check_pixels(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise BadImageError(
            f"too many pixels, decompression-bomb guard ({width} x {height} = {width * height:,} "
            f"pixels, limit {MAX_PIXELS:,})"
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode as a writable RGB uint8 array; 16-bit gray is scaled down, alpha dropped."""
    if image.mode in _WIDE_GRAY_MODES:
        gray = np.clip(np.round(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")  # palette transparency straight to RGB makes PIL warn
    return np.array(image.convert("RGB"), dtype=np.uint8)
