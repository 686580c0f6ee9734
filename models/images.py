"""[0, 1] images → 8-bit lossless PNG bytes, and class grids (rows = classes), with Pillow."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["grid_array", "grid_png", "hstack_arrays", "png_bytes", "to_uint8"]

ArrayLike = torch.Tensor | np.ndarray


def to_uint8(image: ArrayLike) -> np.ndarray:
    """(C, H, W) or (H, W) floats in [0, 1] → (H, W) or (H, W, 3) uint8 (rounded, clipped)."""
    array = (
        image.detach().cpu().float().numpy()
        if isinstance(image, torch.Tensor)
        else np.asarray(image, dtype=np.float32)
    )
    if array.ndim == 3:
        if array.shape[0] == 1:
            array = array[0]
        elif array.shape[0] in (3, 4):
            array = np.transpose(array[:3], (1, 2, 0))
        else:
            raise ValueError(f"cannot show {array.shape[0]} channels as an image")
    elif array.ndim != 2:
        raise ValueError(f"expected (C, H, W) or (H, W), got shape {array.shape}")
    return np.clip(np.rint(np.nan_to_num(array) * 255.0), 0, 255).astype(np.uint8)


def _encode(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def png_bytes(image: ArrayLike, scale: int = 1) -> bytes:
    """One image as PNG (grey for 1 channel, RGB for 3); `scale` repeats pixels."""
    array = to_uint8(image)
    if scale > 1:
        array = array.repeat(scale, axis=0).repeat(scale, axis=1)
    return _encode(array)


def grid_array(
    images: ArrayLike,
    labels: Sequence[int] | torch.Tensor,
    *,
    per_row: int | None = None,
    pad: int = 2,
    scale: int = 1,
    background: int = 255,
) -> np.ndarray:
    """Images (n, C, H, W) in rows by label (sorted), up to `per_row` each → uint8 array."""
    batch = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    label_list = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    classes = sorted(set(label_list))
    rows = [[i for i, y in enumerate(label_list) if y == c] for c in classes]
    columns = max((len(r) for r in rows), default=0)
    columns = min(columns, per_row) if per_row else columns
    _, c, h, w = batch.shape
    color = c >= 3
    cell_h, cell_w = h * scale, w * scale
    shape: tuple[int, ...] = (
        len(rows) * (cell_h + pad) + pad,
        max(columns, 1) * (cell_w + pad) + pad,
    )
    if color:
        shape = (*shape, 3)
    canvas = np.full(shape, background, dtype=np.uint8)
    for r, indices in enumerate(rows):
        for col, index in enumerate(indices[:columns]):
            tile = to_uint8(batch[index])
            if scale > 1:
                tile = tile.repeat(scale, axis=0).repeat(scale, axis=1)
            top, left = pad + r * (cell_h + pad), pad + col * (cell_w + pad)
            canvas[top : top + cell_h, left : left + cell_w] = tile
    return canvas


def grid_png(
    images: ArrayLike,
    labels: Sequence[int] | torch.Tensor,
    *,
    per_row: int | None = None,
    pad: int = 2,
    scale: int = 1,
) -> bytes:
    """A grid PNG: one row per class (in label order), samples left to right."""
    return _encode(grid_array(images, labels, per_row=per_row, pad=pad, scale=scale))


def hstack_arrays(arrays: Sequence[np.ndarray], gap: int = 12, background: int = 255) -> np.ndarray:
    """Place uint8 images side by side (top-aligned), e.g. counterfeits beside real data."""
    color = any(a.ndim == 3 for a in arrays)
    parts = [np.repeat(a[:, :, None], 3, axis=2) if color and a.ndim == 2 else a for a in arrays]
    height = max(a.shape[0] for a in parts)
    width = sum(a.shape[1] for a in parts) + gap * (len(parts) - 1)
    shape = (height, width, 3) if color else (height, width)
    canvas = np.full(shape, background, dtype=np.uint8)
    left = 0
    for part in parts:
        canvas[: part.shape[0], left : left + part.shape[1]] = part
        left += part.shape[1] + gap
    return canvas


def encode_png(array: np.ndarray) -> bytes:
    """A uint8 array (H, W) or (H, W, 3) as PNG bytes."""
    return _encode(array)
