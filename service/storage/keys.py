"""The layout of blobs in the artifact store: the one place that builds their keys."""

from __future__ import annotations

from models.contracts.artifacts import ArtifactName


def owner(key: str) -> tuple[str, str, str] | None:
    """(tenant, collection, id) of a record's blob: collection is `classifiers`, `datasets`
    or `jobs`; None for a key outside that layout."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != "tenants":
        return None
    return parts[1], parts[2], parts[3]


def classifier_prefix(tenant: str, id: str) -> str:
    return f"tenants/{tenant}/classifiers/{id}"


def classifier_upload(tenant: str, id: str) -> str:
    """The bytes as uploaded: untrusted, read only by the sandboxed validation."""
    return f"{classifier_prefix(tenant, id)}/upload"


def classifier_canonical(tenant: str, id: str) -> str:
    """The clean copy re-serialised by the validation: what jobs load and users download."""
    return f"{classifier_prefix(tenant, id)}/canonical"


def dataset_prefix(tenant: str, id: str) -> str:
    return f"tenants/{tenant}/datasets/{id}"


def dataset_upload(tenant: str, id: str) -> str:
    return f"{dataset_prefix(tenant, id)}/upload"


def dataset_canonical(tenant: str, id: str) -> str:
    """Validated reference set as `.npz` (`x`: N×C×H×W, `y` optional)."""
    return f"{dataset_prefix(tenant, id)}/canonical.npz"


def job_prefix(tenant: str, id: str) -> str:
    return f"tenants/{tenant}/jobs/{id}"


def job_checkpoint(tenant: str, id: str) -> str:
    """The method's state during training, for resuming after a worker died."""
    return f"{job_prefix(tenant, id)}/checkpoint.pt"


def job_generator(tenant: str, id: str) -> str:
    """The trained method's final state, for drawing more samples later."""
    return f"{job_prefix(tenant, id)}/generator.pt"


def job_artifact(tenant: str, id: str, name: ArtifactName) -> str:
    """A finished job's files (models.contracts.artifacts): samples, metrics, report."""
    return f"{job_prefix(tenant, id)}/{name.value}"
