"""The figures behind the dashboard and the report (service.plots, service.report), and
`seed_job`: a finished job's records and artifacts as the worker leaves them, for the dashboard
tests and bench/dashboard.py (no worker, no torch)."""

from __future__ import annotations

import io
import json
import math
import time
from typing import Any

import numpy as np
import pytest

from service import plots, report
from service.jobs import events_stream
from service.records import CLASSIFIER, DATASET, JOB, new_id, new_record
from service.storage import Stores, keys

METRIC_KEYS = (
    "count", "mean_confidence", "confident_share", "argmax_accuracy", "nn_distance",
    "reference_nn_distance", "train_nn_distance", "reference_train_nn_distance", "msp_auroc",
    "knn_feature_auroc", "knn_pixel_auroc", "pixel_diversity", "reference_pixel_diversity",
    "feature_cosine", "reference_feature_cosine", "mean_reference_confidence", "collapsed",
)  # fmt: skip
"""models.metrics.ClassMetrics' fields: what metrics.json holds per class and overall."""


def seed_classifier(
    stores: Stores, tenant: str = "local", *, classes: int = 10, side: int = 8, name: str = "digits"
) -> dict[str, Any]:
    doc = new_record(
        tenant, new_id("clf"), "ready", name=name, format="safetensors",
        input_shape=[1, side, side], class_names=[f"digit {i}" for i in range(classes)],
        mean=[0.0], std=[1.0],
        architecture="paper-cnn", architecture_config={}, description="a test classifier",
        tags=["test"], sha256="ab" * 32, size_bytes=1, param_count=12345,
    )  # fmt: skip
    doc["task"]["state"] = "done"
    stores.jobs.create(CLASSIFIER, doc)
    return doc


def seed_dataset(stores: Stores, tenant: str, side: int, count: int = 200) -> dict[str, Any]:
    doc = new_record(
        tenant, new_id("dat"), "ready", name="held-out digits", format="npz", description="",
        tags=[], sha256="cd" * 32, size_bytes=1, input_shape=[1, side, side], count=count,
        has_labels=True,
    )  # fmt: skip
    doc["task"]["state"] = "done"
    stores.jobs.create(DATASET, doc)
    return doc


def _figures(rng: np.random.Generator, conf: np.ndarray, reference: bool) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "count": len(conf),
        "mean_confidence": float(conf.mean()),
        "confident_share": float((conf >= 0.99).mean()),
        "argmax_accuracy": float((conf >= 0.5).mean()),
        "pixel_diversity": float(rng.uniform(4, 7)),
        "feature_cosine": float(rng.uniform(0.2, 0.6)),
        "collapsed": False,
    }
    for key in METRIC_KEYS:
        figures.setdefault(key, float(rng.uniform(0, 1)) if reference else None)
    return figures


