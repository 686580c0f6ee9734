"""The one place that picks storage implementations from settings."""

from __future__ import annotations

from dataclasses import dataclass

from service.settings import CommonSettings, ServiceSettings
from service.storage.base import ArtifactStore, JobStore


@dataclass
class Stores:
    jobs: JobStore
    artifacts: ArtifactStore

    def close(self) -> None:
        self.jobs.close()


def open_stores(settings: CommonSettings) -> Stores:
    """Redis job store when `redis_url` is set, else SQLite under `data_dir`; blobs in the S3
    bucket when `s3_bucket` is set, else on disk."""
    jobs: JobStore
    if settings.redis_url:
        from service.storage.redis_jobs import RedisJobStore

        jobs = RedisJobStore(settings.redis_url, settings.redis_prefix)
    else:
        from service.storage.sqlite_jobs import SqliteJobStore

        jobs = SqliteJobStore(settings.sqlite_path)
    return Stores(jobs=jobs, artifacts=_artifacts(settings))


def _artifacts(settings: CommonSettings) -> ArtifactStore:
    if not settings.s3_bucket:
        from service.storage.local_blobs import LocalArtifactStore

        return LocalArtifactStore(settings.blob_root)
    from service.storage.s3_blobs import S3ArtifactStore, s3_client

    secret = settings.s3_secret_access_key
    credentials = (settings.s3_access_key_id, secret.get_secret_value() if secret else None)
    client = s3_client(settings.s3_endpoint_url, settings.s3_region, *credentials)
    public = settings.s3_public_endpoint_url if isinstance(settings, ServiceSettings) else None
    presigner = s3_client(public, settings.s3_region, *credentials) if public else None
    return S3ArtifactStore(client, settings.s3_bucket, settings.s3_prefix or "", presigner)
