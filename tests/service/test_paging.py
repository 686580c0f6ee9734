"""Every list pages the same way (service.paging): a `next` link in the body and in the `Link`
header, filters kept, a stable order, bounded `limit`; following `next` visits every item once."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import ServiceSettings
from service.storage import open_stores
from tests import records
from tests.service.test_uploads import problem


def follow(api: TestClient, url: str) -> tuple[list[dict[str, Any]], list[int]]:
    """Every item of a list, by its `next` links; and the count each page reported."""
    items: list[dict[str, Any]] = []
    counts: list[int] = []
    next_url: str | None = url
    while next_url is not None:
        response = api.get(next_url)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["data"]
        counts.append(page["count"])
        next_url = page["next"]
        header = response.headers.get("link")
        if next_url is None:
            assert header is None
        else:
            assert header == f'<{next_url}>; rel="next"'
    return items, counts


@pytest.fixture
def seeded(api: TestClient) -> dict[str, Any]:
    """Five classifiers, three of them tagged; a finished job of 3 classes × 7 samples."""
    stores = open_stores(ServiceSettings())
    try:
        classifiers = [
            records.seed_classifier(stores, name=f"model-{i}", tags=["even"] if i % 2 else [])
            for i in range(5)
        ]
        job = records.seed_job(stores, classifiers[0], classes=[0, 4, 9], per_class=7)
        return {"classifiers": [c.id for c in classifiers], "job": job.id}
    finally:
        stores.close()


def test_records_page_newest_first_by_next_links(api: TestClient, seeded: dict[str, Any]) -> None:
    items, counts = follow(api, "/classifiers?limit=2")
    assert [c["id"] for c in items] == seeded["classifiers"][::-1]  # newest first, each once
    assert counts == [5, 5, 5]
    tagged, _ = follow(api, "/classifiers?limit=1&tag=even")
    assert [c["name"] for c in tagged] == ["model-3", "model-1"]
    first = api.get("/classifiers", params={"limit": 1, "tag": "even"}).json()
    assert "tag=even" in first["next"]  # the filters travel with the link
    datasets, _ = follow(api, "/datasets?limit=1")
    assert len(datasets) == 1  # seed_job made one reference set
    jobs, _ = follow(api, "/inversions?limit=1")
    assert [j["id"] for j in jobs] == [seeded["job"]]


def test_samples_page_by_index_with_their_filters(api: TestClient, seeded: dict[str, Any]) -> None:
    job = seeded["job"]
    every, counts = follow(api, f"/inversions/{job}/samples?limit=4")
    assert [s["index"] for s in every] == list(range(21))
    assert counts == [21] * 6
    of_class, _ = follow(api, f"/inversions/{job}/samples?class=4&limit=3")
    assert [s["index"] for s in of_class] == list(range(7, 14))
    last = api.get(f"/inversions/{job}/samples", params={"offset": 18, "limit": 3}).json()
    assert last["next"] is None
    assert len(last["data"]) == 3


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/classifiers?limit=501", "limit"),
        ("/datasets?limit=0", "limit"),
        ("/inversions?offset=-1", "offset"),
    ],
)
def test_page_bounds_are_enforced(api: TestClient, url: str, field: str) -> None:
    assert problem(api.get(url), 422)["field"] == field
