"""Per-tenant quotas: one tenant's burst cannot fill the queue or the disk for everyone.

A tenant may have at most `quota_active_jobs` jobs queued or running, `quota_validations`
uploads waiting for validation, and `quota_stored_bytes` stored (uploads as sent, plus what its
jobs wrote). Past a quota a request is refused with 429 and `Retry-After`: the job quota frees
itself as jobs finish, the storage quota when the tenant deletes something.
"""

from __future__ import annotations

from service.errors import Problem
from service.records import (
    ACTIVE_JOB_STATES,
    ClassifierRecord,
    DatasetRecord,
    JobRecord,
    Upload,
    UploadState,
)
from service.settings import ServiceSettings
from service.storage import JobStore

STORAGE_RETRY_SECONDS = 3600


class TooManyRequests(Problem):
    status, title, slug = 429, "Too many requests", "quota"


def stored_bytes(store: JobStore, tenant: str) -> int:
    """What the tenant stores: its uploads (as sent) and its jobs' files."""
    total = 0
    for model in (ClassifierRecord, DatasetRecord):
        total += sum(r.size_bytes for r in store.list(model, tenant=tenant).items)
    total += sum(j.stored_bytes or 0 for j in store.list(JobRecord, tenant=tenant).items)
    return total


def check_jobs(store: JobStore, settings: ServiceSettings, tenant: str) -> None:
    active = sum(
        store.list(JobRecord, tenant=tenant, state=state, limit=0).count
        for state in ACTIVE_JOB_STATES
    )
    if active >= settings.quota_active_jobs:
        raise TooManyRequests(
            f"{active} of your jobs are queued or running, the most this service allows at "
            "once: wait for some to finish (or cancel them)",
            headers={"Retry-After": str(settings.quota_retry_seconds)},
        )


def check_upload(
    store: JobStore, settings: ServiceSettings, tenant: str, model: type[Upload], size: int
) -> None:
    validating = store.list(model, tenant=tenant, state=UploadState.VALIDATING, limit=0).count
    if validating >= settings.quota_validations:
        raise TooManyRequests(
            f"{validating} of your uploads are still being validated: wait for their verdict",
            headers={"Retry-After": str(settings.quota_retry_seconds)},
        )
    check_storage(store, settings, tenant, size)


def check_storage(store: JobStore, settings: ServiceSettings, tenant: str, adding: int) -> None:
    used = stored_bytes(store, tenant)
    if used + adding > settings.quota_stored_bytes:
        raise TooManyRequests(
            f"you store {used / 2**20:,.0f} MB; {adding / 2**20:,.0f} MB more would pass your "
            f"quota of {settings.quota_stored_bytes / 2**20:,.0f} MB: delete jobs, classifiers "
            "or reference sets you no longer need",
            headers={"Retry-After": str(STORAGE_RETRY_SECONDS)},
        )
