"""Worker settings (`C3_*`): the common storage and lease settings plus what a worker needs."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from service.settings import CommonSettings


class WorkerSettings(CommonSettings):
    device: str | None = Field(
        None, description="Torch device for jobs; default `cuda` when present, else `cpu`."
    )
    torch_threads: int | None = Field(None, description="CPU threads per job (default: torch's).")
    classifier_cache_size: int = Field(
        4, description="Loaded classifiers a worker process keeps (LRU) for repeated jobs."
    )
    checkpoint_every_steps: int = Field(50, description="Checkpoint a job every N steps.")
    progress_every_seconds: float = Field(1.0, description="How often a job reports progress.")
    max_attempts: int = Field(
        3, description="A job whose worker died this many times is failed, not retried."
    )
    reaper_seconds: float = Field(
        10.0, description="How often a worker looks for jobs whose worker died."
    )
    validate_cpu_seconds: int = Field(60, description="CPU-time limit of an upload validation.")
    validate_memory_mb: int = Field(4096, description="Address-space limit of a validation.")
    validate_wall_seconds: float = Field(120.0, description="Wall-clock limit of a validation.")


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
