"""Plain c3 beside detector-aware c3 (issue 15) through the real app: which plain job is the
baseline, that every figure shown is the stored one, the sentence, a baseline that is missing,
older than the held-out table or badly named, and the button that starts one."""

from __future__ import annotations

import html as html_lib
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.contracts.artifacts import ArtifactName, AuditFigures, InversionMetrics
from service.client import calls
from service.records import ClassifierRecord, DatasetRecord, JobRecord, JobState
from service.side_by_side import baseline_request
from service.storage import Stores, keys
from tests.records import classifier_record, dataset_record, job_record, seed_classifier, seed_job
from tests.service.test_dashboard import form_post, page
from tests.service.test_uploads import problem

AIMED = ["mahalanobis", "knn"]
AWARE = {"mahalanobis": 0.88, "knn": 0.91}  # accepted shares on the evaluation half
PLAIN = {"mahalanobis": 0.02, "knn": 0.015}


@pytest.fixture
def reference(stores: Stores, classifier: ClassifierRecord) -> DatasetRecord:
    dataset = dataset_record(classifier.tenant, shape=classifier.input_shape)
    stores.jobs.create(dataset)
    return dataset


@pytest.fixture
def aware(stores: Stores, classifier: ClassifierRecord, reference: DatasetRecord) -> JobRecord:
    return seed_job(stores, classifier, detectors=AIMED, dataset=reference, held_out=AWARE)


def stored(stores: Stores, job: JobRecord) -> tuple[InversionMetrics, AuditFigures]:
    def read(name: ArtifactName) -> bytes:
        return stores.artifacts.get(keys.job_artifact(job.tenant, job.id, name))

    return (
        InversionMetrics.model_validate_json(read(ArtifactName.METRICS_JSON)),
        AuditFigures.model_validate_json(read(ArtifactName.REPORT_JSON)),
    )


