"""`.npz` files written a block at a time and read a row range at a time.

The archives are uncompressed (ZIP_STORED): sample pixels barely compress (×1.13 on digits
counterfeits), and a stored member is a plain array at a known offset, so a reader can fetch
the rows it needs (one image, one class) with a range read instead of the whole file. `np.load`
reads them as usual.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["NpzWriter", "StoredArray", "locate"]

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
"""A zip member's local file header (30 bytes): the data starts after it, its name and extra."""


class NpzWriter:
    """An uncompressed `.npz` written member by member; `stream` writes one array in blocks,
    so it never has to be in memory whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._archive = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._streams: list[BlockWriter] = []

    def array(self, name: str, array: np.ndarray) -> None:
        with self._archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
            npy_format.write_array(entry, np.ascontiguousarray(array), allow_pickle=False)

    def stream(self, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> BlockWriter:
        """A writer for array `name` of `shape`, filled along its first axis in order."""
        entry = self._archive.open(f"{name}.npy", "w", force_zip64=True)
        header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": shape}  # fmt: skip
        npy_format.write_array_header_1_0(entry, header)
        stream = BlockWriter(entry, dtype, shape)
        self._streams.append(stream)
        return stream

    def close(self) -> Path:
        self._archive.close()
        return self.path

    def abort(self) -> None:
        """Close the archive unfinished (a stream still open is closed first)."""
        for stream in self._streams:
            stream.abandon()
        self._archive.close()


class BlockWriter:
    def __init__(self, entry: IO[bytes], dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
        self._entry, self._dtype, self._shape, self.rows = entry, dtype, shape, 0

    def write(self, block: np.ndarray) -> None:
        if block.shape[1:] != self._shape[1:]:
            raise ValueError(f"rows of shape {block.shape[1:]}, expected {self._shape[1:]}")
        self._entry.write(np.ascontiguousarray(block, dtype=self._dtype).tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._entry.close()
        if self.rows != self._shape[0]:
            raise ValueError(f"{self.rows} rows written, {self._shape[0]} announced")

    def abandon(self) -> None:
        if not self._entry.closed:
            self._entry.close()


@dataclass(frozen=True)
class StoredArray:
    """Where an uncompressed member's array lies in its archive: row i is the `row_bytes`
    bytes at `offset + i * row_bytes`."""

    offset: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def row_bytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape[1:], dtype=np.int64))

    def rows(self, data: bytes, count: int) -> np.ndarray:
        return np.frombuffer(data, dtype=self.dtype).reshape(count, *self.shape[1:])


def locate(file: BinaryIO, name: str) -> StoredArray | None:
    """Where array `name` lies in the `.npz` open as `file`; None when the member is
    compressed (an archive written before members were stored), which can only be read whole."""
    with zipfile.ZipFile(file) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    file.seek(info.header_offset)
    fields = _LOCAL_HEADER.unpack(file.read(_LOCAL_HEADER.size))
    name_length, extra_length = fields[-2], fields[-1]
    file.seek(info.header_offset + _LOCAL_HEADER.size + name_length + extra_length)
    version = npy_format.read_magic(file)
    read_header = (
        npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    )
    shape, fortran_order, dtype = read_header(file)
    if fortran_order or dtype.hasobject:
        return None
    return StoredArray(offset=file.tell(), shape=tuple(shape), dtype=dtype.str)
