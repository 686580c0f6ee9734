"""Worker settings (`C3_*`): the common storage and lease settings plus what a worker needs."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from service.settings import CommonSettings


class WorkerSettings(CommonSettings):
    device: str | None = Field(
        None, description="Torch device for jobs; default `cuda` when present, else `cpu`."
    )
    torch_threads: int | None = Field(
        None,
        description="CPU threads per job (default: this host's cores divided by "
        "`C3_JOB_PROCESSES`).",
    )
    job_processes: int | None = Field(
        None,
        description="Processes running jobs on this host, which share its cores (default: "
        "this worker's concurrency; `c3 serve` sets it to its number of workers).",
    )
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
    republish_after_seconds: float = Field(
        10.0, description="A queued record whose message was never sent gets it after this long."
    )
    gc_seconds: float = Field(300.0, description="How often a worker collects orphaned blobs.")
    gc_grace_seconds: float = Field(
        600.0, description="Orphaned or partial blobs are collected once this old."
    )
    validate_cpu_seconds: int = Field(60, description="CPU-time limit of an upload validation.")
    validate_memory_mb: int = Field(4096, description="Address-space limit of a validation.")
    validate_wall_seconds: float = Field(120.0, description="Wall-clock limit of a validation.")
    sandbox_isolation: Literal["auto", "bwrap", "none"] = Field(
        "auto",
        description="Namespaces for the validation sandbox (bubblewrap): `auto` uses them where "
        "they work, `bwrap` requires them, `none` goes without.",
    )
    max_dataset_bytes: int = Field(
        256 * 1024 * 1024,
        description="Largest reference set, its images unpacked (a 2 MB archive of zeros may "
        "unpack to gigabytes).",
    )


@lru_cache
def get_worker_settings() -> WorkerSettings:
    return WorkerSettings()
