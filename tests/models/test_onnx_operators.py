"""Per-operator conformance: every allowlisted operator, at every registered version, against
onnx's own reference implementation (`onnx.reference.ReferenceEvaluator`), on the edge cases
exports hit: 0-d and negative indices, negative axes, broadcasting, attributes that became
inputs, empty tensors. Differentiable operators must pass gradients to their data input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from models.onnx import MAX_OPSET, MIN_OPSET, lookup, operator_version, registered_versions
from models.onnx.graph import node_attributes
from models.onnx.tensors import to_tensor

INT64_MAX = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Case:
    name: str
    inputs: list[np.ndarray | None]  # None: an omitted optional input
    attrs: dict[str, Any] = field(default_factory=dict)
    outputs: int = 1
    rtol: float = 1e-5


def f(*shape: int, seed: int = 0, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Random float32 values (positive when low > 0)."""
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


def i(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def scalar(value: float | int) -> np.ndarray:
    dtype = np.int64 if isinstance(value, int) else np.float32
    return np.array(value, dtype=dtype)


Cases = Callable[[int], list[Case]]
CASES: dict[str, Cases] = {}
NOT_DIFFERENTIABLE = {
    *("Floor", "Ceil", "Not", "Equal", "Less", "Greater", "Shape", "Size"),
    *("Range", "ConstantOfShape"),
}


def cases(*op_types: str) -> Callable[[Cases], Cases]:
    def decorate(fn: Cases) -> Cases:
        for op_type in op_types:
            CASES[op_type] = fn
        return fn

    return decorate


# -- element-wise ---------------------------------------------------------------------


@cases(
    "Identity",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Neg",
    "Abs",
    "Exp",
    "Erf",
    "Floor",
    "Ceil",
    "Softplus",
    "Softsign",
    "HardSwish",
    "Mish",
)
def _unary(version: int) -> list[Case]:
    return [
        Case("4d", [f(2, 3, 4, 5, low=-6, high=6)]),
        Case("0d", [scalar(0.7)]),
        Case("empty", [np.zeros((0, 3), np.float32)]),
    ]


@cases("Log", "Sqrt", "Reciprocal")
def _positive_unary(version: int) -> list[Case]:
    return [Case("4d", [f(2, 3, 4, low=0.1, high=4)]), Case("0d", [scalar(2.5)])]


@cases("Not")
def _not(version: int) -> list[Case]:
    return [Case("bool", [np.array([[True, False], [False, False]])])]


@cases("LeakyRelu")
def _leaky_relu(version: int) -> list[Case]:
    return [Case("default", [f(2, 3, 4)]), Case("alpha", [f(2, 3, 4)], {"alpha": 0.2})]


@cases("PRelu")
def _prelu(version: int) -> list[Case]:
    return [
        Case("per-channel", [f(2, 3, 4, 4), f(3, 1, 1, seed=1)]),
        Case("shared", [f(2, 3, 4), f(1, seed=1)]),
    ]


@cases("Elu", "Selu", "HardSigmoid")
def _activation_with_alpha(version: int) -> list[Case]:
    return [Case("default", [f(2, 3, 4, low=-4, high=4)]), Case("alpha", [f(5, 7)], {"alpha": 0.4})]


@cases("Gelu")
def _gelu(version: int) -> list[Case]:
    return [
        Case("exact", [f(2, 3, 4, low=-4, high=4)]),
        Case("tanh", [f(2, 3, 4)], {"approximate": "tanh"}),
    ]


@cases("Clip")
def _clip(version: int) -> list[Case]:
    both = Case("both", [f(3, 4), scalar(-0.5), scalar(0.8)])
    only_max = Case("only-max", [f(3, 4), None, scalar(0.3)])
    unbounded = Case("none", [f(3, 4)])
    integers = [Case("int", [i(-5, 0, 7), scalar(-2), scalar(3)])] if version >= 12 else []
    return [both, only_max, unbounded, *integers]


@cases("Add", "Sub", "Mul", "Div")
def _arithmetic(version: int) -> list[Case]:
    return [
        Case("broadcast-row", [f(2, 3, 4), f(4, seed=1, low=0.5, high=2)]),
        Case("broadcast-both", [f(2, 1, 4), f(3, 1, seed=1, low=0.5, high=2)]),
        Case("scalar", [f(3, 4), scalar(1.5)]),
        Case("int-negative", [i(7, -7, 9, -9), i(2, 2, -4, -4)]),
        Case("empty", [np.zeros((0, 3), np.float32), f(3, seed=1)]),
    ]


@cases("Pow")
def _pow(version: int) -> list[Case]:
    integer_exponent = [Case("int-exponent", [f(3, 4), i(2)])] if version >= 12 else []
    return [
        Case("float", [f(3, 4, low=0.1, high=3), f(3, 4, seed=1)]),
        Case("broadcast-scalar", [f(2, 3, low=0.1, high=3), scalar(0.5)]),
        *integer_exponent,
    ]


@cases("Mod")
def _mod(version: int) -> list[Case]:
    return [
        Case("int-sign-of-divisor", [i(7, -7, 7, -7, 5), i(3, 3, -3, -3, 5)]),
        Case("int-fmod", [i(7, -7, 7, -7), i(3, 3, -3, -3)], {"fmod": 1}),
        Case("float-fmod", [f(3, 4, low=-5, high=5), scalar(1.5)], {"fmod": 1}),
        Case("broadcast", [i(10, 11, 12), i(4)]),
    ]


@cases("Equal", "Less", "Greater")
def _comparison(version: int) -> list[Case]:
    return [
        Case("int-broadcast", [i(1, 2, 3, 4).reshape(2, 2), i(2, 3)]),
        Case("float", [f(3, 4), f(4, seed=1)]),
    ]


@cases("Where")
def _where(version: int) -> list[Case]:
    condition = np.array([[True], [False]])
    return [
        Case("broadcast", [condition, f(2, 3), scalar(0.25)]),
        Case("int", [np.array([True, False, True]), i(1, 2, 3), i(-1, -2, -3)]),
    ]


@cases("Min", "Max", "Sum", "Mean")
def _variadic(version: int) -> list[Case]:
    return [
        Case("one", [f(3, 4)]),
        Case("broadcast", [f(2, 3, 4), f(4, seed=1)]),
        Case("three", [f(3, 1), f(1, 4, seed=1), f(3, 4, seed=2)]),
    ]


# -- network layers ---------------------------------------------------------------------


@cases("Conv")
def _conv(version: int) -> list[Case]:
    x, w, b = f(2, 3, 7, 6), f(4, 3, 3, 3, seed=1), f(4, seed=2)
    return [
        Case("bias", [x, w, b], {"pads": [1, 1, 1, 1]}),
        Case("stride-asymmetric-pads", [x, w, None], {"strides": [2, 2], "pads": [0, 1, 1, 0]}),
        Case("depthwise", [x, f(3, 1, 3, 3, seed=1)], {"group": 3, "pads": [1, 1, 1, 1]}),
        Case("dilated", [x, w], {"dilations": [2, 1]}),
        Case("same-upper", [x, w, b], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
        Case("1d", [f(2, 3, 9), f(4, 3, 3, seed=1), b], {"pads": [2, 0]}),
    ]


@cases("ConvTranspose")
def _conv_transpose(version: int) -> list[Case]:
    x = f(2, 4, 5, 5)
    return [
        Case(
            "stride-output-padding",
            [x, f(4, 3, 3, 3, seed=1), f(3, seed=2)],
            {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        ),
        Case("grouped", [x, f(4, 2, 2, 2, seed=1)], {"group": 2}),
    ]


@cases("MaxPool")
def _max_pool(version: int) -> list[Case]:
    x = f(2, 3, 7, 7)
    return [
        Case("2x2", [x], {"kernel_shape": [2, 2], "strides": [2, 2]}),
        Case("ceil", [x], {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
        Case("padded", [x], {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        Case("asymmetric-pads", [x], {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1]}),
        Case("dilated", [x], {"kernel_shape": [2, 2], "dilations": [2, 2]}),
        Case(
            "same-upper", [x], {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_UPPER"}
        ),
        Case("1d", [f(2, 3, 9)], {"kernel_shape": [3], "strides": [2]}),
    ]


@cases("AveragePool")
def _average_pool(version: int) -> list[Case]:
    x = f(2, 3, 6, 6)
    padded = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    return [
        Case("2x2", [x], {"kernel_shape": [2, 2], "strides": [2, 2]}),
        Case("padded-excluded", [x], padded),
        Case("padded-included", [x], {**padded, "count_include_pad": 1}),
        Case(
            "asymmetric-included",
            [x],
            {"kernel_shape": [2, 2], "pads": [0, 0, 1, 1], "count_include_pad": 1},
        ),
        Case("1d", [f(2, 3, 8)], {"kernel_shape": [2], "strides": [2]}),
    ]


@cases("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(version: int) -> list[Case]:
    return [Case("4d", [f(2, 3, 4, 5)]), Case("3d", [f(2, 3, 6)])]


@cases("BatchNormalization")
def _batch_norm(version: int) -> list[Case]:
    scale, bias, mean = f(3, seed=1), f(3, seed=2), f(3, seed=3)
    var = f(3, seed=4, low=0.5, high=2)
    return [
        Case("4d", [f(2, 3, 4, 4), scale, bias, mean, var]),
        Case("2d-epsilon", [f(5, 3), scale, bias, mean, var], {"epsilon": 1e-3}),
    ]


@cases("InstanceNormalization")
def _instance_norm(version: int) -> list[Case]:
    return [Case("4d", [f(2, 3, 4, 5), f(3, seed=1), f(3, seed=2)], {"epsilon": 1e-4})]


@cases("LayerNormalization")
def _layer_norm(version: int) -> list[Case]:
    return [
        Case("last-axis", [f(2, 5, 8), f(8, seed=1), f(8, seed=2)]),
        Case("from-axis-1-no-bias", [f(2, 3, 4), f(3, 4, seed=1)], {"axis": 1}),
        Case("negative-axis", [f(2, 3, 4), f(3, 4, seed=1), f(4, seed=2)], {"axis": -2}),
    ]


@cases("MatMul")
def _matmul(version: int) -> list[Case]:
    return [
        Case("2d", [f(3, 4), f(4, 5, seed=1)]),
        Case("batched-broadcast", [f(2, 3, 4), f(4, 5, seed=1)]),
        Case("4d", [f(2, 2, 3, 4), f(2, 1, 4, 3, seed=1)]),
        Case("vector-matrix", [f(4), f(4, 5, seed=1)]),
    ]


@cases("Gemm")
def _gemm(version: int) -> list[Case]:
    return [
        Case("linear", [f(3, 4), f(5, 4, seed=1), f(5, seed=2)], {"transB": 1}),
        Case(
            "transA-alpha-beta",
            [f(4, 3), f(4, 5, seed=1), f(3, 5, seed=2)],
            {"transA": 1, "alpha": 0.5, "beta": 2.0},
        ),
        Case("no-bias", [f(3, 4), f(4, 2, seed=1)]),
        Case("scalar-bias", [f(3, 4), f(4, 2, seed=1), scalar(0.3)]),
    ]


@cases("Softmax", "LogSoftmax")
def _softmax(version: int) -> list[Case]:
    return [
        Case("default-axis", [f(2, 3, 4)]),
        Case("axis-1", [f(2, 3, 4)], {"axis": 1}),
        Case("negative-axis", [f(2, 3, 4)], {"axis": -2}),
    ]


@cases("Dropout")
def _dropout(version: int) -> list[Case]:
    if version == 10:
        return [Case("ratio-attribute", [f(2, 3)], {"ratio": 0.5}, outputs=2)]
    return [
        Case("no-ratio", [f(2, 3)]),
        Case("ratio-input-eval", [f(2, 3), scalar(0.3), np.array(False)], outputs=2),
    ]


# -- shapes and data movement -----------------------------------------------------------


@cases("Constant")
def _constant(version: int) -> list[Case]:
    tensor = numpy_helper.from_array(f(2, 3))
    typed = [Case("value-ints", [], {"value_ints": [3, -1]})] if version >= 12 else []
    return [Case("tensor", [], {"value": tensor}), *typed]


@cases("Shape")
def _shape(version: int) -> list[Case]:
    sliced = (
        [
            Case("start-end", [f(2, 3, 4, 5)], {"start": 1, "end": -1}),
            Case("negative-start", [f(2, 3, 4, 5)], {"start": -2}),
        ]
        if version >= 15
        else []
    )
    return [Case("4d", [f(2, 3, 4, 5)]), Case("0d", [scalar(1.0)]), *sliced]


@cases("Size")
def _size(version: int) -> list[Case]:
    return [Case("4d", [f(2, 3, 4, 5)]), Case("empty", [np.zeros((0, 3), np.float32)])]


@cases("Reshape")
def _reshape(version: int) -> list[Case]:
    allowzero = (
        [Case("allowzero", [np.zeros((0, 3), np.float32), i(3, 0)], {"allowzero": 1})]
        if version >= 14
        else []
    )
    return [
        Case("copy-zero-infer", [f(2, 3, 4), i(0, -1)]),
        Case("flat", [f(2, 3, 4), i(-1)]),
        Case("to-scalar", [f(1), np.array([], np.int64)]),
        *allowzero,
    ]


@cases("Flatten")
def _flatten(version: int) -> list[Case]:
    return [
        Case("default", [f(2, 3, 4)]),
        Case("axis-0", [f(2, 3, 4)], {"axis": 0}),
        Case("negative-axis", [f(2, 3, 4, 5)], {"axis": -1}),
        Case("empty", [np.zeros((0, 3, 2), np.float32)]),
    ]


@cases("Transpose")
def _transpose(version: int) -> list[Case]:
    return [Case("reverse", [f(2, 3, 4)]), Case("nhwc", [f(2, 3, 4, 5)], {"perm": [0, 2, 3, 1]})]


def _axes_case(name: str, x: np.ndarray, axes: list[int], version: int, since: int) -> Case:
    """Axes as an attribute before `since`, as an input from it on."""
    if version >= since:
        return Case(name, [x, i(*axes)])
    return Case(name, [x], {"axes": axes})


@cases("Squeeze")
def _squeeze(version: int) -> list[Case]:
    x = f(2, 1, 3, 1)
    return [
        _axes_case("axis", x, [1], version, 13),
        _axes_case("negative-axes", x, [-1, 1], version, 13),
        Case("all", [x]),
    ]


@cases("Unsqueeze")
def _unsqueeze(version: int) -> list[Case]:
    return [
        _axes_case("front", f(2, 3), [0], version, 13),
        _axes_case("negative", f(2, 3), [-1], version, 13),
        _axes_case("two", f(2, 3), [1, 3], version, 13),
        _axes_case("scalar", scalar(4), [0], version, 13),
    ]


@cases("Concat")
def _concat(version: int) -> list[Case]:
    return [
        Case("axis-1", [f(2, 3), f(2, 1, seed=1)], {"axis": 1}),
        Case("negative-axis", [f(2, 3, 1), f(2, 3, 2, seed=1), f(2, 3, 1, seed=2)], {"axis": -1}),
        Case("with-empty", [f(2, 3), np.zeros((2, 0), np.float32)], {"axis": 1}),
        Case("shape-vectors", [i(2), i(-1, 7)], {"axis": 0}),
    ]


@cases("Split")
def _split(version: int) -> list[Case]:
    x = f(2, 6)
    if version == 11:
        sized = Case("sizes", [x], {"axis": 1, "split": [2, 4]}, outputs=2)
    else:
        sized = Case("sizes", [x, i(2, 4)], {"axis": 1}, outputs=2)
    if version >= 18:
        equal = Case("num-outputs-uneven", [f(7, 2)], {"num_outputs": 3}, outputs=3)
    else:
        equal = Case("equal", [x], {"axis": -1}, outputs=3)
    return [sized, equal]


@cases("Slice")
def _slice(version: int) -> list[Case]:
    x = f(4, 5, 6)
    return [
        Case("basic", [x, i(1), i(3)]),
        Case("negative-axes-starts", [x, i(-3, 1), i(INT64_MAX, -1), i(-1, 0)]),
        Case("step-2", [x, i(0), i(6), i(2), i(2)]),
        Case("reverse", [x, i(-1), i(-INT64_MAX), i(1), i(-1)]),
        Case("empty", [x, i(3), i(1), i(0)]),
        Case("clamped", [x, i(-100), i(100), i(2)]),
    ]


@cases("Gather")
def _gather(version: int) -> list[Case]:
    x = f(3, 4, 5)
    return [
        Case("0d-index", [i(2, 28, 28), scalar(0)]),
        Case("0d-negative-index", [x, scalar(-1)], {"axis": 1}),
        Case("negative-indices", [x, i(-1, 0, 2)], {"axis": 1}),
        Case("2d-indices-negative-axis", [x, i(0, 4, 1, 1).reshape(2, 2)], {"axis": -1}),
        Case("empty-indices", [x, np.zeros((0,), np.int64)]),
    ]


@cases("Expand")
def _expand(version: int) -> list[Case]:
    return [
        Case("broadcast", [f(3, 1), i(2, 3, 4)]),
        Case("smaller-target", [f(2, 3, 1), i(3, 1)]),
        Case("batch-of-tokens", [f(1, 1, 8), i(4, 1, 1)]),
    ]


@cases("ConstantOfShape")
def _constant_of_shape(version: int) -> list[Case]:
    value = numpy_helper.from_array(np.array([1.5], np.float32))
    integer = numpy_helper.from_array(np.array([7], np.int64))
    return [
        Case("default", [i(2, 3)]),
        Case("float", [i(2, 3)], {"value": value}),
        Case("int", [i(4)], {"value": integer}),
        Case("empty", [i(0, 3)], {"value": value}),
    ]


@cases("Cast")
def _cast(version: int) -> list[Case]:
    x = np.array([-2.7, -0.5, 0.0, 0.5, 2.7], np.float32)
    return [
        Case("float-to-int", [x], {"to": TensorProto.INT64}),
        Case("int-to-float", [i(-3, 0, 5)], {"to": TensorProto.FLOAT}),
        Case("float-to-bool", [x], {"to": TensorProto.BOOL}),
        Case("bool-to-float", [np.array([True, False])], {"to": TensorProto.FLOAT}),
        Case("float-to-float16", [f(3, 4)], {"to": TensorProto.FLOAT16}, rtol=1e-3),
    ]


@cases("Range")
def _range(version: int) -> list[Case]:
    return [
        Case("int", [scalar(0), scalar(10), scalar(3)]),
        Case("float", [scalar(1.0), scalar(2.0), scalar(0.25)]),
        Case("negative-step", [scalar(5), scalar(-1), scalar(-2)]),
        Case("empty", [scalar(5), scalar(1), scalar(1)]),
    ]


@cases("Pad")
def _pad(version: int) -> list[Case]:
    x = f(1, 2, 4, 5)
    padded = [
        Case("constant-value", [x, i(0, 0, 1, 2, 0, 0, 2, 1), scalar(0.5)]),
        Case("crop", [x, i(0, 0, -1, 0, 0, 0, 0, -2)]),
        Case("reflect", [x, i(0, 0, 1, 2, 0, 0, 2, 1)], {"mode": "reflect"}),
        Case("edge", [x, i(0, 0, 1, 0, 0, 0, 2, 3)], {"mode": "edge"}),
    ]
    if version >= 18:
        padded.append(Case("axes-input", [x, i(1, 2, 3, 0), None, i(-1, 2)]))
    if version >= 19:
        padded.append(Case("wrap", [x, i(0, 0, 1, 2, 0, 0, 2, 1)], {"mode": "wrap"}))
    return padded


def _reductions(axes_input_since: int) -> Cases:
    """ReduceSum took its axes as an input from version 13, the others from 18."""

    def make(version: int) -> list[Case]:
        x = f(2, 3, 4)
        empty_axes = (
            [Case("noop-empty-axes", [x], {"noop_with_empty_axes": 1})]
            if version >= axes_input_since
            else []
        )
        return [
            _axes_case("axis", x, [1], version, axes_input_since),
            _axes_case("negative-axes-no-keepdims", x, [-1, 0], version, axes_input_since)
            if version < axes_input_since
            else Case("negative-axes-no-keepdims", [x, i(-1, 0)], {"keepdims": 0}),
            Case("all", [x], {"keepdims": 0}),
            *empty_axes,
        ]

    return make


CASES["ReduceSum"] = _reductions(13)
for _reduction in ("ReduceMean", "ReduceMax", "ReduceMin"):
    CASES[_reduction] = _reductions(18)


# -- running both --------------------------------------------------------------------------


def opset_of(op_type: str, version: int) -> int:
    """The lowest accepted opset at which `op_type` has `version`."""
    return next(
        o for o in range(MIN_OPSET, MAX_OPSET + 1) if operator_version(op_type, o) == version
    )


def all_cases() -> list[Any]:
    params = []
    for op_type, versions in registered_versions().items():
        for version in versions:
            for case in CASES[op_type](version):
                params.append(
                    pytest.param(op_type, version, case, id=f"{op_type}-v{version}-{case.name}")
                )
    return params


def single_node_model(
    op_type: str, opset: int, case: Case
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    names = ["" if value is None else f"in{k}" for k, value in enumerate(case.inputs)]
    outputs = [f"out{k}" for k in range(case.outputs)]
    node = helper.make_node(op_type, names, outputs, **case.attrs)
    feeds = {name: value for name, value in zip(names, case.inputs, strict=True) if name}
    graph = helper.make_graph(
        [node],
        "conformance",
        [
            helper.make_tensor_value_info(
                name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape
            )
            for name, value in feeds.items()
        ],
        [helper.make_value_info(name, onnx.TypeProto()) for name in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return model, feeds


def run_ours(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], grad: bool
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    node = model.graph.node[0]
    _, run = lookup(node.op_type, model.opset_import[0].version)
    tensors = {
        name: to_tensor(numpy_helper.from_array(value, name)) for name, value in feeds.items()
    }
    first_float = next((t for t in tensors.values() if t.is_floating_point()), None)
    if grad and first_float is not None:
        first_float.requires_grad_(True)
    args = [tensors[name] if name else None for name in node.input]
    return run(args, node_attributes(node)), first_float


# onnx's reference runs BatchNormalization-9 with the schema's default momentum, mixing in the
# batch's statistics; exporters emit version 9 for eval-mode models and runtimes run it as
# inference, which is version 14 with training_mode=0.
REFERENCE_VERSION = {("BatchNormalization", 9): 14}
# Cases the reference implementation gets wrong or cannot run (onnx 1.23): onnxruntime is the
# oracle there instead.
REFERENCE_GAPS = {
    ("ConvTranspose", "grouped"): "ignores group",
    ("Flatten", "empty"): "cannot reshape a 0-size tensor",
    ("GlobalMaxPool", "3d"): "drops the channel axis",
    ("Softmax", "default-axis"): "version 11 is not coerced to 2-D",
    ("Softmax", "axis-1"): "version 11 is not coerced to 2-D",
    ("Softmax", "negative-axis"): "version 11 is not coerced to 2-D",
    ("LogSoftmax", "default-axis"): "version 11 is not coerced to 2-D",
    ("LogSoftmax", "axis-1"): "version 11 is not coerced to 2-D",
    ("LogSoftmax", "negative-axis"): "version 11 is not coerced to 2-D",
    ("MaxPool", "asymmetric-pads"): "misreads asymmetric pads",
    ("Mean", "three"): "broadcasts in place into the first input",
    ("Pad", "crop"): "refuses negative pads",
    ("Softsign", "0d"): "fails on a 0-d input",
}


def expected_outputs(
    op_type: str, version: int, case: Case, feeds: dict[str, np.ndarray]
) -> list[np.ndarray]:
    opset = opset_of(op_type, REFERENCE_VERSION.get((op_type, version), version))
    model, _ = single_node_model(op_type, opset, case)
    if (op_type, case.name) not in REFERENCE_GAPS:
        return list(ReferenceEvaluator(model).run(None, feeds))
    import onnxruntime  # the test-only oracle

    for output in model.graph.output:
        output.type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return list(session.run(None, feeds))


@pytest.mark.parametrize(("op_type", "version", "case"), all_cases())
def test_operator_matches_the_onnx_reference(op_type: str, version: int, case: Case) -> None:
    opset = opset_of(op_type, version)
    model, feeds = single_node_model(op_type, opset, case)
    expected = expected_outputs(op_type, version, case, feeds)
    assert lookup(op_type, opset)[0] == version
    results, data = run_ours(model, feeds, grad=op_type not in NOT_DIFFERENTIABLE)
    assert len(results) >= case.outputs
    for ours, theirs in zip(results, expected, strict=False):
        theirs = np.asarray(theirs)
        assert tuple(ours.shape) == theirs.shape, f"shape {tuple(ours.shape)} != {theirs.shape}"
        if theirs.dtype == np.bool_:
            assert ours.dtype == torch.bool
            assert np.array_equal(ours.numpy(), theirs)
        elif np.issubdtype(theirs.dtype, np.integer):
            assert not ours.is_floating_point()
            assert np.array_equal(ours.numpy(), theirs)
        else:
            assert ours.is_floating_point()
            np.testing.assert_allclose(
                ours.detach().numpy(),
                theirs.astype(np.float32),
                rtol=case.rtol,
                atol=case.rtol / 10,
            )
    output = results[0]
    if (
        data is None
        or not data.requires_grad
        or not output.is_floating_point()
        or output.numel() == 0
        or data.numel() == 0
    ):
        return
    weights = torch.rand(output.shape, generator=torch.Generator().manual_seed(0))
    (output * weights).sum().backward()
    assert data.grad is not None, "no gradient reaches the input"
    assert torch.isfinite(data.grad).all()
    assert data.grad.abs().sum() > 0, "the gradient is zero everywhere"


def test_registry_covers_every_version_of_every_allowlisted_operator() -> None:
    """Each operator's version at each accepted opset is registered, and nothing more."""
    for op_type, versions in registered_versions().items():
        in_effect = {
            operator_version(op_type, opset) for opset in range(MIN_OPSET, MAX_OPSET + 1)
        } - {None}
        assert set(versions) == in_effect, op_type
        assert op_type in CASES, f"{op_type} has no conformance cases"
