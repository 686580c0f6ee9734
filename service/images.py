"""Images on the service side: a sample's uint8 pixels as PNG, and grids of them (the job's
grid, a class's strip), with Pillow. The one place the API composes images."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["GRID_PAD", "GRID_PER_ROW", "GridLayout", "grid_png", "to_png"]

GRID_PAD = 2
GRID_PER_ROW = 16
"""A class's samples wrap after this many, so a grid stays a page wide whatever `per_class`."""
LABEL_FONT_SIZE = 11
LABEL_HEIGHT = 16  # a band above each class's samples for its name


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


@dataclass(frozen=True)
class GridLayout:
    """Where a grid puts its tiles: one block per class (a label band, then the class's
    samples wrapped at `per_row`). The size check and the drawing share it."""

    classes: int
    per_class: int
    tile: tuple[int, int]  # (h, w)
    per_row: int | None = GRID_PER_ROW  # None: one row per class, however long
    labelled: bool = True
    pad: int = GRID_PAD
    margin: int = GRID_PAD

    @property
    def columns(self) -> int:
        return max(1, min(self.per_class, self.per_row or self.per_class))

    @property
    def label_height(self) -> int:
        return LABEL_HEIGHT if self.labelled else 0

    @property
    def block_height(self) -> int:
        rows = max(1, math.ceil(self.per_class / self.columns))
        return self.label_height + rows * (self.tile[0] + self.pad)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        width = self.columns * (self.tile[1] + self.pad) - self.pad + 2 * self.margin
        return width, self.classes * self.block_height - self.pad + 2 * self.margin

    @property
    def pixels(self) -> int:
        width, height = self.size
        return width * height

    def origin(self, block: int, index: int) -> tuple[int, int]:
        """The top-left corner of the `index`-th tile of the `block`-th class."""
        row, column = divmod(index, self.columns)
        h, w = self.tile
        top = self.margin + block * self.block_height + self.label_height + row * (h + self.pad)
        return self.margin + column * (w + self.pad), top


def _fitted(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
) -> str:
    """`text`, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def grid_png(
    blocks: Sequence[Sequence[np.ndarray]],
    *,
    labels: Sequence[str] | None = None,
    per_row: int | None = GRID_PER_ROW,
    margin: int = GRID_PAD,
) -> bytes:
    """Blocks of (c, h, w) uint8 samples on white as one PNG: each block (a class) under its
    label, wrapped at `per_row` samples (None: never wrapped)."""
    tiles = [tile for block in blocks for tile in block]
    if not tiles:
        raise ValueError("a grid needs at least one image")
    channels, h, w = tiles[0].shape
    layout = GridLayout(
        classes=len(blocks),
        per_class=max(len(block) for block in blocks),
        tile=(h, w),
        per_row=per_row,
        labelled=labels is not None,
        margin=margin,
    )
    grid = Image.new("L" if channels == 1 else "RGB", layout.size, "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=LABEL_FONT_SIZE)
    for b, block in enumerate(blocks):
        if labels is not None:
            x, y = layout.origin(b, 0)
            text = _fitted(draw, labels[b], font, layout.size[0] - 2 * margin)
            draw.text((x, y - layout.label_height + 1), text, fill="black", font=font)
        for i, tile in enumerate(block):
            grid.paste(_image(tile), layout.origin(b, i))
    return _encode(grid)
