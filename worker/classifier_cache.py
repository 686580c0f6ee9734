"""Loaded classifiers kept per worker process (bounded LRU), so repeated jobs on one model do
not reload it. Keyed by id and content hash: a replaced file is never served stale."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from models.classifier import LoadedClassifier
from models.loading import load_classifier
from models.spec import ClassifierSpec
from service.records import classifier_spec_fields
from service.storage import keys
from worker.context import WorkerContext

_cache: OrderedDict[tuple[str, str, str], LoadedClassifier] = OrderedDict()
stats = {"hits": 0, "misses": 0}


def load_cached_classifier(
    ctx: WorkerContext, doc: dict[str, Any], device: torch.device
) -> LoadedClassifier:
    key = (doc["id"], doc.get("canonical_sha256", ""), str(device))
    if key in _cache:
        stats["hits"] += 1
        _cache.move_to_end(key)
        return _cache[key]
    stats["misses"] += 1
    data = ctx.stores.artifacts.get(keys.classifier_canonical(doc["tenant"], doc["id"]))
    spec = ClassifierSpec.from_dict(classifier_spec_fields(doc))
    classifier = load_classifier(data, spec, device=device)
    _cache[key] = classifier
    while len(_cache) > ctx.settings.classifier_cache_size:
        _cache.popitem(last=False)
    return classifier
