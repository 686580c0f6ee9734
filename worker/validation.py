"""Validation tasks: an uploaded classifier or dataset becomes `ready` (with a canonical copy)
or `rejected` (with a reason a user can act on). The untrusted bytes are only ever read inside
the sandbox, and are deleted once the verdict is recorded."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from service.background import Heartbeat, claim
from service.records import ClassifierRecord, DatasetRecord, ErrorInfo, Upload, UploadState
from service.storage import keys
from worker.context import WorkerContext, get_context
from worker.sandbox import Limits, SandboxFailure, process_sandbox

log = logging.getLogger(__name__)

U = TypeVar("U", bound=Upload)


def _limits(ctx: WorkerContext) -> Limits:
    s = ctx.settings
    return Limits(s.validate_cpu_seconds, s.validate_memory_mb, s.validate_wall_seconds)


def _file_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def _hashing(chunks: Iterator[bytes], digest: Any) -> Iterator[bytes]:
    """Pass chunks through while hashing them: the file is read once to store and to hash."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _validate(
    model: type[U],
    record_id: str,
    upload_key: Callable[[str, str], str],
    canonical_key: Callable[[str, str], str],
    check: str,
    check_args: Callable[[U, Path, Path], list[Any]],
) -> None:
    """Claim the record, run `check` ("module:function") on `check_args(record, upload,
    canonical)` in the sandbox, record the verdict: the check's figures become the record's
    fields (validated like every write)."""
    ctx = get_context()
    store, artifacts = ctx.stores.jobs, ctx.stores.artifacts
    claimed = claim(store, model, record_id, max_attempts=ctx.settings.max_attempts)
    if claimed is None:
        log.info("%s %s: not queued (duplicate message or already done)", model.KIND, record_id)
        return
    lease, doc = claimed
    tenant = doc.tenant
    settings = ctx.settings
    sandbox = process_sandbox(
        settings.sandbox_isolation, hidden=[settings.data_dir, settings.blob_root]
    )
    with (
        Heartbeat(store, lease, settings.heartbeat_seconds),
        sandbox.workdir() as tmp,
    ):
        upload, canonical = tmp / "upload", tmp / "canonical"
        with artifacts.open(upload_key(tenant, record_id)) as src, upload.open("wb") as dst:
            while chunk := src.read(1024 * 1024):
                dst.write(chunk)
        try:
            report = sandbox.run(check, check_args(doc, upload, canonical), _limits(ctx))
        except SandboxFailure as exc:
            log.info("%s %s rejected: %s", model.KIND, record_id, exc)
            verdict: dict[str, Any] = {
                "state": UploadState.REJECTED,
                "error": ErrorInfo(title="Rejected", detail=str(exc)),
            }
        except Exception as exc:  # our fault, not the upload's: say so rather than retry forever
            log.exception("%s %s: validation failed", model.KIND, record_id)
            verdict = {
                "state": UploadState.REJECTED,
                "error": ErrorInfo(
                    title="Validation failed",
                    detail=f"validation failed unexpectedly ({type(exc).__name__}); "
                    "please retry the upload or report it",
                ),
            }
        else:
            digest = hashlib.sha256()
            artifacts.put_stream(
                canonical_key(tenant, record_id), _hashing(_file_chunks(canonical), digest)
            )
            verdict = {"state": UploadState.READY, "canonical_sha256": digest.hexdigest(), **report}
    verdict["validated_at"] = time.time()

    def record_verdict(record: U) -> U:
        for name, value in verdict.items():
            setattr(record, name, value)
        return record

    if lease.finish(store, record_verdict) is not None:
        artifacts.delete_prefix(upload_key(tenant, record_id))


def validate_classifier(classifier_id: str) -> None:
    _validate(
        ClassifierRecord,
        classifier_id,
        keys.classifier_upload,
        keys.classifier_canonical,
        "worker.checks:check_classifier_upload",
        lambda record, upload, canonical: [
            str(upload),
            record.spec().model_dump_json(),
            str(canonical),
            get_context().settings.validate_memory_mb,
        ],
    )


def validate_dataset(dataset_id: str) -> None:
    _validate(
        DatasetRecord,
        dataset_id,
        keys.dataset_upload,
        keys.dataset_canonical,
        "worker.checks:check_dataset_upload",
        lambda record, upload, canonical: [
            str(upload),
            record.format,
            str(canonical),
            get_context().settings.max_dataset_bytes,
        ],
    )
