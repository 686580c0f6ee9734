"""Artifact store on a local folder: the default, and the shared volume in docker-compose.
Writes go to a temporary file in the same folder and are renamed into place, so a crash never
leaves half a blob under a real key."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from service.storage.base import ArtifactNotFound, StoreUnavailable, checked_key


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self._root = root.resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self._root / checked_key(key)).resolve()
        if not path.is_relative_to(self._root):  # through a symbolic link
            raise ValueError(f"bad artifact key {key!r}")
        return path

    def ping(self) -> None:
        if not os.access(self._root, os.W_OK):
            raise StoreUnavailable(f"blob folder {self._root} is not writable")

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, iter([data]))

    def put_stream(self, key: str, chunks: Iterator[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(key) from exc

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self.open(key) as f:
            f.seek(start)
            return f.read(length)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ArtifactNotFound(key) from exc

    def modified_at(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError as exc:
            raise ArtifactNotFound(key) from exc

    def free_bytes(self) -> int | None:
        return shutil.disk_usage(self._root).free

    def presigned_url(
        self, key: str, seconds: int, media_type: str, filename: str | None
    ) -> str | None:
        return None

    def sweep_partials(self, older_than: float) -> int:
        """Temporary files of writes that a crash interrupted (`.tmp-*`)."""
        swept = 0
        for path in self._root.rglob(".tmp-*"):
            try:
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    swept += 1
            except FileNotFoundError:
                continue
        return swept

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self._root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        if base.is_file():
            base.unlink()
            return 1
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        return count
