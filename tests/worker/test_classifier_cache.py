"""Workers keep loaded classifiers in a bounded LRU: a repeated job does not reload its model."""

from __future__ import annotations

from pathlib import Path

import torch

from service.storage import keys, open_stores
from tests import factories, records
from worker import classifier_cache
from worker.context import WorkerContext
from worker.settings import WorkerSettings


def test_repeated_loads_hit_the_cache_and_old_entries_are_evicted(tmp_path: Path) -> None:
    settings = WorkerSettings(data_dir=tmp_path, classifier_cache_size=2)
    ctx = WorkerContext(settings=settings, stores=open_stores(settings), celery=None)  # type: ignore[arg-type]
    data = factories.safetensors_bytes(factories.random_model("mlp", (1, 8, 8)))
    docs = []
    for i in range(3):
        doc = records.classifier_record("t", architecture="mlp", canonical_sha256=str(i))
        ctx.stores.artifacts.put(keys.classifier_canonical("t", doc.id), data)
        docs.append(doc)
    cpu = torch.device("cpu")
    classifier_cache._cache.clear()
    before = dict(classifier_cache.stats)
    first = classifier_cache.load_cached_classifier(ctx, docs[0], cpu)
    assert classifier_cache.load_cached_classifier(ctx, docs[0], cpu) is first
    assert classifier_cache.stats["hits"] - before["hits"] == 1
    classifier_cache.load_cached_classifier(ctx, docs[1], cpu)
    classifier_cache.load_cached_classifier(ctx, docs[2], cpu)  # evicts the oldest: clf_0
    assert classifier_cache.load_cached_classifier(ctx, docs[0], cpu) is not first
    assert classifier_cache.stats["misses"] - before["misses"] == 4
    assert len(classifier_cache._cache) == 2
