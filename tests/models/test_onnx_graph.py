"""Refusals of the ONNX interpreter name the node, its operator, the opset and the real cause."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from models.contracts.classifier import ClassifierSpec
from models.loading import ClassifierRejected, check_classifier, load_classifier
from models.onnx import MAX_CREATED_VALUES
from tests import factories

SPEC = factories.spec("onnx", (1, 4, 4), 2)


def model_bytes(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    opset: int = 18,
    input_dims: list[int | str] | None = None,
) -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, input_dims or ["n", 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model.SerializeToString()


def linear_head(flat_shape: list[int]) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Reshape to `flat_shape`, then MatMul into two logits."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 2], [0.1 * k for k in range(32)])
    target = helper.make_tensor("s", TensorProto.INT64, [len(flat_shape)], flat_shape)
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["flat"], name="head/flatten"),
        helper.make_node("MatMul", ["flat", "w"], ["y"], name="head/linear"),
    ]
    return nodes, [weight, target]


def load_and_check(data: bytes, spec: ClassifierSpec) -> None:
    check_classifier(load_classifier(data, spec))


def refusal(data: bytes, spec: ClassifierSpec = SPEC) -> str:
    """The message an upload of `data` is refused with (validation: load, then check)."""
    with pytest.raises(ClassifierRejected) as caught:
        load_and_check(data, spec)
    return str(caught.value)


def test_unsupported_operators_are_listed_with_their_nodes() -> None:
    nodes = [
        helper.make_node("NonZero", ["x"], ["nz"], name="mask/nonzero"),
        helper.make_node("TopK", ["x", "k"], ["v", "i"], name="pick/topk"),
        helper.make_node("NonZero", ["x"], ["nz2"], name="mask/nonzero2"),
    ]
    message = refusal(model_bytes(nodes))
    assert message.startswith("node 'mask/nonzero' (NonZero, opset 18): ONNX operator NonZero")
    assert "is not supported: it is not on C3's operator allowlist" in message
    assert '"ONNX support" in the C3 README' in message
    assert "also not supported: node 'pick/topk' (TopK, opset 18)" in message
    assert "mask/nonzero2" not in message  # one node per operator


def test_an_operator_from_a_later_opset_is_refused_as_an_invalid_export() -> None:
    nodes = [helper.make_node("Gelu", ["x"], ["y"], name="act")]
    message = refusal(model_bytes(nodes, opset=17))
    assert message == (
        "node 'act' (Gelu, opset 17): ONNX operator Gelu does not exist at opset 17 (it was "
        "added in opset 20): the file is not a valid export; export it again with "
        "torch.onnx.export"
    )


def test_opsets_outside_the_registry_are_refused() -> None:
    nodes, inits = linear_head([-1, 16])
    assert "export with opset_version between 11 and 23" in refusal(model_bytes(nodes, inits, 10))


def test_a_node_failing_at_run_time_is_named_and_not_blamed_on_the_input_shape() -> None:
    nodes, inits = linear_head([-1, 15])  # 16 values per image do not reshape into 15
    message = refusal(model_bytes(nodes, inits, input_dims=["n", 1, 4, 4]))
    assert message.startswith(
        "node 'head/flatten' (Reshape, opset 18) fails on inputs of shape [2x1x4x4, 2] "
        "(input batch 2x1x4x4): RuntimeError: shape '[-1, 15]' is invalid for input of size 32"
    )
    assert "input size is fixed and matches the declaration" in message
    assert "Check the declared input shape" not in message


def test_a_run_time_failure_with_open_input_size_points_at_the_declared_shape() -> None:
    nodes, inits = linear_head([-1, 15])
    message = refusal(model_bytes(nodes, inits, input_dims=["n", 1, "h", "w"]))
    assert "node 'head/flatten' (Reshape, opset 18) fails" in message
    assert "leaves its input height, width open: check that 1x4x4 (CxHxW)" in message


def test_a_wrong_declared_shape_names_the_dimension() -> None:
    nodes, inits = linear_head([-1, 16])
    message = refusal(model_bytes(nodes, inits), factories.spec("onnx", (3, 4, 4), 2))
    assert message == (
        "the ONNX model expects input ?x1x4x4, but 3x4x4 (CxHxW) was declared: its channels "
        "dimension is 1, not 3; declare the shape the model was exported with"
    )


def test_a_huge_created_tensor_is_refused_before_it_is_allocated() -> None:
    side = int(MAX_CREATED_VALUES**0.5) + 1
    shape = helper.make_tensor("big", TensorProto.INT64, [2], [side, side])
    nodes = [
        helper.make_node("ConstantOfShape", ["big"], ["zeros"], name="bomb"),
        helper.make_node("ReduceSum", ["zeros"], ["total"], keepdims=0),
        *linear_head([-1, 16])[0],
    ]
    message = refusal(model_bytes(nodes, [shape, *linear_head([-1, 16])[1]]))
    assert message.startswith(
        f"node 'bomb' (ConstantOfShape, opset 18): the graph creates a tensor of shape "
        f"[{side}, {side}]: too large or invalid"
    )


def test_a_batch_fixed_above_one_is_refused_with_the_fix() -> None:
    nodes, inits = linear_head([2, 16])
    message = refusal(model_bytes(nodes, inits, input_dims=[2, 1, 4, 4]))
    assert message.startswith(
        "the ONNX model's batch dimension is fixed at 2 by the export: export with a dynamic "
        "batch: torch.onnx.export(model, (x,), dynamo=False, input_names=['x'], "
        "dynamic_axes={'x': {0: 'batch'}})"
    )


def test_a_batch_fixed_at_one_is_rewritten_when_per_image_runs_confirm_it() -> None:
    nodes, inits = linear_head([1, 16])
    classifier = load_classifier(model_bytes(nodes, inits, input_dims=[1, 1, 4, 4]), SPEC)
    assert classifier.model.batch_mode == "rewritten"
    x = torch.rand(3, 1, 4, 4)
    single = torch.cat([classifier(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(classifier(x), single)


def test_a_consumed_output_the_interpreter_does_not_compute_is_named() -> None:
    pool = helper.make_node(
        "MaxPool", ["x"], ["pooled", "indices"], kernel_shape=[2, 2], name="pool"
    )
    cast = helper.make_node("Cast", ["indices"], ["y"], to=TensorProto.FLOAT)
    message = refusal(model_bytes([pool, cast]))
    assert message.startswith(
        "node 'pool' (MaxPool, opset 18): output #1 ('indices') is not supported"
    )
