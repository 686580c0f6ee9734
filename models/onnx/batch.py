"""Graphs whose batch dimension the export fixed at 1.

`torch.onnx.export(model, (x,))` without dynamic axes (the most common call, with either
exporter) declares the input as 1xCxHxW and bakes that 1 into shape constants, typically the
target of the Reshape before the classifier head (`[1, 784]`). Such a graph is correct for one
image and fails on a batch. C3 accepts it two ways:

1. Rewrite: declare the batch dimension symbolic and replace a leading 1 in every constant
   Reshape target by -1 (or by 0, "copy the input's dimension", when the target already has
   a -1). That is a guess about which 1s are the batch, so the rewritten graph is only used
   when a batch of `VERIFY_BATCH` random images gives the same logits and features as running
   the original graph on each image alone.
2. Otherwise run the original graph once per image: always correct, slower in proportion to
   the batch size (`c3 check` says which way a model is run).

A batch fixed at another size is refused with the fix (export with a dynamic batch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import onnx
import torch
from onnx import numpy_helper

from models.contracts.classifier import ClassifierRejected
from models.onnx.graph import (
    OnnxGraphModule,
    graph_input,
    input_dims,
)

__all__ = ["VERIFY_BATCH", "build_module", "fixed_batch_size", "rewrite_fixed_batch"]

logger = logging.getLogger(__name__)

VERIFY_BATCH = 3  # images compared between the rewritten graph and per-image runs
DYNAMIC_EXPORT_HINT = (
    "export with a dynamic batch: torch.onnx.export(model, (x,), dynamo=False, "
    "input_names=['x'], dynamic_axes={'x': {0: 'batch'}}) or, with the default exporter, "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)"
)


def fixed_batch_size(model: onnx.ModelProto) -> int | None:
    """The batch size the graph's input declares, or None when it is symbolic or absent."""
    dims = input_dims(graph_input(model))
    return dims[0] if dims else None


def rewrite_fixed_batch(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy with a symbolic batch and leading-1 Reshape targets freed; (copy, rewrites)."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    dim = graph_input(rewritten).type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = "batch"
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            constants[node.output[0]] = numpy_helper.to_array(value.t)
    count = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        target = [int(v) for v in constants[node.input[1]].flatten()]
        if len(target) < 2 or target[0] != 1 or (-1 in target and 0 in target):
            continue
        if -1 in target:  # [1, -1] → [0, -1]: copy the input's (batch) dimension
            target[0] = 0
            for attribute in node.attribute:  # same meaning for a target without zeros
                if attribute.name == "allowzero":
                    attribute.i = 0
        else:  # [1, 784] → [-1, 784]
            target[0] = -1
        name = f"{node.input[1]}__c3_batch_{index}"
        graph.initializer.append(numpy_helper.from_array(torch.tensor(target).numpy(), name))
        node.input[1] = name
        count += 1
    return rewritten, count


def build_module(model: onnx.ModelProto, input_shape: Sequence[int]) -> OnnxGraphModule:
    """The module that runs a validated graph on any batch size, or a refusal."""
    fixed = fixed_batch_size(model)
    if fixed is None:
        return OnnxGraphModule(model)
    if fixed != 1:
        raise ClassifierRejected(
            f"the ONNX model's batch dimension is fixed at {fixed} by the export: "
            f"{DYNAMIC_EXPORT_HINT}, or export with a batch of 1"
        )
    original = OnnxGraphModule(model, per_image=True)
    candidate_model, rewrites = rewrite_fixed_batch(model)
    candidate = OnnxGraphModule(candidate_model)
    if _same_on_a_batch(candidate, original, input_shape):
        change = (
            f"{rewrites} Reshape target{'' if rewrites == 1 else 's'} rewritten"
            if rewrites
            else "the graph runs any batch unchanged"
        )
        candidate.batch_mode = "rewritten"
        candidate.batch_note = (
            f"batch fixed at 1 by the export; {change}, verified against per-image runs"
        )
        return candidate
    original.batch_note = (
        "batch fixed at 1 by the export; runs one image at a time (slower; to batch, "
        + DYNAMIC_EXPORT_HINT
        + ")"
    )
    logger.info("fixed-batch ONNX graph runs per image (the batch rewrite did not verify)")
    return original


def _same_on_a_batch(
    candidate: OnnxGraphModule, original: OnnxGraphModule, input_shape: Sequence[int]
) -> bool:
    """Does the rewritten graph give, on a batch, what the original gives image by image?

    The original's own failures propagate (it is the model as uploaded); the candidate's
    mean only that the rewrite was wrong.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(VERIFY_BATCH, *input_shape, generator=generator)  # (n, c, h, w)
    with torch.no_grad():
        expected_logits, expected_features = original.forward_with_features(x)
        try:
            logits, features = candidate.forward_with_features(x)
        except (torch.OutOfMemoryError, MemoryError):
            raise
        except Exception:  # the rewrite broke the graph: run it per image instead
            return False
    return (
        logits.shape == expected_logits.shape
        and features.shape == expected_features.shape
        and torch.allclose(logits, expected_logits, rtol=1e-4, atol=1e-5)
        and torch.allclose(features, expected_features, rtol=1e-4, atol=1e-5)
    )
