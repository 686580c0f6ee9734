"""The layout of blobs in the artifact store: the one place that builds their keys."""

from __future__ import annotations


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


def job_samples_json(tenant: str, id: str) -> str:
    return f"{job_prefix(tenant, id)}/samples.json"


def job_samples_npz(tenant: str, id: str) -> str:
    """Every sample's pixels (`x`: n×c×h×w uint8) with targets, predictions, confidences."""
    return f"{job_prefix(tenant, id)}/samples.npz"


def job_metrics_json(tenant: str, id: str) -> str:
    return f"{job_prefix(tenant, id)}/metrics.json"


def job_report_json(tenant: str, id: str) -> str:
    """Audit-report figures computed by the worker (OOD-detector evasion, histograms)."""
    return f"{job_prefix(tenant, id)}/report.json"
