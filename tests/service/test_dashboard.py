"""The dashboard and the audit report through the real app (ASGI, lifespan), on jobs seeded as
the worker leaves them: access control, forms, pages, plots, compare, report, errors."""

from __future__ import annotations

import html as html_lib
import io
import json
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from PIL import Image

from models.contracts.artifacts import ArtifactName
from models.contracts.inversion import InversionParams
from service import effective, glossary
from service.app import create_app
from service.records import ClassifierRecord, JobRecord, UploadState
from service.settings import ServiceSettings
from service.storage import Stores, keys, open_stores
from tests.records import dataset_record, seed_classifier, seed_job
from tests.service.conftest import auth, make_key
from tests.service.test_uploads import problem

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def done(stores: Stores, classifier: ClassifierRecord) -> JobRecord:
    return seed_job(stores, classifier)


def page(api: TestClient, url: str, status: int = 200, **kwargs: Any) -> str:
    response = api.get(url, headers=HTML, **kwargs)
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    return response.text


SAME_ORIGIN = {"Origin": "http://testserver"}
"""What a browser sends with the dashboard's own forms."""


def form_post(api: TestClient, url: str, data: dict[str, str], **kwargs: Any) -> Any:
    headers = {**HTML, **SAME_ORIGIN, **kwargs.pop("headers", {})}
    return api.post(url, data=data, headers=headers, follow_redirects=False, **kwargs)


# --- access -------------------------------------------------------------------------------------


def test_keyless_loopback_needs_no_login(api: TestClient) -> None:
    assert api.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/jobs"
    assert "tenant <b>local</b>" in page(api, "/dashboard/jobs")
    assert "no key is needed" in page(api, "/dashboard/login")


def test_a_remote_client_must_sign_in(c3_env: dict[str, str]) -> None:
    with TestClient(create_app(ServiceSettings()), client=("10.1.2.3", 5000)) as remote:
        response = remote.get("/dashboard/jobs?state=running", headers=HTML, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == (
            "/dashboard/login?next=/dashboard/jobs%3Fstate%3Drunning"
        )
        assert "no key is needed" not in page(remote, "/dashboard/login")
        problem(remote.get("/dashboard/jobs", headers={"Accept": "application/json"}), 401)


def test_login_sets_a_strict_httponly_cookie_the_api_accepts(api: TestClient) -> None:
    key = make_key("acme")  # keys exist now: loopback needs one too
    assert api.get("/dashboard/jobs", follow_redirects=False).status_code == 303

    wrong = form_post(api, "/dashboard/login", {"key": "c3k_nope", "next": "/dashboard/jobs"})
    assert wrong.status_code == 401
    assert "Unknown API key" in wrong.text
    assert "set-cookie" not in wrong.headers

    signed_in = form_post(api, "/dashboard/login", {"key": key, "next": "/dashboard/classifiers"})
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/dashboard/classifiers"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"c3_key={key};")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/" in cookie
    assert "tenant <b>acme</b>" in page(api, "/dashboard/classifiers")
    assert api.get("/inversions").status_code == 200  # the API takes the cookie as well

    out = form_post(api, "/dashboard/logout", {})
    assert out.status_code == 303
    assert 'c3_key=""' in out.headers["set-cookie"]
    api.cookies.clear()
    assert api.get("/dashboard/jobs", follow_redirects=False).status_code == 303


def test_login_never_redirects_elsewhere(api: TestClient) -> None:
    key = make_key("acme")
    for target in ("https://evil.example/x", "//evil.example", "/inversions", ""):
        response = form_post(api, "/dashboard/login", {"key": key, "next": target})
        assert response.headers["location"] == "/dashboard", target


def test_an_unknown_key_in_the_cookie_is_forgotten(api: TestClient) -> None:
    make_key("acme")
    api.cookies.set("c3_key", "c3k_revoked")
    response = api.get("/dashboard/jobs", headers=HTML, follow_redirects=False)
    assert response.status_code == 303
    assert 'c3_key=""' in response.headers["set-cookie"]


def test_forms_from_another_origin_are_refused(
    api: TestClient, classifier: ClassifierRecord, stores: Stores
) -> None:
    data = {"classifier_id": classifier.id, "samples_per_class": "2"}
    for headers, words in [
        ({"Origin": "http://evil.example"}, "posted from another origin"),
        ({"Sec-Fetch-Site": "cross-site"}, "posted from another site"),
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://testserver"}, "another site"),
        ({"Origin": "null"}, "posted from another origin (null)"),  # a sandboxed frame, a file
        ({}, "says neither where it was posted from"),  # no browser sends a form like this
        ({"Origin": "https://c3.example", "X-Forwarded-Host": "c3.example"}, "another origin"),
    ]:
        response = api.post("/dashboard/jobs", data=data, headers={**HTML, **headers})
        assert response.status_code == 403, headers
        assert words in response.text, headers
    assert stores.jobs.list(JobRecord).count == 0
    for n, headers in enumerate([
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "http://testserver"},  # a browser without fetch metadata
        {"Sec-Fetch-Site": "same-origin"},  # a browser that sends no Origin
    ]):  # fmt: skip
        same = api.post(
            "/dashboard/jobs",
            data={**data, "idempotency_key": f"k{n}"},
            headers=headers,
            follow_redirects=False,
        )
        assert same.status_code == 303, headers


