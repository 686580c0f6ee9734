"""Reading uploaded reference sets (real inputs for the distinctness metrics) as hostile data.

Two formats: `.npz` with `x` (N×C×H×W, uint8, or float in [0, 1]) and optional `y` (N labels),
read with `allow_pickle=False` after checking each array's header (dtype, shape, size) so that
nothing big is decompressed blindly; and a zip of PNGs with an optional `labels.csv`
(`filename,label`), read member by member with caps on count, declared and actual sizes (zip
bombs) and on pixels per image. Only numpy, Pillow and the standard library: no torch needed.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from numpy.lib import format as npy_format
from PIL import Image


class DatasetRejected(ValueError):
    """The upload is not a usable reference set; the message says why and what to send."""


@dataclass(frozen=True)
class ReferenceLimits:
    max_count: int = 100_000  # images in one set
    max_bytes: int = 2 * 1024**3  # uncompressed size of all images together
    max_side: int = 1024  # pixels along H or W
    max_members: int = 100_001  # files in a zip


@dataclass(frozen=True)
class ReferenceSet:
    x: np.ndarray  # (n, c, h, w), uint8 or float32 in [0, 1]
    y: np.ndarray | None  # (n,) int64

    @property
    def shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.x.shape
        return (int(c), int(h), int(w))

    def as_float(self) -> np.ndarray:
        """Pixels as float32 in [0, 1], whatever the stored dtype."""
        if self.x.dtype == np.uint8:
            return self.x.astype(np.float32) / 255.0
        return self.x.astype(np.float32)


def read_reference(path: Path, fmt: str, limits: ReferenceLimits | None = None) -> ReferenceSet:
    limits = limits or ReferenceLimits()
    if not zipfile.is_zipfile(path):
        raise DatasetRejected(f"not a {fmt} file: expected a zip archive (.npz files are zips too)")
    try:
        with zipfile.ZipFile(path) as archive:
            if len(archive.infolist()) > limits.max_members:
                raise DatasetRejected(f"the archive has more than {limits.max_members} files")
            if fmt == "npz":
                return _read_npz(archive, limits)
            if fmt == "png-zip":
                return _read_png_zip(archive, limits)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DatasetRejected(f"the archive is corrupt ({exc}): pack it again") from exc
    raise DatasetRejected(f"unknown dataset format {fmt!r}: use npz or png-zip")


def save_reference(ref: ReferenceSet, path: Path) -> None:
    """Write the canonical `.npz` (compressed, no pickles)."""
    arrays = {"x": ref.x} if ref.y is None else {"x": ref.x, "y": ref.y}
    with path.open("wb") as f:
        np.savez_compressed(f, **arrays)  # type: ignore[arg-type]


def load_canonical(data: bytes) -> ReferenceSet:
    """Load a canonical `.npz` written by `save_reference` (still without pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return ReferenceSet(x=npz["x"], y=npz["y"] if "y" in npz.files else None)


def _npy_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    with archive.open(name) as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise DatasetRejected(f"{name} uses .npy format {version}: save with numpy.savez")
        except ValueError as exc:
            raise DatasetRejected(f"{name} is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DatasetRejected(
            f"{name} holds Python objects (pickles are refused): use a numeric array"
        )
    return tuple(int(s) for s in shape), dtype


def _read_npz(archive: zipfile.ZipFile, limits: ReferenceLimits) -> ReferenceSet:
    names = set(archive.namelist())
    if "x.npy" not in names:
        raise DatasetRejected("the .npz has no array named 'x' (N×C×H×W images)")
    shape, dtype = _npy_header(archive, "x.npy")
    if len(shape) != 4:
        raise DatasetRejected(f"x must be N×C×H×W (4 dimensions), got shape {list(shape)}")
    n, c, h, w = shape
    _check_size(n, c, h, w, dtype.itemsize, limits)
    if not (dtype == np.uint8 or dtype.kind == "f"):
        raise DatasetRejected(f"x must be uint8 or float in [0, 1], got {dtype}")
    y_shape_dtype = _npy_header(archive, "y.npy") if "y.npy" in names else None
    if y_shape_dtype is not None:
        y_shape, y_dtype = y_shape_dtype
        if y_shape != (n,) or y_dtype.kind not in "iu":
            raise DatasetRejected(f"y must be {n} integer labels, got {y_dtype} {list(y_shape)}")
    with archive.open("x.npy") as f:
        x = npy_format.read_array(f, allow_pickle=False)
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DatasetRejected("x contains NaN or infinite values")
        if x.min() < 0.0 or x.max() > 1.0:
            raise DatasetRejected(
                f"float pixels must lie in [0, 1]; found [{x.min():.3g}, {x.max():.3g}]"
            )
        x = x.astype(np.float32)
    y = None
    if y_shape_dtype is not None:
        with archive.open("y.npy") as f:
            y = npy_format.read_array(f, allow_pickle=False).astype(np.int64)
        if (y < 0).any():
            raise DatasetRejected("labels in y must be non-negative class indices")
    return ReferenceSet(x=np.ascontiguousarray(x), y=y)


def _check_size(n: int, c: int, h: int, w: int, itemsize: int, limits: ReferenceLimits) -> None:
    if n < 1:
        raise DatasetRejected("the set is empty")
    if n > limits.max_count:
        raise DatasetRejected(f"{n} images is more than the limit of {limits.max_count}")
    if not (1 <= c <= 16 and 1 <= h <= limits.max_side and 1 <= w <= limits.max_side):
        raise DatasetRejected(
            f"image shape {c}×{h}×{w} is out of range (C ≤ 16, H and W ≤ {limits.max_side})"
        )
    if n * c * h * w * itemsize > limits.max_bytes:
        raise DatasetRejected(f"the images take more than {limits.max_bytes} bytes unpacked")


def _read_png_zip(archive: zipfile.ZipFile, limits: ReferenceLimits) -> ReferenceSet:
    members = [i for i in archive.infolist() if not i.is_dir()]
    for info in members:
        p = PurePosixPath(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise DatasetRejected(f"unsafe path in the archive: {info.filename!r}")
    pngs = sorted(
        (i for i in members if i.filename.lower().endswith(".png")), key=lambda i: i.filename
    )
    if not pngs:
        raise DatasetRejected("the zip holds no .png files")
    if len(pngs) > limits.max_count:
        raise DatasetRejected(f"{len(pngs)} images is more than the limit of {limits.max_count}")
    declared = sum(i.file_size for i in members)
    if declared > limits.max_bytes:
        raise DatasetRejected(f"the archive unpacks to more than {limits.max_bytes} bytes")
    labels = _read_labels(archive, members, limits)
    budget = limits.max_bytes
    images: list[np.ndarray] = []
    for info in pngs:
        data = _read_member(archive, info, budget)
        budget -= len(data)
        images.append(_decode_png(info.filename, data, limits))
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        raise DatasetRejected(f"all images must share one size and mode; found {sorted(shapes)}")
    x = np.stack(images)  # (n, c, h, w)
    n, c, h, w = x.shape
    _check_size(n, c, h, w, 1, limits)
    y = None
    if labels is not None:

        def label_of(info: zipfile.ZipInfo) -> int | None:
            return labels.get(info.filename, labels.get(PurePosixPath(info.filename).name))

        missing = [i.filename for i in pngs if label_of(i) is None]
        if missing:
            raise DatasetRejected(f"labels.csv has no label for {missing[0]!r}")
        y = np.array([label_of(i) for i in pngs], dtype=np.int64)
    return ReferenceSet(x=x, y=y)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Read one member, refusing it as soon as it grows past its declared size or the budget."""
    cap = min(info.file_size, budget)
    with archive.open(info) as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise DatasetRejected(
            f"{info.filename} unpacks to more than it declares or than the size limit (a zip bomb?)"
        )
    return data


def _decode_png(name: str, data: bytes, limits: ReferenceLimits) -> np.ndarray:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise DatasetRejected(f"{name} is not a PNG file")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            w, h = img.size
            if w > limits.max_side or h > limits.max_side:
                raise DatasetRejected(f"{name} is {w}×{h}, above the {limits.max_side} px limit")
            mode = "L" if img.mode in ("1", "L", "I", "I;16", "P") else "RGB"
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except DatasetRejected:
        raise
    except MemoryError:
        raise DatasetRejected(f"decoding {name} needs more memory than a check may use") from None
    except Exception as exc:  # PIL names its input by repr (<_io.BytesIO object at 0x…>)
        why = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>", "the file", str(exc)) or type(exc).__name__
        raise DatasetRejected(f"{name} cannot be decoded as PNG: {why}") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _read_labels(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], limits: ReferenceLimits
) -> dict[str, int] | None:
    found = [i for i in members if PurePosixPath(i.filename).name.lower() == "labels.csv"]
    if not found:
        return None
    data = _read_member(archive, found[0], min(limits.max_bytes, 64 * 1024 * 1024))
    labels: dict[str, int] = {}
    for row in csv.reader(io.StringIO(data.decode("utf-8", "replace"))):
        if len(row) < 2 or not row[0].strip():
            continue
        name, label = row[0].strip(), row[1].strip()
        if not label.lstrip("-").isdigit():
            if not labels:  # a header row
                continue
            raise DatasetRejected(f"labels.csv: label {label!r} of {name!r} is not an integer")
        if int(label) < 0:
            raise DatasetRejected(f"labels.csv: label of {name!r} is negative")
        labels[name] = int(label)
    return labels
