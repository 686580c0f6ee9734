"""What a classifier costs per batch, measured by running it: the peak memory of a forward and
backward pass (what a training step holds), and its time.

The validation measures this in its sandbox at growing batch sizes, so that a job is checked
against the classifier's real cost before it is accepted (models.contracts.cost): a graph
whose memory grows faster than its batch (one that pads by the batch size, say) passes a check
at batch 4 and then needs gigabytes at batch 64. Memory is counted tensor by tensor as torch
creates and frees them (a dispatch mode sees every operator's outputs), so the figure is exact
and repeatable, whatever the graph: torch modules and the ONNX interpreter alike, transient
forward tensors and what autograd keeps for the backward pass. (The process's resident memory
is no measure: the allocator serves small passes from memory it already holds.)
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models.classifier import LoadedClassifier
from models.contracts.classifier import ClassifierRejected
from models.contracts.cost import CostProfile

__all__ = ["measure_cost"]

BATCH_SIZES = (1, 2, 4, 8, 16)


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors operators create while they live; keeps the peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._storages: set[int] = set()

    def _free(self, storage: int, size: int) -> None:
        if storage in self._storages:
            self._storages.discard(storage)
            self.live -= size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key and size and key not in self._storages:  # a view shares its base's bytes
                self._storages.add(key)
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(tensor, self._free, key, size)
        return out


def _pass_cost(
    classifier: LoadedClassifier, batch: int, rng: torch.Generator
) -> tuple[int, float, int]:
    """(peak bytes of a forward and backward pass, its seconds, the feature size) at `batch`.
    Refuses a classifier whose outputs are not finite at this batch size."""
    x = torch.rand(batch, *classifier.input_shape, generator=rng).to(classifier.device)
    x.requires_grad_(True)
    counter = _LiveBytes()
    start = time.perf_counter()
    with torch.enable_grad(), counter:
        logits, features = classifier.forward_with_features(x)
        logits.log_softmax(dim=1).sum().backward()
    seconds = time.perf_counter() - start
    if not torch.isfinite(logits).all():
        raise ClassifierRejected(
            f"the classifier returns NaN or infinite logits for a batch of {batch} images "
            "(smaller batches were fine): it must give each image the same logits whatever "
            "the batch"
        )
    return counter.peak + x.numel() * x.element_size(), seconds, int(features.flatten(1).shape[1])


def measure_cost(
    classifier: LoadedClassifier,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    *,
    budget_bytes: float | None = None,
    seed: int = 0,
) -> CostProfile:
    """Measure a forward and backward pass at each of `batch_sizes` (stopping early when the
    next would pass `budget_bytes` at the growth seen so far)."""
    rng = torch.Generator().manual_seed(seed)
    sizes: list[int] = []
    peaks: list[int] = []
    seconds: list[float] = []
    feature_dim = 1
    for batch in batch_sizes:
        if budget_bytes is not None and sizes:
            partial = CostProfile(batch_sizes=sizes, activation_bytes=peaks, seconds=seconds)
            if partial.bytes_at(batch) > budget_bytes:
                break
        peak, took, feature_dim = _pass_cost(classifier, batch, rng)
        sizes.append(batch)
        peaks.append(peak)
        seconds.append(took)
    return CostProfile(
        batch_sizes=sizes, activation_bytes=peaks, seconds=seconds, feature_dim=feature_dim
    )