def test_a_trusted_proxy_may_rewrite_the_host(
    c3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("C3_TRUST_FORWARDED_HOST", "true")
    with TestClient(create_app(ServiceSettings()), client=("127.0.0.1", 50000)) as behind_proxy:
        classifier = seed_classifier_via_app(behind_proxy)
        proxied = behind_proxy.post(
            "/dashboard/jobs",
            data={"classifier_id": classifier, "samples_per_class": "2"},
            headers={"Origin": "https://c3.example", "X-Forwarded-Host": "c3.example"},
            follow_redirects=False,
        )
    assert proxied.status_code == 303


def seed_classifier_via_app(client: TestClient) -> str:
    """A ready classifier in the app's own data folder."""
    opened = open_stores(client.app.state.settings)  # type: ignore[attr-defined]
    try:
        return seed_classifier(opened).id
    finally:
        opened.close()


def test_another_tenants_jobs_do_not_exist(
    api: TestClient, stores: Stores, done: JobRecord
) -> None:
    other = seed_job(stores, seed_classifier(stores, "other"))
    id = other.id
    for url in (f"/dashboard/jobs/{id}", f"/dashboard/jobs/{id}/classes/0",
                f"/dashboard/compare?jobs={done.id}&jobs={id}"):  # fmt: skip
        assert "no job with id" in page(api, url, 404)
    assert api.get(f"/dashboard/jobs/{id}/classes/0/strip.png").status_code == 404
    problem(api.get(f"/inversions/{id}/report"), 404)
    problem(api.get(f"/inversions/{id}/report?format=html"), 404)
    assert id not in page(api, "/dashboard/jobs")
    assert id not in page(api, "/dashboard/compare")


# --- classifiers --------------------------------------------------------------------------------

UPLOAD_FORM = {
    "name": "digits v2", "format": "safetensors", "architecture": "paper-cnn",
    "architecture_config": "", "input_shape": "1,8,8", "class_names": "a,b,c",
    "mean": "", "std": "", "tags": "", "description": "",
}  # fmt: skip


def test_classifier_list_and_upload_form(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    seed_job(stores, classifier, state="running")
    html = page(api, "/dashboard/classifiers")
    row = re.search(rf'<tr data-classifier="{classifier.id}">(.*?)</tr>', html, re.S)
    assert row is not None
    assert "digits" in row[1]
    assert "ready" in row[1]
    assert "1×8×8" in row[1]
    assert ">10<" in row[1]  # classes
    assert f'classifier_id={classifier.id}">1</a>' in row[1]  # one job

    response = api.post(
        "/dashboard/classifiers",
        data=UPLOAD_FORM,  # blank optional fields take their defaults
        files={"file": ("m.safetensors", b"weights", "application/octet-stream")},
        headers={**HTML, **SAME_ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    id = response.headers["location"].split("uploaded=")[1]
    html = page(api, response.headers["location"])
    assert f"Uploaded <code>{id}</code>" in html
    assert "data-refresh" in html  # reloads until the validation is done
    assert "validating" in html
    assert api.get(f"/classifiers/{id}").json()["mean"] == [0.0]


def test_reference_set_upload_form(api: TestClient, stores: Stores) -> None:
    response = api.post(
        "/dashboard/datasets",
        data={"name": "held-out", "tags": "", "description": ""},
        files={"file": ("ref.npz", b"PK not really", "application/octet-stream")},
        headers={**HTML, **SAME_ORIGIN},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    id = response.headers["location"].split("uploaded=")[1]
    html = page(api, response.headers["location"])
    row = re.search(rf'<tr data-dataset="{id}">(.*?)</tr>', html, re.S)
    assert row is not None
    assert "held-out" in row[1]
    assert "validating" in row[1]
    nameless = api.post(
        "/dashboard/datasets",
        data={"name": "x"},
        files={"file": ("ref.bin", b"x", "application/octet-stream")},
        headers={**HTML, **SAME_ORIGIN},
    )
    assert nameless.status_code == 422
    assert "Upload refused: say `npz` or `png-zip`" in nameless.text


def test_a_bad_upload_shows_why(api: TestClient, stores: Stores) -> None:
    response = api.post(
        "/dashboard/classifiers",
        data={**UPLOAD_FORM, "input_shape": "1,8"},
        files={"file": ("m.safetensors", b"weights", "application/octet-stream")},
        headers={**HTML, **SAME_ORIGIN},
    )
    assert response.status_code == 422
    assert "Upload refused: input_shape" in response.text
    assert api.get("/classifiers").json()["count"] == 0


# --- jobs ---------------------------------------------------------------------------------------


def start_form(classifier_id: str, **fields: str) -> dict[str, str]:
    return {
        "classifier_id": classifier_id, "method": "c3", "classes": "", "samples_per_class": "100",
        "steps": "", "batch_size": "", "seed": "", "dataset_id": "", "w_kl": "", "w_ce": "",
        "w_cosine": "", "w_orthogonality": "", "w_tv": "", "idempotency_key": "k1", **fields,
    }  # fmt: skip


def test_start_form_starts_one_job(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    form = start_form(
        classifier.id, classes="0, 3", samples_per_class="5", steps="30", w_kl="1.5",
        sample_dropout="on", method="soft",
    )  # fmt: skip
    response = form_post(api, "/dashboard/jobs", form)
    assert response.status_code == 303, response.text
    id = response.headers["location"].rsplit("/", 1)[1]
    job = api.get(f"/inversions/{id}").json()
    assert job["method"] == "soft"
    assert job["params"]["classes"] == [0, 3]
    assert job["params"]["samples_per_class"] == 5
    assert job["params"]["steps"] == 30
    assert job["params"]["batch_size"] is None
    assert job["params"]["loss_weights"] == {"kl": 1.5}
    assert job["params"]["sample_dropout"] is True
    again = form_post(api, "/dashboard/jobs", form)  # a double submit: same key, same job
    assert again.headers["location"] == response.headers["location"]
    assert stores.jobs.list(JobRecord).count == 1
    html = page(api, response.headers["location"])
    assert 'data-live="1"' in html
    assert "queued" in html


def test_start_form_starts_a_detector_aware_job(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    assert 'name="detect_mahalanobis"' in page(api, "/dashboard/jobs")
    form = start_form(classifier.id, samples_per_class="2", detect_mahalanobis="on")
    response = form_post(api, "/dashboard/jobs", form)
    assert response.status_code == 303, response.text
    job = api.get(response.headers["location"].replace("/dashboard/jobs", "/inversions")).json()
    assert job["params"]["detectors"] == ["mahalanobis"]
    assert job["params"]["prior_source"] is None
    form = start_form(classifier.id, samples_per_class="2", detect_knn="on", data_free="on",
                      idempotency_key="k2")  # fmt: skip
    response = form_post(api, "/dashboard/jobs", form)
    assert response.status_code == 303, response.text
    job = api.get(response.headers["location"].replace("/dashboard/jobs", "/inversions")).json()
    assert job["params"]["prior_source"] == "classifier"


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"classes": "0, x"}, "classes: class indices separated by commas"),
        ({"classes": "99"}, "class 99 is out of range"),
        ({"samples_per_class": "0"}, "samples_per_class"),
        ({"w_cosine": "-1"}, "loss_weights.cosine"),
        ({"method": "gan"}, "method"),
        ({"method": "soft", "detect_knn": "on"}, "only c3 is detector-aware"),
        ({"data_free": "on"}, "only detector-aware c3 builds a prior"),
    ],
)
def test_a_bad_start_form_names_the_field(
    api: TestClient,
    stores: Stores,
    classifier: ClassifierRecord,
    fields: dict[str, str],
    words: str,
) -> None:
    response = form_post(api, "/dashboard/jobs", start_form(classifier.id, **fields))
    assert response.status_code == 422
    assert "Not started:" in response.text
    assert words in response.text
    assert stores.jobs.list(JobRecord).count == 0
    for key, value in fields.items():  # the form keeps what was typed and ticked
        if key.startswith("detect_") or key == "data_free":
            assert f'name="{key}" checked' in response.text
        else:
            assert f'value="{value}"' in response.text or value == "gan"


def test_jobs_list_shows_state_method_progress_and_confident_share(
    api: TestClient, stores: Stores, classifier: ClassifierRecord, done: JobRecord
) -> None:
    running = seed_job(stores, classifier, method="pixel", state="running")
    html = page(api, "/dashboard/jobs")
    row = re.search(rf'<tr data-job="{running.id}"(.*?)</tr>', html, re.S)
    assert row is not None
    assert 'data-state="running" data-method="pixel" data-live="1"' in row[1]
    assert 'data-percent="44"' in row[1]  # training 150/300 of the training phase
    assert "training 150/300" in row[1]
    assert "60.0%" in row[1]  # the running confident share
    row = re.search(rf'<tr data-job="{done.id}"(.*?)</tr>', html, re.S)
    assert row is not None
    assert "data-live" not in row[1]
    assert 'data-percent="100"' in row[1]
    assert done.metrics is not None
    share = done.metrics.confident_share
    assert f"{share:.1%}" in row[1]
    assert running.id not in page(api, "/dashboard/jobs?state=succeeded")
    assert "No job yet matches" in page(api, "/dashboard/jobs?classifier_id=clf_none")


def test_cancel_from_the_job_page(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    running = seed_job(stores, classifier, state="running")
    response = form_post(api, f"/dashboard/jobs/{running.id}/cancel", {})
    assert response.status_code == 303
    cancelled = stores.jobs.get(JobRecord, running.id)
    assert cancelled is not None
    assert cancelled.cancel_requested is True


def test_start_form_tells_the_real_defaults_and_picks_the_newest_reference_set(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    older, newer, colour = dataset_record(), dataset_record(), dataset_record(shape=(3, 8, 8))
    older.created_at, newer.created_at, colour.created_at = 1.0, 2.0, 3.0
    for record in (newer, older, colour):  # colour: the newest, not the classifier's images
        stores.jobs.create(record)
    stores.jobs.create(dataset_record(state=UploadState.VALIDATING))  # not ready: not offered
    html = page(api, "/dashboard/jobs")
    form = re.search(r'<form method="post" action="/dashboard/jobs"(.*?)</form>', html, re.S)
    assert form is not None
    defaults = json.loads(html_lib.unescape(re.search(r'data-defaults="([^"]+)"', form[1])[1]))
    assert defaults == effective.defaults_table()
    blank = InversionParams().config("c3")  # what a blank form runs
    assert f'name="steps" type="number" min="1" value="" placeholder="{blank.steps}"' in form[1]
    assert f"(blank: up to {blank.steps})" in form[1]
    assert f'placeholder="{blank.batch_size}"' in form[1]
    assert 'name="w_spread" type="number" step="any" min="0" value="" placeholder="1"' in form[1]
    options = re.findall(r'<option value="(ds_\w+)" ?(selected)?', form[1])
    assert options == [(colour.id, ""), (newer.id, "selected"), (older.id, "")]
    # a form sent back keeps the choice, "none" included, and the chosen method's defaults
    again = form_post(api, "/dashboard/jobs", start_form(classifier.id, method="pixel",
                                                         classes="99", dataset_id=""))  # fmt: skip
    assert '<option value="" selected>none</option>' in again.text
    assert 'name="steps" type="number" min="1" value="" placeholder="200"' in again.text


def test_running_job_shows_its_eta(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    running = seed_job(stores, classifier, state="running")  # 150 of 300 steps at 15 steps/s
    html = page(api, f"/dashboard/jobs/{running.id}")
    assert re.search(r'data-role="eta"[^>]*>about 10 s left</span>', html)
    assert "about 10 s left" in page(api, "/dashboard/jobs")


def test_draw_more_samples_from_the_job_page(
    api: TestClient, stores: Stores, done: JobRecord
) -> None:
    html = page(api, f"/dashboard/jobs/{done.id}")
    assert f'action="/dashboard/jobs/{done.id}/samples"' in html
    assert f'action="/dashboard/jobs/{done.id}/delete"' in html
    assert "/resume" not in html
    response = form_post(api, f"/dashboard/jobs/{done.id}/samples",
                         {"samples_per_class": "3", "seed": "7"})  # fmt: skip
    assert response.status_code == 303
    follow_up = stores.jobs.get(JobRecord, response.headers["location"].rsplit("/", 1)[1])
    assert follow_up is not None
    assert (follow_up.kind, follow_up.parent_id) == ("sampling", done.id)
    assert (follow_up.params.samples_per_class, follow_up.params.seed) == (3, 7)
    too_many = form_post(api, f"/dashboard/jobs/{done.id}/samples",
                         {"samples_per_class": "0"})  # fmt: skip
    assert too_many.status_code == 422
    assert 'data-role="action-error"' in too_many.text
    assert 'name="samples_per_class" type="number" min="1" value="0"' in too_many.text
    refused = api.post(f"/dashboard/jobs/{done.id}/samples", data={"samples_per_class": "3"},
                       headers={**HTML, "Origin": "http://evil.example"})  # fmt: skip
    assert refused.status_code == 403
    assert stores.jobs.list(JobRecord).count == 2


def test_delete_a_job_from_its_page(
    api: TestClient, stores: Stores, classifier: ClassifierRecord, done: JobRecord
) -> None:
    running = seed_job(stores, classifier, state="running")
    assert "Delete job" not in page(api, f"/dashboard/jobs/{running.id}")
    assert "cancel it first" in form_post(api, f"/dashboard/jobs/{running.id}/delete", {}).text
    assert api.post(f"/dashboard/jobs/{done.id}/delete", headers=HTML).status_code == 403
    response = form_post(api, f"/dashboard/jobs/{done.id}/delete", {})
    assert response.status_code == 303
    assert response.headers["location"] == f"/dashboard/jobs?deleted={done.id}"
    assert stores.jobs.get(JobRecord, done.id) is None
    assert api.get(f"/inversions/{done.id}/metrics.json").status_code == 404
    assert f"Job <code>{done.id}</code> deleted." in page(api, response.headers["location"])


def test_cancel_then_resume_from_the_job_page(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    queued = seed_job(stores, classifier, state="queued")
    assert form_post(api, f"/dashboard/jobs/{queued.id}/cancel", {}).status_code == 303
    html = page(api, f"/dashboard/jobs/{queued.id}")
    assert 'data-state="cancelled"' in html
    assert f'action="/dashboard/jobs/{queued.id}/resume"' in html
    assert form_post(api, f"/dashboard/jobs/{queued.id}/resume", {}).status_code == 303
    resumed = stores.jobs.get(JobRecord, queued.id)
    assert resumed is not None
    assert resumed.state == "queued"
    assert resumed.task.resumes == 1
    assert "can be resumed" in form_post(api, f"/dashboard/jobs/{queued.id}/resume", {}).text


# --- the job page -------------------------------------------------------------------------------


def test_a_detector_aware_job_says_what_it_means_for_its_detectors(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    job = seed_job(stores, classifier, detectors=["mahalanobis", "knn"])
    for url in (f"/dashboard/jobs/{job.id}", f"/inversions/{job.id}/report?format=html"):
        assert "were made to pass the Mahalanobis and k-NN" in page(api, url), url
    plain = seed_job(stores, classifier, seed=1)
    assert "were made to pass" not in page(api, f"/dashboard/jobs/{plain.id}")


def assert_verdict_block(html: str, job: JobRecord) -> None:
    """The page opens with the verdict: the plain sentence and a light per detector first, what
    to do, then the audit's own targets (missed, each missed target marked, what to try)."""
    assert job.verdict is not None
    assert not job.verdict.met  # the seeded figures miss the targets
    block = re.search(r'<section class="card verdict"(.*?)</section>', html, re.S)
    assert block is not None
    share = job.metrics.confident_share if job.metrics else None
    sentence = re.search(r'data-role="verdict-sentence">(.*?)</p>', block[1], re.S)
    assert sentence is not None
    assert sentence[1].startswith(f"{share:.1%} of 100 counterfeits were classified with p ≥ 0.99")
    # the seeded detectors accept 97%, 88%, 12% and 1.5% of the counterfeits
    assert (
        "Max-softmax and energy detectors would accept most of them (97.0%, 88.0%)" in sentence[1]
    )
    assert "a k-NN feature-distance detector would catch 98.5%" in sentence[1]
    lights = re.findall(r'data-detector="([\w-]+)" data-light="(\w+)"', block[1])
    assert lights == [("max-softmax", "red"), ("energy", "red"), ("mahalanobis", "amber"),
                      ("knn", "green")]  # fmt: skip
    advice = re.search(r'data-role="advice">(.*?)</p>', block[1], re.S)
    assert advice is not None
    assert "Retrain with a reject class" in advice[1]
    assert "Deploy the k-NN feature-distance detector" in advice[1]
    assert (
        block[1].index("verdict-sentence")
        < block[1].index("data-light")
        < block[1].index('data-role="targets"')
    )
    assert "<h3>Audit targets missed</h3>" in block[1]
    assert block[1].count('<tr class="miss">') == len(job.verdict.missed)
    assert "Try: " in block[1]
    assert "{confidence}" not in block[1]
    assert html.index('id="verdict"') < html.index('id="per-class"')


def test_job_page_shows_grid_histogram_tables_curves_and_downloads(
    api: TestClient, done: JobRecord
) -> None:
    id = done.id
    html = page(api, f"/dashboard/jobs/{id}")
    for cls in range(10):
        assert f'src="/dashboard/jobs/{id}/classes/{cls}/strip.png"' in html
        assert f'href="/dashboard/jobs/{id}/classes/{cls}"' in html
    histogram = re.search(r'<section class="card" id="histogram">(.*?)</section>', html, re.S)
    assert histogram is not None
    assert "<svg" in histogram[1]
    assert ">counterfeits</text>" in histogram[1]
    assert ">real reference</text>" in histogram[1]
    evasion = re.search(r'<tr data-detector="mahalanobis">(.*?)</tr>', html, re.S)
    assert evasion is not None
    assert "<td>12.0%</td><td>0.930</td>" in evasion[1]
    per_class = re.search(r'<section class="card" id="per-class">(.*?)</section>', html, re.S)
    assert per_class is not None
    assert per_class[1].split("<tbody>")[1].count("<tr><th>") == 10
    assert "3 · digit 3" in per_class[1]
    assert "Confident (p_y ≥ 0.99)" in per_class[1]
    assert "loss: total" in html
    assert "loss: kl" in html
    assert "confident share (p ≥ 0.99)" in html
    assert "Training time (s)" in html
    assert_verdict_block(html, done)
    downloads = re.search(r'<section class="downloads card">(.*?)</section>', html, re.S)
    assert downloads is not None
    links = re.findall(r'href="([^"]+)"', downloads[1])
    assert len(links) >= 8
    for link in links:
        response = api.get(link.replace("&amp;", "&"), headers=HTML)
        assert response.status_code == 200, link


def test_job_page_of_a_running_job(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    running = seed_job(stores, classifier, state="running")
    html = page(api, f"/dashboard/jobs/{running.id}")
    assert 'data-live="1" data-reload-on-finish="1"' in html
    assert "loss: kl" in html  # the curves so far
    assert "strip.png" not in html
    assert "Cancel job" in html


def test_job_without_reference_or_report_json(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    job = seed_job(stores, classifier, reference=False, method="soft")
    stores.artifacts.delete_prefix(keys.job_artifact(job.tenant, job.id, ArtifactName.REPORT_JSON))
    html = page(api, f"/dashboard/jobs/{job.id}")
    assert "No reference set was given" in html
    assert "Needs a reference dataset" in html
    body = api.get(f"/inversions/{job.id}/report").json()
    assert body["ood"] is None
    assert body["confidence_histogram"]["reference"] is None
    assert sum(body["confidence_histogram"]["counterfeits"]) == 100  # from samples.json
    assert "no detector could be fit" in page(api, f"/inversions/{job.id}/report?format=html")


def test_class_page_pages_through_samples_with_confidences(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    job = seed_job(stores, classifier, classes=[2, 5], per_class=70)
    id = job.id
    first = page(api, f"/dashboard/jobs/{id}/classes/5")
    assert "70 samples" in first
    indices = [int(i) for i in re.findall(r'<li data-index="(\d+)"', first)]
    assert indices == list(range(70, 130))  # class 5's samples come after class 2's
    assert 'rel="next"' in first
    second = page(api, f"/dashboard/jobs/{id}/classes/5?page=2")
    assert [int(i) for i in re.findall(r'<li data-index="(\d+)"', second)] == list(range(130, 140))
    assert page(api, f"/dashboard/jobs/{id}/classes/5?page=99").count("<li data-index") == 10
    records = api.get(f"/inversions/{id}/samples", params={"class": 5, "limit": 100}).json()
    by_index = {r["index"]: r["confidence"] for r in records["data"]}
    shown = re.findall(
        r'<li data-index="(\d+)".*?<span class="conf" data-role="confidence">([\d.]+)</span>',
        first,
        re.S,
    )
    assert len(shown) == 60
    for index, text in shown:
        assert float(text) == pytest.approx(by_index[int(index)], abs=1e-4)
    least = page(api, f"/dashboard/jobs/{id}/classes/5?sort=confidence")
    lowest = int(re.findall(r'<li data-index="(\d+)"', least)[0])
    assert by_index[lowest] == min(by_index.values())
    assert "no samples of class 3" in page(api, f"/dashboard/jobs/{id}/classes/3", 404)
    assert "sort" in page(api, f"/dashboard/jobs/{id}/classes/5?sort=evil", 422)
    assert "page" in page(api, f"/dashboard/jobs/{id}/classes/5?page=abc", 422)


def test_class_strip_is_an_immutable_png(api: TestClient, done: JobRecord) -> None:
    url = f"/dashboard/jobs/{done.id}/classes/4/strip.png"
    response = api.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert "immutable" in response.headers["cache-control"]
    strip = Image.open(io.BytesIO(response.content))
    assert strip.size == (10 * (8 + 2) - 2, 8)  # 10 samples of 8×8, 2 px apart
    again = api.get(url, headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304
    assert api.get(f"/dashboard/jobs/{done.id}/classes/42/strip.png").status_code == 404


def test_user_text_is_escaped(api: TestClient, stores: Stores) -> None:
    evil = seed_classifier(
        stores,
        name="<script>alert(1)</script>",
        class_names=['<img src=x onerror="alert(2)">', *(f"digit {i}" for i in range(1, 10))],
    )
    job = seed_job(stores, evil, classes=[0, 1], per_class=2)
    for url in ("/dashboard/classifiers", f"/dashboard/jobs/{job.id}",
                f"/dashboard/jobs/{job.id}/classes/0",
                f"/inversions/{job.id}/report?format=html"):  # fmt: skip
        html = page(api, url)
        assert "<script>alert" not in html
        assert "<img src=x" not in html


# --- compare ------------------------------------------------------------------------------------


def test_compare_view_shows_figures_side_by_side_with_deltas(
    api: TestClient, stores: Stores, classifier: ClassifierRecord, done: JobRecord
) -> None:
    soft = seed_job(stores, classifier, method="soft", seed=1)
    pixel = seed_job(stores, classifier, method="pixel", seed=2)
    running = seed_job(stores, classifier, state="running")
    ids = [done.id, soft.id, pixel.id, running.id]
    html = page(api, "/dashboard/compare?" + "&".join(f"jobs={i}" for i in ids))
    table = re.search(r'id="compare-table">(.*?)</table>', html, re.S)
    assert table is not None
    row = re.search(
        r'<tr><th title="([^"]+)">Confident \(p_y ≥ 0.99\)</th>(.*?)</tr>', table[1], re.S
    )
    assert row is not None
    assert html_lib.unescape(row[1]) == glossary.meaning("confident_share")  # explained in place
    cells = re.findall(r"<td>(.*?)</td>", row[2])
    assert len(cells) == 3
    shares = [j.metrics.confident_share for j in (done, soft, pixel) if j.metrics is not None]
    assert cells[0] == f"{shares[0]:.1%}"
    for cell, share in zip(cells[1:], shares[1:], strict=True):
        delta = f"{(share - shares[0]) * 100:+.1f} pp"
        assert cell == f'{share:.1%} <span class="delta" data-role="delta">{delta}</span>'
    assert html.count("<svg") >= 3  # a histogram per job
    assert f"Job <code>{running.id}</code> is running" in html
    assert f'src="/dashboard/jobs/{pixel.id}/classes/0/strip.png"' in html
    assert "Pick two to four" in page(api, "/dashboard/compare")
    too_many = "&".join(f"jobs={i}" for i in [*ids, "job_x"])
    assert "jobs" in page(api, f"/dashboard/compare?{too_many}", 422)
    assert "no job with id" in page(api, "/dashboard/compare?jobs=job_nope&jobs=job_x", 404)


# --- the report ---------------------------------------------------------------------------------


def test_report_json(api: TestClient, stores: Stores, done: JobRecord) -> None:
    response = api.get(f"/inversions/{done.id}/report")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["vary"] == "Accept"
    body = response.json()
    assert body["job"]["id"] == done.id
    assert body["classifier"]["name"] == "digits"
    assert body["classifier"]["param_count"] == 12345
    assert body["dataset"]["name"] == "held-out digits"
    assert body["settings"]["method"] == "c3"
    assert body["settings"]["samples_per_class"] == 10
    effective = body["effective"]  # defaults filled in where the request left them open
    assert effective == done.params.config("c3").model_dump(mode="json")
    assert effective["recipe"] == "adaptive"
    assert effective["batch_size"] == 64
    assert effective["loss_weights"]["kl"] > 0
    assert done.metrics is not None
    assert body["metrics"]["overall"] == done.metrics.model_dump(mode="json")
    figures = stores.artifacts.get(
        keys.job_artifact(done.tenant, done.id, ArtifactName.REPORT_JSON)
    )
    assert body["ood"] == json.loads(figures)["ood"]
    hist = body["confidence_histogram"]
    assert hist["scale"] == "nines"
    assert sum(hist["counterfeits"]) == 100
    assert sum(hist["reference"]) == 200
    assert len(hist["edges"]) == len(hist["counterfeits"]) + 1
    assert body["links"]["html"] == f"/inversions/{done.id}/report?format=html"
    assert done.verdict is not None
    assert body["verdict"] == json.loads(figures)["verdict"] == done.verdict.model_dump(mode="json")
    assert body["job"]["verdict"]["summary"] == done.verdict.summary
    json_anyway = api.get(f"/inversions/{done.id}/report", headers={"Accept": "*/*"})
    assert json_anyway.headers["content-type"] == "application/json"


def test_report_needs_a_succeeded_job(
    api: TestClient, stores: Stores, classifier: ClassifierRecord
) -> None:
    running = seed_job(stores, classifier, state="running")
    body = problem(api.get(f"/inversions/{running.id}/report"), 409)
    assert "report exists once it has succeeded" in body["detail"]
    problem(api.get(f"/inversions/{running.id}/report?format=html"), 409)
    problem(api.get("/inversions/job_nope/report"), 404)
    assert problem(api.get(f"/inversions/{running.id}/report?format=pdf"), 422)["field"] == (
        "format"
    )


def test_report_html_is_self_contained(api: TestClient, done: JobRecord) -> None:
    by_accept = api.get(f"/inversions/{done.id}/report", headers=HTML)
    by_query = api.get(f"/inversions/{done.id}/report?format=html")
    for response in (by_accept, by_query):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["content-security-policy"]
    html = by_query.text
    sources = re.findall(r'\ssrc="([^"]*)"', html)
    assert len(sources) == 10 * 8  # eight inlined samples of each class
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in html
    assert "<script" not in html
    assert "url(" not in html
    assert not re.search(r'href="(?!#)', html)  # nothing to follow, nothing to fetch
    evasion = re.search(r'<tr data-detector="knn">(.*?)</tr>', html, re.S)
    assert evasion is not None
    knn = escape(glossary.meaning("detector.knn"))
    assert f'<th title="{knn}">k-NN feature distance</th><td>1.5%</td><td>0.990</td>' in evasion[1]
    assert "Each detector's threshold keeps 95% of real reference images" in html
    for words in ("digits", "paper-cnn", "ab" * 32, "samples per class", "Within-class L2",
                  "3 · digit 3", "loss: kl", ">counterfeits</text>"):  # fmt: skip
        assert words in html, words
    assert_verdict_block(html, done)
    # the settings as they ran, not "default"
    settings = dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)", html.split('id="settings"')[1]))
    assert settings["steps"] == "300 (the whole budget)"  # adaptive, the budget spent
    assert settings["batch size"] == "64 (default)"
    assert settings["recipe"] == "adaptive (default)"
    assert settings["loss weights"] == "kl 1, cosine 0.1, orthogonality 0.1, spread 1 (default)"
    assert "default</td>" not in html.replace("(default)</td>", "")
    # every figure explained in print, not only on hover
    for key in ("confident_share", "knn_feature_auroc", "feature_cosine", "cost.steps"):
        assert f'<dd class="means">{escape(glossary.meaning(key))}</dd>' in html, key
    legend = re.search(r'<details class="legend" open>(.*?)</details>', html, re.S)
    assert legend is not None
    assert legend[1].count("<dt>") == len(
        re.findall(r"<th title=", html.split('id="per-class"')[1].split("</thead>")[0])
    )
    download = api.get(f"/inversions/{done.id}/report?format=html&download=true")
    assert download.headers["content-disposition"] == (
        f'attachment; filename="{done.id}-report.html"'
    )


def test_the_report_has_the_apis_access_control(api: TestClient, done: JobRecord) -> None:
    acme = make_key("acme")  # keys exist now: loopback needs one too
    problem(api.get(f"/inversions/{done.id}/report"), 401)
    problem(api.get(f"/inversions/{done.id}/report", headers=auth(acme)), 404)


# --- errors and static files ------------------------------------------------------------------


def test_errors_are_pages_for_browsers_and_problems_for_programs(api: TestClient) -> None:
    html = page(api, "/dashboard/jobs/job_nope", 404)
    assert "404 · Not found" in html
    problem(api.get("/dashboard/jobs/job_nope", headers={"Accept": "application/json"}), 404)
    assert "page" in page(api, "/dashboard/jobs?page=0", 422)
    problem(api.get("/dashboard/jobs?page=0", headers={"Accept": "application/json"}), 422)


def test_pages_send_a_strict_content_security_policy(api: TestClient) -> None:
    response = api.get("/dashboard/jobs")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text  # no inline script: the policy forbids it


def test_static_files(api: TestClient) -> None:
    css = api.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert (
        api.get(
            "/dashboard/static/dashboard.css", headers={"If-None-Match": css.headers["etag"]}
        ).status_code
        == 304
    )
    assert api.get("/dashboard/static/dashboard.js").status_code == 200
    for name in ("nope.css", "..%2Fapp.py", "dashboard.html", "%2Fetc%2Fpasswd"):
        assert api.get(f"/dashboard/static/{name}").status_code == 404, name