def seed_job(
    stores: Stores,
    classifier: dict[str, Any],
    *,
    method: str = "c3",
    classes: list[int] | None = None,
    per_class: int = 10,
    steps: int = 300,
    reference: bool = True,
    state: str = "succeeded",
    seed: int = 0,
    progress_every: int = 10,
    reference_size: int = 200,
) -> dict[str, Any]:
    """A job as the worker leaves it: record, events (a progress event every `progress_every`
    steps) and, when succeeded, every artifact."""
    rng = np.random.default_rng(seed)
    tenant, (c, h, w) = classifier["tenant"], classifier["input_shape"]
    names = classifier["class_names"]
    classes = list(range(len(names))) if classes is None else classes
    dataset = seed_dataset(stores, tenant, h, reference_size) if reference else None
    job = new_record(
        tenant, new_id("job"), state, kind="inversion", parent_id=None,
        classifier_id=classifier["id"], dataset_id=dataset["id"] if dataset else None,
        method=method, class_names=names, input_shape=[c, h, w], cancel_requested=False,
        params={"classes": classes, "samples_per_class": per_class, "steps": steps,
                "batch_size": 64, "loss_weights": None, "seed": seed, "sample_dropout": False},
        progress=None, started_at=time.time() - 30, finished_at=None, metrics=None,
        sample_count=None,
    )  # fmt: skip
    job["task"].update(state="done" if state != "running" else "running", attempts=1)
    stream = events_stream(job["id"])
    stores.jobs.append_event(stream, {"type": "state", "state": "queued"})
    stores.jobs.append_event(stream, {"type": "state", "state": "running"})
    last_step = steps if state == "succeeded" else steps // 2
    for step in range(progress_every, last_step + 1, progress_every):
        kl = 2.3 * math.exp(-step / 40) + 1e-3
        losses = {"kl": kl, "cosine": 0.3, "orthogonality": 0.05, "total": kl + 0.035}
        event = {"type": "progress", "phase": "training", "step": step, "total_steps": steps,
                 "fraction": step / steps, "losses": losses,
                 "confident_share": min(1.0, step / steps * 1.2), "steps_per_second": 15.0,
                 "eta_seconds": (steps - step) / 15, "updated_at": time.time()}  # fmt: skip
        stores.jobs.append_event(stream, event)
        job["progress"] = {k: v for k, v in event.items() if k != "type"}
    if state != "succeeded":
        stores.jobs.create(JOB, job)
        return job

    n = len(classes) * per_class
    targets = np.repeat(classes, per_class)
    conf = np.clip(1 - rng.exponential(0.004, n), 0.2, 1.0)
    conf[:: max(1, n // 7)] = rng.uniform(0.3, 0.9, len(conf[:: max(1, n // 7)]))
    pixels = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
    records = []
    for i in range(n):
        t = int(targets[i])
        other = (t + 1) % len(names)
        predicted = t if conf[i] >= 0.5 else other
        rest = (1 - conf[i]) if predicted == t else conf[i]
        top = max(conf[i], 1 - conf[i])
        records.append({
            "index": i, "target": t, "predicted": predicted, "confidence": float(conf[i]),
            "top_k": [[predicted, float(top)], [other if predicted == t else t, float(rest)]],
        })  # fmt: skip
    metrics = {
        "overall": _figures(rng, conf, reference),
        "per_class": {
            names[cls]: _figures(rng, conf[targets == cls], reference) for cls in classes
        },
        "cost": {"train_seconds": 19.2, "steps": steps, "sample_seconds": 0.2,
                 "samples_per_second": n / 0.2, "device": "cpu"},
        "collapsed_classes": [],
        "reference_size": reference_size if reference else 0,
        "knn_k": 5,
        "confident_threshold": 0.99,
    }  # fmt: skip
    msp = [r["top_k"][0][1] for r in records]
    figures: dict[str, Any] = {
        "msp": {
            "counterfeits": msp,
            "reference": list(np.clip(1 - rng.exponential(0.01, reference_size), 0.1, 1.0))
            if reference
            else None,
        },
        "ood": {
            "tpr": 0.95, "reference_fit": reference_size // 2,
            "reference_eval": reference_size - reference_size // 2, "counterfeits": n,
            "detectors": [
                {"name": "max-softmax", "auroc": 0.31, "accepted_share": 0.97, "threshold": 0.91},
                {"name": "energy", "auroc": 0.42, "accepted_share": 0.88, "threshold": 7.5},
                {"name": "mahalanobis", "auroc": 0.93, "accepted_share": 0.12,
                 "threshold": -310.0},
                {"name": "knn", "auroc": 0.99, "accepted_share": 0.015, "threshold": -0.52},
            ],
        } if reference else None,
    }  # fmt: skip
    store = stores.artifacts
    store.put(keys.job_samples_json(tenant, job["id"]), json.dumps(records).encode())
    store.put(keys.job_metrics_json(tenant, job["id"]), json.dumps(metrics).encode())
    store.put(keys.job_report_json(tenant, job["id"]), json.dumps(figures).encode())
    npz = io.BytesIO()
    np.savez_compressed(npz, x=pixels, targets=targets, predicted=targets, confidence=conf)
    store.put(keys.job_samples_npz(tenant, job["id"]), npz.getvalue())
    job.update(finished_at=time.time(), metrics=metrics["overall"], sample_count=n)
    job["progress"].update(phase="done", fraction=1.0, eta_seconds=0.0)
    stores.jobs.create(JOB, job)
    stores.jobs.append_event(stream, {"type": "state", "state": "succeeded"})
    return job


# --- plots ------------------------------------------------------------------------------------


def test_nines_scale() -> None:
    assert plots.nines([0.0, 0.9, 0.99, 0.999]) == pytest.approx([0, 1, 2, 3])
    assert plots.nines([1.0])[0] == plots.NINES_MAX  # p = 1 (saturated float32) is clipped


def test_histogram_counts_every_value_in_shared_bins() -> None:
    hist = plots.confidence_histogram(
        [("fake", [0.5, 0.95, 0.995, 1.0]), ("real", [0.9, 0.9])], bins_per_nine=1
    )
    assert hist.labels == ["fake", "real"]
    assert hist.edges[:3] == pytest.approx([0.0, 0.9, 0.99])
    assert hist.counts[0] == [1, 1, 1, 0, 0, 1]  # 1.0 falls in the last bin
    assert hist.counts[1] == [0, 2, 0, 0, 0, 0]  # 0.9 opens the second bin
    assert hist.shares[1][1] == 1.0
    svg = str(plots.histogram_svg(hist))
    assert svg.count('class="bar s0"') == 4  # one bar per non-empty bin
    assert svg.count('class="bar s1"') == 1


def test_svg_escapes_every_label() -> None:
    hist = plots.confidence_histogram([("<script>x</script>", [0.99])])
    svg = str(plots.histogram_svg(hist))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    panel = str(plots.line_panel_svg("loss: <b>", [(1, 2.0), (2, 0.01)]))
    assert "<b>" not in panel
    assert "log scale" in panel  # two decades of loss
    bars = str(plots.bars_svg([("a&b", 0.5)], title="t"))
    assert "a&amp;b" in bars
    assert "50.0%" in bars


def test_line_panel_thins_long_series_and_survives_no_data() -> None:
    points = [(float(i), 1.0 + i % 3) for i in range(5000)]
    svg = str(plots.line_panel_svg("total", points))
    assert svg.count("L") <= plots.MAX_POINTS + 1
    assert "no data" in str(plots.line_panel_svg("total", [(1.0, math.nan)]))


# --- report figures ---------------------------------------------------------------------------


def test_figures_are_formatted_by_kind() -> None:
    assert report.fmt("confident_share", 0.9987) == "99.9%"
    assert report.fmt("msp_auroc", 0.123456) == "0.1235"
    assert report.fmt("count", 1000) == "1,000"
    assert report.fmt("cost.samples_per_second", 25180.4) == "25,180"
    assert report.fmt("knn_pixel_auroc", None) == "—"
    assert report.fmt("collapsed", False) == "no"
    assert report.fmt_delta("confident_share", -0.25) == "-25.0 pp"
    assert report.fmt_delta("nn_distance", 1.5) == "+1.5"
    assert report.label_of("cost.train_seconds") == "Training time (s)"
    assert report.label_of("brand_new_figure") == "brand new figure"


def test_per_class_table_is_in_class_order_and_drops_empty_columns() -> None:
    names = ["zero", "one", "two"]
    metrics = {
        "per_class": {
            "two": {"count": 2, "confident_share": 0.5, "msp_auroc": None},
            "zero": {"count": 1, "confident_share": 1.0, "msp_auroc": None},
        }
    }
    table = report.per_class_table(metrics, names)
    assert table.columns == ["count", "confident_share"]
    assert table.formatted() == [("0 · zero", ["1", "100.0%"]), ("2 · two", ["2", "50.0%"])]


def test_evasion_rows_show_what_could_not_be_computed_as_a_dash() -> None:
    ood = report.EvasionPublic(
        tpr=0.95, reference_fit=2, reference_eval=2, counterfeits=3,
        detectors=[report.DetectorPublic(name="knn", auroc=math.nan, accepted_share=1 / 3,
                                         threshold=-0.25)],
    )  # fmt: skip
    assert report.evasion_rows(ood) == [
        {"name": "knn", "label": "k-NN feature distance", "accepted": "33.3%", "auroc": "—",
         "threshold": "-0.25"}
    ]  # fmt: skip
    assert "33.3%" in str(report.evasion_bars(ood))


def test_overall_figures_include_cost_and_skip_what_was_not_computed() -> None:
    metrics = {
        "overall": {"count": 10, "msp_auroc": None},
        "cost": {"train_seconds": 2.0},
        "reference_size": 0,
    }
    assert report.overall_figures(metrics) == {"count": 10, "cost.train_seconds": 2.0}
    assert "msp_auroc" in report.overall_figures(metrics, keep_empty=True)
