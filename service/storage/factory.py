"""The one place that picks storage implementations from settings."""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import CommonSettings
from service.storage.base import ArtifactStore, JobStore


@dataclass
class Stores:
    jobs: JobStore
    artifacts: ArtifactStore

    def close(self) -> None:
        self.jobs.close()


def open_stores(settings: CommonSettings) -> Stores:
    """Redis job store when `redis_url` is set, else SQLite under `data_dir`; blobs on disk."""
    from service.storage.local_blobs import LocalArtifactStore

    jobs: JobStore
    if settings.redis_url:
        from service.storage.redis_jobs import RedisJobStore

        jobs = RedisJobStore(settings.redis_url, settings.redis_prefix)
    else:
        from service.storage.sqlite_jobs import SqliteJobStore

        jobs = SqliteJobStore(settings.sqlite_path)
    return Stores(jobs=jobs, artifacts=LocalArtifactStore(settings.blob_root))
