"""Typed settings, read from `C3_*` environment variables.

`CommonSettings` holds what the API and the workers must agree on (where state, blobs and the
broker live, and the job lease timings); `ServiceSettings` and `worker.settings.WorkerSettings`
add what each deployable needs. Nothing here builds a client: factories do, at start-up.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="C3_", extra="ignore")

    data_dir: Path = Field(
        Path("data"),
        description="Folder of the embedded default: SQLite state, broker and blobs.",
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL. When set: Celery broker, result backend and job store.",
    )
    redis_prefix: str = Field("c3:", description="Key prefix of the job store in Redis.")
    blob_dir: Path | None = Field(
        None, description="Folder of the local blob store (default: DATA_DIR/blobs)."
    )
    s3_bucket: str | None = Field(
        None,
        description="Bucket of the S3-compatible blob store. When set, blobs go there instead "
        "of BLOB_DIR.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible server (MinIO, …); unset: AWS S3."
    )
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket.")
    s3_prefix: str | None = Field(
        None,
        description="Key prefix of the blobs in the bucket (e.g. `c3/`: deployments share it).",
    )
    s3_access_key_id: str | None = Field(
        None,
        description="S3 access key; unset: boto3's usual chain (AWS_ACCESS_KEY_ID, "
        "~/.aws/credentials, an instance role).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        None, description="S3 secret key, with S3_ACCESS_KEY_ID."
    )
    max_job_seconds: int = Field(
        6 * 3600, description="Longest a job may run; the broker's visibility timeout is above it."
    )
    heartbeat_seconds: float = Field(
        5.0, description="How often a running task renews its lease in the job record."
    )
    stale_after_seconds: float = Field(
        30.0, description="A lease not renewed for this long is stale: the task is re-queued."
    )
    max_steps: int = Field(
        20_000,
        description="Largest training budget a job may ask for (and a verdict may suggest).",
    )
    min_free_mb: int = Field(
        256,
        description="Free disk below this is 'disk full': /readyz says so, and jobs that "
        "failed for want of space resume once there is this much again.",
    )
    job_memory_mb: int = Field(
        4096,
        description="Memory one job may use: jobs estimated above it are refused (422), and a "
        "worker process running a job cannot allocate beyond it.",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object a log line, with the request id, tenant and job "
        "id of the work it is about; `text`: the same as readable lines.",
    )
    tracing: Literal["off", "otlp"] = Field(
        "off",
        description="`otlp`: OpenTelemetry traces of requests and tasks, sent to the collector "
        "the standard `OTEL_EXPORTER_OTLP_*` variables name (needs the `tracing` extra).",
    )
    celery_events: bool = Field(
        False,
        description="Celery task events, worker heartbeats and remote control, for Flower, "
        "`celery inspect` and `python -m worker.health` (the workers' compose healthcheck); "
        "with Redis only.",
    )

    @property
    def embedded(self) -> bool:
        """The embedded default: no Redis configured, everything under `data_dir`."""
        return self.redis_url is None

    @property
    def blob_root(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "c3.sqlite"

    @property
    def broker_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        return f"sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"


class ServiceSettings(CommonSettings):
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, description="Port the API listens on.")
    max_upload_bytes: int = Field(
        256 * 1024 * 1024, description="Largest classifier or dataset upload (413 above it)."
    )
    max_body_bytes: int = Field(
        1024 * 1024, description="Largest request body other than an upload (413 above it)."
    )
    max_samples_per_class: int = Field(
        10_000, description="Most samples per class a job may ask for."
    )
    max_samples: int = Field(
        100_000, description="Most samples a job may ask for (classes × samples per class)."
    )
    max_batch_size: int = Field(1_024, description="Largest batch size a job may ask for.")
    trust_forwarded_host: bool = Field(
        False,
        description="Behind a proxy that sets X-Forwarded-Host: the dashboard's forms may come "
        "from that host.",
    )
    read_cache_mb: int = Field(
        64,
        description="Memory each API process may keep of finished jobs' sample tables and "
        "figures (least recently used go first).",
    )
    quota_active_jobs: int = Field(
        20, description="Jobs a tenant may have queued or running at once (429 above)."
    )
    quota_validations: int = Field(
        10, description="Uploads a tenant may have waiting for validation at once (429 above)."
    )
    quota_retry_seconds: int = Field(
        30, description="Retry-After of a 429 for the job and validation quotas (seconds)."
    )
    s3_presign_min_bytes: int | None = Field(
        None,
        description="With the S3 blob store: downloads of at least this many bytes redirect "
        "(307) to a presigned URL, so the bytes bypass the API; unset: the API streams them.",
    )
    s3_presign_seconds: int = Field(300, description="How long a presigned URL is valid.")
    s3_public_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint that presigned URLs name, when users reach the server at "
        "another address than the service (default: S3_ENDPOINT_URL).",
    )
    quota_stored_bytes: int = Field(
        20 * 1024**3, description="Bytes a tenant may store: uploads and job files (429 above)."
    )

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


class ClientSettings(BaseSettings):
    """What the client (`c3 audit`, `Client.from_env()`) reads: where the service is, and the
    key to show it."""

    model_config = SettingsConfigDict(env_prefix="C3_", extra="ignore")

    server: str = Field("http://127.0.0.1:8000", description="URL of the service a client uses.")
    api_key: SecretStr | None = Field(
        None, description="API key a client sends (made by `c3 keys create`)."
    )


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses: the only binds allowed without API keys."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()
