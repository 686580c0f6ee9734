"""Loaded classifiers kept per worker process (bounded LRU), so repeated jobs on one model do
not reload it. Keyed by id and content hash: a replaced file is never served stale."""

from __future__ import annotations

from collections import OrderedDict

import torch

from models.classifier import LoadedClassifier
from models.loading import load_classifier
from service.records import ClassifierRecord
from service.storage import keys
from worker.context import WorkerContext

_cache: OrderedDict[tuple[str, str, str], LoadedClassifier] = OrderedDict()
stats = {"hits": 0, "misses": 0}


def load_cached_classifier(
    ctx: WorkerContext, record: ClassifierRecord, device: torch.device
) -> LoadedClassifier:
    key = (record.id, record.canonical_sha256 or "", str(device))
    if key in _cache:
        stats["hits"] += 1
        _cache.move_to_end(key)
        return _cache[key]
    stats["misses"] += 1
    data = ctx.stores.artifacts.get(keys.classifier_canonical(record.tenant, record.id))
    classifier = load_classifier(data, record.spec(), device=device)
    _cache[key] = classifier
    while len(_cache) > ctx.settings.classifier_cache_size:
        _cache.popitem(last=False)
    return classifier
