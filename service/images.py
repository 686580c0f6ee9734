"""Images on the service side: a sample's uint8 pixels as PNG, and grids of them (the job's
grid, a class's strip), with Pillow. The one place the API composes images."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["GRID_PAD", "grid_png", "to_png"]

GRID_PAD = 2


def _image(array: np.ndarray) -> Image.Image:
    """(c, h, w) uint8 → a grey or RGB image."""
    return Image.fromarray(array[0] if array.shape[0] == 1 else array[:3].transpose(1, 2, 0))


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def to_png(array: np.ndarray) -> bytes:
    """One sample's (c, h, w) uint8 pixels as a lossless PNG."""
    return _encode(_image(array))


def grid_png(
    rows: Sequence[Sequence[np.ndarray]], pad: int = GRID_PAD, margin: int = GRID_PAD
) -> bytes:
    """Rows of (c, h, w) uint8 samples on white, `pad` pixels apart and `margin` pixels from
    the edge, as one PNG."""
    tiles = [tile for row in rows for tile in row]
    if not tiles:
        raise ValueError("a grid needs at least one image")
    channels, h, w = tiles[0].shape
    columns = max(len(row) for row in rows)
    size = (
        columns * (w + pad) - pad + 2 * margin,
        len(rows) * (h + pad) - pad + 2 * margin,
    )
    grid = Image.new("L" if channels == 1 else "RGB", size, "white")
    for y, row in enumerate(rows):
        for x, tile in enumerate(row):
            grid.paste(_image(tile), (margin + x * (w + pad), margin + y * (h + pad)))
    return _encode(grid)
