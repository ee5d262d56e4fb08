"""An uploaded file as an RGB image, or the one-line reason it cannot be one (shown in the page)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resomap.prepare.decode import BadImageError, load_rgb

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # what the server also refuses (launch's max_file_size)


class BadUpload(ValueError):
    """The message is what the page shows."""


def decode_upload(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3), decoded as prepare decodes an image folder's files (EXIF orientation,
    any mode to RGB, the decompression-bomb guard)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise BadUpload(f"{path.name} is {size / 2**20:.1f} MB: upload an image of at most {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        return load_rgb(path)
    except BadImageError as error:
        raise BadUpload(f"{path.name} cannot be used as an image: {error}") from None
