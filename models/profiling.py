"""What a classifier costs per batch, measured by running it: the bytes its graph keeps for
the backward pass (what a training step holds), and the time of a forward and backward pass.

The validation measures this in its sandbox at growing batch sizes, so that a job is checked
against the classifier's real cost before it is accepted (models.contracts.cost): a graph
whose memory grows faster than its batch (one that pads by the batch size, say) passes a check
at batch 4 and then needs gigabytes at batch 64. Saved tensors are counted through autograd's
saved-tensor hooks, which see exactly what the backward pass will need, whatever the graph
(torch modules and the ONNX interpreter alike).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from models.classifier import LoadedClassifier
from models.contracts.classifier import ClassifierRejected
from models.contracts.cost import CostProfile

__all__ = ["measure_cost"]

BATCH_SIZES = (1, 2, 4, 8, 16)


def _pass_cost(
    classifier: LoadedClassifier, batch: int, rng: torch.Generator
) -> tuple[int, float, int]:
    """(bytes kept for the backward pass with the outputs, seconds, feature size) at `batch`.
    Refuses a classifier whose outputs are not finite at this batch size."""
    x = torch.rand(batch, *classifier.input_shape, generator=rng).to(classifier.device)
    x.requires_grad_(True)
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    start = time.perf_counter()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, features = classifier.forward_with_features(x)
        logits.log_softmax(dim=1).sum().backward()
    seconds = time.perf_counter() - start
    if not torch.isfinite(logits).all():
        raise ClassifierRejected(
            f"the classifier returns NaN or infinite logits for a batch of {batch} images "
            "(smaller batches were fine): it must give each image the same logits whatever "
            "the batch"
        )
    outputs = (logits.numel() + features.numel() + x.numel()) * logits.element_size()
    return sum(storages.values()) + outputs, seconds, int(features.flatten(1).shape[1])


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
    kept: list[int] = []
    seconds: list[float] = []
    feature_dim = 1
    for batch in batch_sizes:
        if budget_bytes is not None and sizes:
            partial = CostProfile(batch_sizes=sizes, activation_bytes=kept, seconds=seconds)
            if partial.bytes_at(batch) > budget_bytes:
                break
        bytes_kept, took, feature_dim = _pass_cost(classifier, batch, rng)
        sizes.append(batch)
        kept.append(bytes_kept)
        seconds.append(took)
    return CostProfile(
        batch_sizes=sizes, activation_bytes=kept, seconds=seconds, feature_dim=feature_dim
    )
