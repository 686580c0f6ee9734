"""Storage behind two small protocols: the job store (records, events, keys) and the artifact
store (blobs). `open_stores` picks the implementations from settings; no other module builds
storage paths or imports redis, sqlite3 or boto3 (`tests/test_boundaries.py`)."""

from service.storage.base import (
    ArtifactNotFound,
    ArtifactStore,
    JobStore,
    Mutator,
    Page,
    StoreUnavailable,
    is_disk_full,
)
from service.storage.factory import Stores, open_stores

__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "JobStore",
    "Mutator",
    "Page",
    "StoreUnavailable",
    "Stores",
    "is_disk_full",
    "open_stores",
]