def side_by_side(api: TestClient, job: JobRecord, query: str = "") -> dict[str, Any]:
    response = api.get(f"/inversions/{job.id}/report{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["side_by_side"]
    return body


SENTENCE = (
    "Your Mahalanobis detector accepted 2.0% of plain counterfeits and 88.0% of detector-aware "
    "ones, your k-NN feature-distance detector 1.5% and 91.0%: someone who knows these "
    "detectors can get past them."
)


def test_the_newest_plain_c3_job_on_the_same_classifier_and_set_is_the_baseline(
    api: TestClient,
    stores: Stores,
    classifier: ClassifierRecord,
    reference: DatasetRecord,
    aware: JobRecord,
) -> None:
    older = seed_job(stores, classifier, dataset=reference, seed=1, held_out={"knn": 0.5})
    newest = seed_job(stores, classifier, dataset=reference, seed=2, held_out=PLAIN)
    # newer still, but none of them can stand beside it
    seed_job(stores, classifier, method="soft", dataset=reference, seed=3)
    seed_job(stores, classifier, seed=4)  # another reference set
    seed_job(stores, classifier, detectors=["knn"], dataset=reference, seed=5)
    seed_job(stores, classifier, dataset=reference, state=JobState.RUNNING, seed=6)
    seed_job(stores, seed_classifier(stores), dataset=reference, seed=7)  # another classifier
    seed_job(stores, seed_classifier(stores, "acme"), seed=8)  # another tenant

    body = side_by_side(api, aware)
    assert (body["baseline_id"], body["chosen"]) == (newest.id, "newest")
    assert body["start_baseline"] is None
    assert body["sentence"] == SENTENCE
    # every figure is the stored one: each job's held-out table and overall figures
    aware_metrics, aware_figures = stored(stores, aware)
    plain_metrics, plain_figures = stored(stores, newest)
    assert aware_figures.held_out_evasion is not None
    assert plain_figures.held_out_evasion is not None
    assert [d["name"] for d in body["detectors"]] == ["max-softmax", "energy", *AIMED]
    for pair, mine, theirs in zip(
        body["detectors"],
        aware_figures.held_out_evasion.detectors,
        plain_figures.held_out_evasion.detectors,
        strict=True,
    ):
        assert pair["aimed"] == (pair["name"] in AIMED)
        assert pair["detector_aware"] == mine.model_dump(mode="json")
        assert pair["plain"] == theirs.model_dump(mode="json")
    assert body["figures"] == [
        {
            "name": name,
            "plain": getattr(plain_metrics.overall, name),
            "detector_aware": getattr(aware_metrics.overall, name),
        }
        for name in ("confident_share", "msp_auroc")
    ]
    assert body["links"]["compare"] == f"/dashboard/compare?jobs={newest.id}&jobs={aware.id}"

    # the dashboard's job page: the sentence, each side's share with its light, the change
    html = page(api, f"/dashboard/jobs/{aware.id}")
    block = re.search(r'<section class="card side-by-side"(.*?)</section>', html, re.S)
    assert block is not None
    assert f'data-baseline="{newest.id}"' in block[0]
    assert SENTENCE in block[1]
    row = re.search(r'<tr data-detector="mahalanobis" data-aimed="true">(.*?)</tr>', block[1], re.S)
    assert row is not None
    cells = re.findall(
        r'<td[^>]*?(?:data-light="(\w*)")?>(?:<span[^>]*></span>)?([^<]*)</td>', row[1]
    )
    assert cells == [
        ("green", "2.0%"), ("red", "88.0%"), ("", "+86.0 pp"), ("", "0.930"), ("", "0.930"),
    ]  # fmt: skip
    share = re.search(r'<tr data-figure="confident_share">(.*?)</tr>', block[1], re.S)
    assert share is not None
    assert f"<td>{plain_metrics.overall.confident_share:.1%}</td>" in share[1]
    assert 'id="baseline-form"' not in html  # there is a baseline: nothing to start
    assert html.index('id="verdict"') < html.index('id="side-by-side"') < html.index('id="grid"')
    # the HTML report says the same, and stays self-contained
    report = page(api, f"/inversions/{aware.id}/report?format=html")
    assert SENTENCE in report
    assert '<tr data-detector="knn" data-aimed="true">' in report
    assert not re.search(r'href="(?!#)', report)

    # ?baseline= picks another plain job
    chosen = side_by_side(api, aware, f"?baseline={older.id}")
    assert (chosen["baseline_id"], chosen["chosen"]) == (older.id, "requested")
    assert chosen["sentence"].startswith(
        "Your Mahalanobis detector accepted 12.0% of plain counterfeits and 88.0% of "
        "detector-aware ones, your k-NN feature-distance detector 50.0% and 91.0%: "
    )
    assert f'data-baseline="{older.id}"' in page(
        api, f"/dashboard/jobs/{aware.id}?baseline={older.id}"
    )


def test_a_plain_job_has_no_side_by_side_view(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    plain = seed_job(stores, classifier)
    assert api.get(f"/inversions/{plain.id}/report").json()["side_by_side"] is None
    assert 'id="side-by-side"' not in page(api, f"/dashboard/jobs/{plain.id}")


@pytest.mark.parametrize(
    ("which", "words"),
    [
        ("nope", "no job with id 'job_nope'"),
        ("tenant", "no job with id"),
        ("running", "is running: only a succeeded job has figures to compare"),
        ("soft", "is soft, not plain c3"),
        ("aware", "is detector-aware c3, not plain c3"),
        ("classifier", "audits another classifier"),
        ("dataset", "only jobs on one reference set are scored on the same held-out half"),
        ("of a plain job", "is not detector-aware"),
    ],
)
def test_a_baseline_that_cannot_stand_beside_the_job_is_a_clear_422(
    api: TestClient,
    stores: Stores,
    classifier: ClassifierRecord,
    reference: DatasetRecord,
    aware: JobRecord,
    which: str,
    words: str,
) -> None:
    newest = seed_job(stores, classifier, dataset=reference, held_out=PLAIN)
    job, baseline = aware, "job_nope"
    if which == "of a plain job":
        job, baseline = newest, newest.id
    elif which != "nope":
        other = {
            "tenant": lambda: seed_job(stores, seed_classifier(stores, "acme")),
            "running": lambda: seed_job(stores, classifier, dataset=reference, state="running"),
            "soft": lambda: seed_job(stores, classifier, dataset=reference, method="soft"),
            "aware": lambda: seed_job(stores, classifier, dataset=reference, detectors=["knn"]),
            "classifier": lambda: seed_job(stores, seed_classifier(stores), dataset=reference),
            "dataset": lambda: seed_job(stores, classifier),
        }[which]()
        baseline = other.id
    for format in ("json", "html"):
        body = problem(
            api.get(f"/inversions/{job.id}/report?format={format}&baseline={baseline}"), 422
        )
        assert body["field"] == "baseline"
        assert words in body["detail"]
    # the job page says why, and shows what it can
    html = html_lib.unescape(page(api, f"/dashboard/jobs/{job.id}?baseline={baseline}", 422))
    assert re.search(r'data-role="action-error">baseline: [^<]*' + re.escape(words), html)
    if job is aware:
        assert f'data-baseline="{newest.id}"' in html  # the newest one instead


def test_without_a_baseline_the_page_offers_to_start_one(
    api: TestClient, stores: Stores, classifier: ClassifierRecord, aware: JobRecord
) -> None:
    body = side_by_side(api, aware)
    assert body["baseline_id"] is None
    assert body["sentence"].startswith("No plain c3 job on this classifier and reference set")
    start = body["start_baseline"]
    assert start["classifier_id"] == aware.classifier_id
    assert start["dataset_id"] == aware.dataset_id
    assert (start["method"], start["detectors"]) == ("c3", None)
    assert (start["classes"], start["seed"]) == (aware.params.classes, aware.params.seed)
    assert "POST /inversions" in page(api, f"/inversions/{aware.id}/report?format=html")

    html = page(api, f"/dashboard/jobs/{aware.id}")
    assert f'action="/dashboard/jobs/{aware.id}/baseline"' in html
    key = re.search(r'id="baseline-form".*?name="idempotency_key" value="([^"]+)"', html, re.S)
    assert key is not None
    response = form_post(api, f"/dashboard/jobs/{aware.id}/baseline", {"idempotency_key": key[1]})
    assert response.status_code == 303, response.text
    again = form_post(api, f"/dashboard/jobs/{aware.id}/baseline", {"idempotency_key": key[1]})
    assert again.headers["location"] == response.headers["location"]  # a double click: one job
    plain = stores.jobs.get(JobRecord, response.headers["location"].rsplit("/", 1)[1])
    assert plain is not None
    assert (plain.method, plain.params.detectors, plain.state) == ("c3", None, "queued")
    assert (plain.classifier_id, plain.dataset_id) == (aware.classifier_id, aware.dataset_id)
    assert (plain.params.classes, plain.params.seed) == (aware.params.classes, aware.params.seed)
    refused = form_post(api, f"/dashboard/jobs/{plain.id}/baseline", {})
    assert refused.status_code == 409
    assert "is not detector-aware" in refused.text


def test_a_plain_job_older_than_the_held_out_table_is_named_but_not_compared(
    api: TestClient,
    stores: Stores,
    classifier: ClassifierRecord,
    reference: DatasetRecord,
    aware: JobRecord,
) -> None:
    old = seed_job(stores, classifier, dataset=reference, held_out_table=False)
    body = side_by_side(api, aware)
    assert body["baseline_id"] == old.id
    assert body["sentence"].startswith(f"Plain c3 job {old.id} finished before plain jobs")
    assert body["start_baseline"] is not None
    assert all(pair["plain"] is None for pair in body["detectors"])
    assert all(figure["plain"] is not None for figure in body["figures"])
    assert 'id="baseline-form"' in page(api, f"/dashboard/jobs/{aware.id}")


def test_a_detector_aware_job_older_than_the_field_compares_on_its_one_table(
    api: TestClient, stores: Stores, classifier: ClassifierRecord, reference: DatasetRecord
) -> None:
    seed_job(stores, classifier, dataset=reference, held_out=PLAIN)
    aware = seed_job(
        stores, classifier, detectors=AIMED, dataset=reference, held_out=AWARE,
        held_out_table=False,
    )  # fmt: skip
    assert side_by_side(api, aware)["sentence"] == SENTENCE


def test_the_baseline_request_is_the_jobs_settings_without_the_detectors() -> None:
    classifier = classifier_record()
    job = job_record(classifier, dataset_id="ds_x", classes=[1, 4], per_class=7, seed=9)
    job.params = job.params.model_validate(
        job.params.model_dump()
        | {
            "detectors": AIMED,
            "prior_source": "classifier",
            "recipe": "paper",
            "loss_weights": {"cosine": 0.2, "mahalanobis": 0.03, "batch_stats": 0.1},
        }
    )
    request = baseline_request(job)
    assert json.loads(request.model_dump_json(exclude_none=True)) == {
        "classifier_id": classifier.id, "dataset_id": "ds_x", "method": "c3", "classes": [1, 4],
        "samples_per_class": 7, "steps": 300, "seed": 9, "recipe": "paper",
        "loss_weights": {"cosine": 0.2}, "sample_dropout": False,
    }  # fmt: skip


def test_the_client_asks_for_a_baseline_and_reads_the_view(
    api: TestClient,
    stores: Stores,
    classifier: ClassifierRecord,
    reference: DatasetRecord,
    aware: JobRecord,
) -> None:
    older = seed_job(stores, classifier, dataset=reference, held_out=PLAIN)
    seed_job(stores, classifier, dataset=reference, seed=1)
    call = calls.report(aware.id, baseline=older.id)  # what Client.report sends and reads
    answer = call.read(api.request(call.method, call.path, params=call.params))
    assert answer.side_by_side is not None
    assert (answer.side_by_side.baseline_id, answer.side_by_side.sentence) == (older.id, SENTENCE)
