"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against the real
service (`c3 serve`: API, a Celery worker and the sandboxed validation, embedded default).

One user's path: sign in with a key, upload a classifier through the form, start a job, watch
its progress reach 100% on the jobs list (server-sent events), open the job page (the verdict
first, grid, histogram, tables that fit on screen and on paper), page through a class, draw more
samples and delete them, cancel and resume a long job, compare two jobs and open the audit
report.
Screenshots go to test-artifacts/browser/ (gitignored).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "browser"
SIDE = 8  # digits at their native 8×8: jobs take a second or two
EPOCHS = 15  # ~90% held-out accuracy in a few seconds
C3_STEPS = 600  # long enough (a few seconds) to watch the progress bar move
PIXEL_STEPS = 50
ENV = {
    "C3_HEARTBEAT_SECONDS": "0.5",
    "C3_STALE_AFTER_SECONDS": "3",
    "C3_REAPER_SECONDS": "1",
    "C3_PROGRESS_EVERY_SECONDS": "0.2",  # progress the page can be seen to follow
    "C3_TORCH_THREADS": "1",  # a core left for the browser
}


@dataclass
class Service:
    url: str
    key: str
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=60
        )


def _cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """`c3 serve` on a free port with one API key; stopped (with its workers) at the end."""
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("C3_")} | ENV
    key = _cli("keys", "create", "--tenant", "t", "--data-dir", str(data_dir), env=env)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Service(f"http://127.0.0.1:{port}", key, data_dir, log, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"c3 serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    yield running
    proc.send_signal(signal.SIGINT)  # serve stops its workers, then itself
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def classifier_file(tmp_path: Path) -> Path:
    """The paper's CNN trained on 8×8 digits, as the safetensors file a user uploads."""
    from tests.factories import safetensors_bytes, trained_model

    path = tmp_path / "digits-cnn.safetensors"
    path.write_bytes(safetensors_bytes(trained_model("paper-cnn", (1, SIDE, SIDE), EPOCHS)))
    return path


def reference_file(tmp_path: Path) -> Path:
    """The held-out split of the digits (real images, labelled): the reference set."""
    from tests.factories import digits_reference_npz

    path = tmp_path / "held-out.npz"
    path.write_bytes(digits_reference_npz((1, SIDE, SIDE)))
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_fits(page: Any, what: str, width: int, media: str = "screen") -> None:
    """At `width` CSS pixels (A4 is 794), the per-class table needs no horizontal scrolling
    and ends inside the page."""
    page.set_viewport_size({"width": width, "height": 1000})
    page.emulate_media(media=media)
    table = page.locator("#per-class table")
    box = table.bounding_box()
    assert box is not None
    overflow = table.evaluate("t => t.scrollWidth - t.parentElement.clientWidth")
    page_width = page.evaluate("() => document.documentElement.clientWidth")
    assert overflow <= 0, f"{what}: the per-class table is {overflow} px too wide"
    assert box["x"] + box["width"] <= page_width, f"{what}: the table ends past the page"


def verdict(page: Any, row: str) -> str:
    """Wait until the upload in `row` is validated; its row's text, or fail with the reason."""
    page.wait_for_selector(f"{row} .badge:not(.state-validating)")
    text: str = page.inner_text(row)
    assert page.inner_text(f"{row} .badge") == "ready", text
    return text


def test_audit_in_the_browser(service: Service, browser: Any, tmp_path: Path) -> None:
    model = classifier_file(tmp_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on(
        "response",
        lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    page.set_default_timeout(30_000)
    streams: list[str] = []
    page.on("request", lambda r: streams.append(r.url) if r.url.endswith("/events") else None)

    # Sign in: every page sends the browser to the login form first.
    page.goto(f"{service.url}/dashboard/classifiers")
    assert "/dashboard/login" in page.url
    shot(page, "01-login")
    page.fill("input[name=key]", service.key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{service.url}/dashboard/classifiers")
    cookie = next(c for c in context.cookies() if c["name"] == "c3_key")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"

    # Upload the classifier through the form; the page reloads until it is validated.
    page.set_input_files("#upload-form input[name=file]", str(model))
    page.fill("#upload-form input[name=name]", "digits-cnn")
    page.fill("input[name=architecture]", "paper-cnn")
    page.fill("input[name=input_shape]", f"1,{SIDE},{SIDE}")
    page.fill("input[name=class_names]", ",".join(str(d) for d in range(10)))
    page.click("#upload-form button[type=submit]")
    row = verdict(page, "tr[data-classifier]")
    assert "digits-cnn" in row
    assert f"1×{SIDE}×{SIDE}" in row
    shot(page, "02-classifiers")

    # A reference set (real held-out digits), for the histogram and the OOD-detector table.
    page.set_input_files("#dataset-form input[name=file]", str(reference_file(tmp_path)))
    page.fill("#dataset-form input[name=name]", "held-out digits")
    page.click("#dataset-form button[type=submit]")
    verdict(page, "tr[data-dataset]")
    dataset_id = page.get_attribute("tr[data-dataset]", "data-dataset")

    # Start a c3 job from the form and watch it on the jobs list.
    page.goto(f"{service.url}/dashboard/jobs")
    # The newest fitting reference set is preselected; placeholders follow method and recipe.
    assert page.eval_on_selector("select[name=dataset_id]", "s => s.value") == dataset_id
    steps = page.locator("input[name=steps]")
    assert steps.get_attribute("placeholder") == "3000"  # c3, adaptive: a budget
    page.select_option("select[name=method]", "pixel")
    assert steps.get_attribute("placeholder") == "200"
    assert page.get_attribute("input[name=batch_size]", "placeholder") == "250"
    page.select_option("select[name=method]", "c3")
    page.select_option("select[name=recipe]", "paper")
    assert steps.get_attribute("placeholder") == "500"
    assert page.get_attribute("input[name=w_spread]", "placeholder") == "0"
    page.select_option("select[name=recipe]", "adaptive")
    page.fill("input[name=samples_per_class]", "8")
    page.fill("input[name=steps]", str(C3_STEPS))
    page.fill("input[name=seed]", "1")
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/jobs/job_\w+$"))
    c3_id = page.url.rsplit("/", 1)[1]
    page.goto(f"{service.url}/dashboard/jobs")
    progress = f'tr[data-job="{c3_id}"] [data-role=progress]'
    seen = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        seen.append(int(page.get_attribute(progress, "data-percent") or 0))
        if seen[-1] == 100:
            break
        if 0 < seen[-1] < 100 and not any(0 < p < 100 for p in seen[:-1]):
            shot(page, "03-jobs-running")
        page.wait_for_timeout(100)
    assert seen[-1] == 100, f"progress never reached 100%: {seen[-10:]}"
    assert seen == sorted(seen), "progress went backwards"
    assert any(0 < p < 100 for p in seen), "no progress seen between 0 and 100%"
    assert f"{service.url}/inversions/{c3_id}/events" in streams  # followed over SSE
    page.wait_for_selector(f'tr[data-job="{c3_id}"] .badge.state-succeeded')
    assert "100%" in page.inner_text(progress)
    shot(page, "04-jobs-done")

    # A pixel-optimisation job on the same classifier, for the compare view.
    with service.api() as api:
        pixel = api.post(
            "/inversions",
            json={"classifier_id": api.get("/classifiers").json()["data"][0]["id"],
                  "method": "pixel", "samples_per_class": 8, "steps": PIXEL_STEPS, "seed": 1,
                  "dataset_id": dataset_id},
        ).json()  # fmt: skip

    # The job page: grid strips, histogram beside the real data, tables, curves.
    page.goto(f"{service.url}/dashboard/jobs/{c3_id}")
    strips = page.locator("#grid img.strip")
    assert strips.count() == 10
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img.strip')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    histogram = page.locator("#histogram svg")
    assert histogram.is_visible()
    legend = histogram.text_content() or ""
    assert "counterfeits" in legend
    assert "real reference" in legend
    assert page.locator("#histogram svg rect.bar.s0").count() >= 1  # counterfeits
    assert page.locator("#histogram svg rect.bar.s1").count() >= 1  # real reference
    assert page.locator("#evasion tr[data-detector]").count() == 4
    assert page.locator("#per-class tbody tr").count() == 10
    assert page.locator("#curves svg").count() >= 2
    shot(page, "05-job")

    # The verdict comes first: a sentence, a light per detector, what to do.
    first_card = page.locator("main section.card").first
    assert first_card.get_attribute("id") == "verdict"
    sentence = page.inner_text("#verdict [data-role=verdict-sentence]")
    assert re.match(r"\d+\.\d% of 80 counterfeits were classified with p ≥ 0\.99", sentence)
    lights = page.locator("#verdict li.light")
    assert lights.count() == 4
    assert {lights.nth(i).get_attribute("data-light") for i in range(4)} <= {
        "red",
        "amber",
        "green",
    }
    assert page.inner_text("#verdict [data-role=advice]").startswith("What to do:")
    assert page.get_attribute("#per-class th[title]:nth-child(2)", "title")  # explained
    assert_fits(page, "1400 px screen", width=1400)
    assert_fits(page, "A4 print", width=794, media="print")
    shot(page, "05b-job-print")
    page.emulate_media(media="screen")
    page.set_viewport_size({"width": 1280, "height": 900})

    # A class's samples, with the confidence under each: the API's figures.
    page.click('#grid tr[data-class="7"] th a')
    page.wait_for_url(re.compile(r".*/classes/7$"))
    items = page.locator("#samples li")
    assert items.count() == 8
    with service.api() as api:
        truth = {
            s["index"]: s["confidence"]
            for s in api.get(f"/inversions/{c3_id}/samples", params={"class": 7}).json()["data"]
        }
    for i in range(items.count()):
        index = int(items.nth(i).get_attribute("data-index") or -1)
        shown = float(items.nth(i).locator("[data-role=confidence]").inner_text())
        assert shown == pytest.approx(truth[index], abs=1e-4)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#samples img')].every(i => i.naturalWidth > 0)"
    )
    shot(page, "06-class")

    # Draw more samples from the finished job, then delete them.
    page.goto(f"{service.url}/dashboard/jobs/{c3_id}")
    page.fill("#more-form input[name=samples_per_class]", "4")
    page.click("#more-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/jobs/job_\w+$"))
    more_id = page.url.rsplit("/", 1)[1]
    assert more_id != c3_id
    assert f"more samples of {c3_id}" in page.inner_text(".job-head")
    page.wait_for_selector('.job-head[data-state="succeeded"]', timeout=60_000)
    page.wait_for_selector("#grid img.strip")
    assert page.locator("#grid tr[data-class]").count() == 10
    shot(page, "06b-more-samples")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-form button[type=submit]")
    page.wait_for_url(f"{service.url}/dashboard/jobs?deleted={more_id}")
    assert f"Job {more_id} deleted." in page.inner_text("[data-role=deleted]")
    assert page.locator(f'tr[data-job="{more_id}"]').count() == 0

    # Cancel a long job from its page, resume it, cancel it again and delete it.
    with service.api() as api:
        long_job = api.post(
            "/inversions",
            json={
                "classifier_id": api.get("/classifiers").json()["data"][0]["id"],
                "samples_per_class": 2,
                "steps": 20_000,
                "recipe": "paper",
                "seed": 2,
            },
        ).json()["id"]  # fmt: skip (the fixed recipe: no early stop)
    page.goto(f"{service.url}/dashboard/jobs/{long_job}")
    page.wait_for_selector('.job-head[data-state="running"]')
    page.wait_for_function(
        "() => /left$/.test(document.querySelector('[data-role=eta]').textContent)"
    )
    assert page.inner_text("[data-role=eta]").startswith("about ")
    for _ in range(2):
        page.click("#cancel-form button[type=submit]")
        page.wait_for_selector('.job-head[data-state="cancelled"]', timeout=60_000)
        page.wait_for_selector("#resume-form")
        if _ == 0:
            page.click("#resume-form button[type=submit]")
            # the resumed job queues behind whatever the worker runs (a full run saw > 60 s)
            page.wait_for_selector('.job-head[data-state="running"]', timeout=180_000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-form button[type=submit]")
    page.wait_for_url(f"{service.url}/dashboard/jobs?deleted={long_job}")
    with service.api() as api:
        assert api.get(f"/inversions/{long_job}").status_code == 404

    # Compare the two jobs: pick both on the jobs list.
    deadline = time.monotonic() + 30
    with service.api() as api:
        while api.get(f"/inversions/{pixel['id']}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, "the pixel job did not finish"
            time.sleep(0.3)
    page.goto(f"{service.url}/dashboard/jobs")
    page.check(f'input[name=jobs][value="{c3_id}"]')
    page.check(f'input[name=jobs][value="{pixel["id"]}"]')
    page.click("#compare-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard/compare\?.*"))
    table = page.locator("#compare-table")
    assert table.is_visible()
    assert page.locator("#compare-table [data-role=delta]").count() > 5
    assert "pixel" in table.inner_text()
    page.wait_for_function("() => [...document.images].every(i => i.naturalWidth > 0)")
    shot(page, "07-compare")

    # The audit report, self-contained: every image inlined.
    page.goto(f"{service.url}/dashboard/jobs/{c3_id}")
    page.click("#report-link")
    page.wait_for_url(re.compile(r".*/report\?format=html$"))
    assert page.locator("#evasion tr[data-detector]").count() == 4
    sources = page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))")
    assert len(sources) == 10 * 8
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    page.wait_for_function("() => [...document.images].every(i => i.naturalWidth > 0)")
    assert page.locator("main section.card").first.get_attribute("id") == "verdict"
    assert page.locator("#verdict li.light").count() == 4
    shot(page, "08-report")
    assert_fits(page, "the report on a 1400 px screen", width=1400)
    assert_fits(page, "the report on A4", width=794, media="print")
    shot(page, "08b-report-print")

    assert not problems, problems
    context.close()


def test_api_docs_render_without_the_internet(browser: Any, tmp_path: Path) -> None:
    """/docs (Swagger UI) and /redoc load their scripts and styles from the service itself:
    with every other host blocked, they render every operation of the OpenAPI document. (ReDoc
    asks for one decorative image elsewhere, its "by Redocly" badge; nothing else.)"""
    from tests.conftest import LiveApi, clean_env

    api = LiveApi(clean_env(C3_DATA_DIR=str(tmp_path / "data"))).start()
    try:
        document = httpx.get(f"{api.url}/openapi.json").json()
        operations = sum(len(methods) for methods in document["paths"].values())
        context = browser.new_context()
        elsewhere: list[tuple[str, str]] = []

        def only_this_service(route: Any) -> None:
            if route.request.url.startswith(api.url):
                route.continue_()
            else:
                elsewhere.append((route.request.resource_type, route.request.url))
                route.abort()

        context.route("**/*", only_this_service)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{api.url}/docs")
        page.wait_for_selector(".opblock")
        assert page.locator(".opblock").count() == operations
        assert page.locator(".opblock-tag").count() == len(document["tags"])
        shot(page, "09-docs-offline")
        assert not elsewhere, elsewhere
        page.goto(f"{api.url}/redoc")
        page.wait_for_selector("[data-section-id^='operation/']")
        assert page.locator("[data-section-id^='operation/']").count() == operations
        shot(page, "10-redoc-offline")
        assert all(kind == "image" for kind, _ in elsewhere), elsewhere
        context.close()
    finally:
        api.stop()
