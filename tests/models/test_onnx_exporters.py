"""The exporter matrix: model families as teams build them × the ways they call
torch.onnx.export. Every combination must load, pass the upload check, agree with
onnxruntime (the test-only oracle) to 1e-4 on random inputs and pass gradients to the input.

Graphs exported with the batch fixed at 1 are accepted: C3 rewrites their batch dimension
when a check against per-image runs confirms the rewrite, and otherwise runs them one image
at a time; which of the two happens is pinned here per combination.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime
import pytest
import torch

from models.loading import check_classifier, load_classifier
from models.onnx import OnnxGraphModule
from tests import factories

FIXED_BATCH_MODES = {"legacy-fixed", "dynamo-default"}
# Fixed-batch exports that cannot be rewritten safely: attention bakes the batch into
# products (batch x heads) and the class token's Expand, so they run per image.
PER_IMAGE = {
    ("vit-multihead-attention", "legacy-fixed"),
    ("vit-multihead-attention", "dynamo-default"),
    ("vit-transformer-encoder", "legacy-fixed"),
    ("vit-transformer-encoder", "dynamo-default"),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is faster than two and leaves a core to the others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def onnxruntime_logits(data: bytes, x: np.ndarray, fixed_batch: bool) -> np.ndarray:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if fixed_batch:
        return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return np.asarray(session.run(None, {name: x})[0])


@pytest.mark.parametrize("mode", list(factories.EXPORT_MODES))
@pytest.mark.parametrize("family", list(factories.ONNX_FAMILIES))
def test_export_loads_and_agrees_with_onnxruntime(family: str, mode: str) -> None:
    model, shape = factories.onnx_family(family)
    data = factories.exported_family(family, mode)
    classifier = load_classifier(data, factories.spec("onnx", shape, 10))
    report = check_classifier(classifier)
    assert report.num_classes == 10

    graph = classifier.model
    assert isinstance(graph, OnnxGraphModule)
    if mode not in FIXED_BATCH_MODES:
        assert graph.batch_mode == "dynamic"
    elif (family, mode) in PER_IMAGE:
        assert graph.batch_mode == "per-image"
    else:
        assert graph.batch_mode == "rewritten"

    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(1))
    expected = onnxruntime_logits(data, x.numpy(), mode in FIXED_BATCH_MODES)
    with torch.no_grad():
        logits = classifier(x).numpy()
        assert np.abs(logits - model(x).numpy()).max() <= 1e-4  # and the torch original
    assert logits.shape == expected.shape
    assert np.abs(logits - expected).max() <= 1e-4

    x.requires_grad_(True)
    logits_t, features = classifier.forward_with_features(x)
    logits_t.log_softmax(1)[:, 3].sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all(), "every image gets a gradient"
    assert features.shape[0] == 5
