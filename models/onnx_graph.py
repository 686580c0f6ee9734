"""A small ONNX → PyTorch interpreter, so gradients flow from logits back to the input.

`OnnxGraphModule` runs an ONNX graph node by node with torch ops. Only the operators in
`SUPPORTED_OPS` are accepted: what `torch.onnx.export` produces for CNN, MLP and ResNet-style
classifiers (both the dynamo exporter, opset 18+, and the TorchScript one), plus the shape
arithmetic around them. Everything is checked before a single op runs (`validate_model`):
no external data, no sparse or non-default-domain content, one image input, one output, a
topologically sorted graph of bounded size. `onnx.load` is never called: bytes are parsed with
`ModelProto.ParseFromString`, which never touches the file system.

Features for the diversity losses: the input of the last Gemm/MatMul node, else the logits.
A graph that ends in Softmax returns probabilities: its logits are read before that Softmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional as F

from models.contracts.classifier import ClassifierRejected

__all__ = ["MAX_NODES", "SUPPORTED_OPS", "OnnxGraphModule", "parse_model", "validate_model"]

MAX_NODES = 20_000
MAX_PARAMETERS = 200_000_000  # float values over all initializers and constants
MAX_CREATED_VALUES = 50_000_000  # elements one ConstantOfShape/Expand may create
MIN_OPSET, MAX_OPSET = 7, 23
DEFAULT_DOMAINS = ("", "ai.onnx")

Tensor = torch.Tensor
OpFn = Callable[[list[Tensor | None], dict[str, Any], int], list[Tensor]]

_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float32,  # computed in float32
    onnx.TensorProto.BFLOAT16: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int64,
    onnx.TensorProto.INT16: torch.int64,
    onnx.TensorProto.INT8: torch.int64,
    onnx.TensorProto.UINT8: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
}


def parse_model(data: bytes) -> onnx.ModelProto:
    """Bytes → ModelProto, without ever resolving external data."""
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # protobuf raises DecodeError (and others on garbage)
        raise ClassifierRejected(
            f"this is not a valid ONNX file ({type(error).__name__}): export the model with "
            "torch.onnx.export and upload the single .onnx file"
        ) from None
    if not model.graph.node:
        raise ClassifierRejected("the ONNX file has an empty graph: export the whole model")
    return model


def _tensor_problem(tensor: onnx.TensorProto) -> str | None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = f" (location {location!r})" if location else ""
        return (
            f"tensor {tensor.name!r} keeps its data outside the file{where}: external data "
            "is refused; export with all weights inside one .onnx file (under 2 GB)"
        )
    if tensor.data_type not in _DTYPES:
        return f"tensor {tensor.name!r} has unsupported element type {tensor.data_type}"
    return None


def _graph_tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                tensors.append(attribute.t)
            elif attribute.type == onnx.AttributeProto.TENSORS:
                tensors.extend(attribute.tensors)
    return tensors


def validate_model(model: onnx.ModelProto, input_shape: Sequence[int] | None = None) -> None:
    """Refuse anything the interpreter will not run safely; message says what to do."""
    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    for domain in opsets:
        if domain not in DEFAULT_DOMAINS:
            raise ClassifierRejected(
                f"ONNX operator domain {domain!r} is not supported: only the standard ONNX "
                "operators (default domain) can be converted"
            )
    opset = opsets.get("", opsets.get("ai.onnx", 0))
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ClassifierRejected(
            f"ONNX opset {opset} is not supported: export with opset {MIN_OPSET}..{MAX_OPSET}"
        )
    if len(model.functions) > 0:
        raise ClassifierRejected(
            "ONNX local functions are not supported: export with the functions inlined"
        )
    if len(graph.sparse_initializer) > 0:
        raise ClassifierRejected("sparse ONNX initializers are not supported")
    if len(graph.node) > MAX_NODES:
        raise ClassifierRejected(f"the ONNX graph has {len(graph.node)} nodes: at most {MAX_NODES}")
    total = 0
    for tensor in _graph_tensors(graph):
        problem = _tensor_problem(tensor)
        if problem:
            raise ClassifierRejected(problem)
        total += math.prod(tensor.dims)
    if total > MAX_PARAMETERS:
        raise ClassifierRejected(
            f"the ONNX model holds {total:,} values: at most {MAX_PARAMETERS:,} are accepted"
        )
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ClassifierRejected(
            f"the ONNX model has {len(inputs)} inputs: it must take exactly one image batch"
        )
    if len(graph.output) != 1:
        raise ClassifierRejected(
            f"the ONNX model has {len(graph.output)} outputs: it must return exactly one "
            "(the logits)"
        )
    tensor_type = inputs[0].type.tensor_type
    if tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ClassifierRejected("the ONNX model's input must be float32 images")
    if input_shape is not None and tensor_type.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        expected = [None, *input_shape]
        if len(dims) != 4 or any(
            d is not None and i > 0 and d != e
            for i, (d, e) in enumerate(zip(dims, expected, strict=False))
        ):
            shown = "x".join("?" if d is None else str(d) for d in dims)
            declared = "x".join(str(d) for d in input_shape)
            raise ClassifierRejected(
                f"the ONNX model expects input {shown}, but {declared} (CxHxW) was declared: "
                "declare the shape the model was exported with"
            )
    known = set(initializers) | {inputs[0].name, ""}
    for node in graph.node:
        if node.domain not in DEFAULT_DOMAINS:
            raise ClassifierRejected(
                f"ONNX operator {node.domain}::{node.op_type} is not supported: only standard "
                "operators can be converted"
            )
        if node.op_type not in SUPPORTED_OPS:
            raise ClassifierRejected(
                f"ONNX operator {node.op_type} is not supported (supported: "
                f"{', '.join(sorted(SUPPORTED_OPS))})"
            )
        for attribute in node.attribute:
            if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ClassifierRejected(f"ONNX subgraphs ({node.op_type}) are not supported")
        for name in node.input:
            if name not in known:
                raise ClassifierRejected(
                    f"the ONNX graph uses {name!r} before it is computed: export a "
                    "topologically sorted graph"
                )
        known.update(node.output)
    if graph.output[0].name not in known:
        raise ClassifierRejected("the ONNX graph's output is never computed")


def _to_tensor(proto: onnx.TensorProto) -> Tensor:
    array = numpy_helper.to_array(proto)  # validated: never external data
    dtype = _DTYPES[proto.data_type]
    if dtype == torch.float32:
        array = array.astype(np.float32)
    elif dtype == torch.int64:
        array = array.astype(np.int64)
    return torch.from_numpy(np.array(array, copy=True)).to(dtype)


class OnnxGraphModule(nn.Module):
    """Runs a validated ONNX graph with torch ops; `forward_with_features` for the losses."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        opsets = {o.domain: o.version for o in model.opset_import}
        self.opset = opsets.get("", opsets.get("ai.onnx", MIN_OPSET))
        self._slots: dict[str, str] = {}  # ONNX value name → buffer name
        for index, tensor in enumerate(graph.initializer):
            self._add_constant(f"init_{index}", tensor.name, _to_tensor(tensor))
        initializers = {t.name for t in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in initializers)
        self.output_name = graph.output[0].name
        self.nodes: list[tuple[str, list[str], list[str], dict[str, Any]]] = []
        for index, node in enumerate(graph.node):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                self._add_constant(f"const_{index}", node.output[0], _constant_value(attrs))
                continue
            self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.ends_in_softmax = False
        producer = {out: n for n in self.nodes for out in n[2]}
        last = producer.get(self.output_name)
        while last is not None and last[0] == "Identity":
            last = producer.get(last[1][0])
        if last is not None and last[0] == "Softmax":
            # A graph that returns probabilities: its logits are the input of that Softmax
            # (softmax of probabilities would flatten every confidence towards 1/K).
            self.output_name = last[1][0]
            self.ends_in_softmax = True
        matmuls = [n for n in self.nodes if n[0] in ("Gemm", "MatMul")]
        self.feature_name = matmuls[-1][1][0] if matmuls else self.output_name

    def _add_constant(self, slot: str, name: str, value: Tensor) -> None:
        self.register_buffer(slot, value)
        self._slots[name] = slot

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        values: dict[str, Tensor] = {
            name: getattr(self, slot) for name, slot in self._slots.items()
        }
        values[self.input_name] = x
        for op_type, inputs, outputs, attrs in self.nodes:
            args = [values[name] if name else None for name in inputs]
            results = OPS[op_type](args, attrs, self.opset)
            for name, result in zip(outputs, results, strict=False):
                if name:
                    values[name] = result
        logits = values[self.output_name]
        if logits.dim() > 2:
            logits = logits.flatten(1)
        return logits, values[self.feature_name]


def _constant_value(attrs: dict[str, Any]) -> Tensor:
    if "value" in attrs:
        return _to_tensor(attrs["value"])
    if "value_float" in attrs:
        return torch.tensor(float(attrs["value_float"]), dtype=torch.float32)
    if "value_floats" in attrs:
        return torch.tensor([float(v) for v in attrs["value_floats"]], dtype=torch.float32)
    if "value_int" in attrs:
        return torch.tensor(int(attrs["value_int"]), dtype=torch.int64)
    if "value_ints" in attrs:
        return torch.tensor([int(v) for v in attrs["value_ints"]], dtype=torch.int64)
    raise ClassifierRejected("unsupported ONNX Constant (sparse or string values)")


# ---------------------------------------------------------------------------------------
# Operators. Each takes (inputs, attributes, opset) and returns a list of outputs.

OPS: dict[str, OpFn] = {}


def _op(*names: str) -> Callable[[OpFn], OpFn]:
    def decorate(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return decorate


def _req(args: list[Tensor | None], index: int) -> Tensor:
    value = args[index] if index < len(args) else None
    if value is None:
        raise ClassifierRejected(f"missing required ONNX operator input #{index}")
    return value


def _check_created(shape: Sequence[int]) -> None:
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_CREATED_VALUES:
        raise ClassifierRejected(
            f"the ONNX graph creates a tensor of shape {list(shape)}: too large or invalid"
        )


def _ints(value: Tensor | None) -> list[int]:
    return [] if value is None else [int(v) for v in value.flatten().tolist()]


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    return lambda args, attrs, opset: [fn(_req(args, 0))]


for _name, _fn in {
    "Identity": lambda x: x,
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Reciprocal": torch.reciprocal,
    "Erf": torch.erf,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Softplus": F.softplus,
    "Softsign": F.softsign,
    "HardSwish": F.hardswish,
    "Mish": F.mish,
    "Not": torch.logical_not,
}.items():
    OPS[_name] = _unary(_fn)


@_op("Dropout")
def _dropout(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    return [x, torch.ones_like(x, dtype=torch.bool)]  # inference: identity (mask all kept)


def _arith(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda args, attrs, opset: [fn(_req(args, 0), _req(args, 1))]


def _div(a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


OPS.update(
    {
        "Add": _arith(torch.add),
        "Sub": _arith(torch.sub),
        "Mul": _arith(torch.mul),
        "Div": _arith(_div),
        "Pow": _arith(lambda a, b: torch.pow(a, b.to(a.dtype) if a.is_floating_point() else b)),
        "Equal": _arith(torch.eq),
        "Less": _arith(torch.lt),
        "Greater": _arith(torch.gt),
        "Where": lambda args, attrs, opset: [
            torch.where(_req(args, 0), _req(args, 1), _req(args, 2))
        ],
    }
)


def _fold(fn: Callable[[Tensor, Tensor], Tensor], mean: bool = False) -> OpFn:
    def run(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
        values = [a for a in args if a is not None]
        result = values[0]
        for value in values[1:]:
            result = fn(result, value)
        return [result / len(values) if mean else result]

    return run


OPS.update(
    {
        "Min": _fold(torch.minimum),
        "Max": _fold(torch.maximum),
        "Sum": _fold(torch.add),
        "Mean": _fold(torch.add, mean=True),
    }
)


@_op("LeakyRelu")
def _leaky_relu(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    return [F.leaky_relu(_req(args, 0), float(attrs.get("alpha", 0.01)))]


@_op("PRelu")
def _prelu(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, slope = _req(args, 0), _req(args, 1)
    return [torch.where(x >= 0, x, x * slope)]


@_op("Elu")
def _elu(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    return [F.elu(_req(args, 0), float(attrs.get("alpha", 1.0)))]


@_op("Selu")
def _selu(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    alpha = float(attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(attrs.get("gamma", 1.05070102214813232421875))
    x = _req(args, 0)
    return [gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))]


@_op("HardSigmoid")
def _hard_sigmoid(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return [torch.clamp(alpha * _req(args, 0) + beta, 0.0, 1.0)]


@_op("Gelu")
def _gelu(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    approximate = attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else str(approximate)
    return [F.gelu(_req(args, 0), approximate="tanh" if approximate == "tanh" else "none")]


def _softmax_like(fn: Callable[..., Tensor]) -> OpFn:
    def run(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
        x = _req(args, 0)
        if opset >= 13:
            return [fn(x, dim=int(attrs.get("axis", -1)))]
        axis = int(attrs.get("axis", 1)) % max(x.dim(), 1)  # old semantics: coerce to 2-D
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        return [fn(flat, dim=1).reshape(x.shape)]

    return run


OPS["Softmax"] = _softmax_like(F.softmax)
OPS["LogSoftmax"] = _softmax_like(F.log_softmax)


@_op("Clip")
def _clip(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    if opset < 11:
        return [
            torch.clamp(x, float(attrs.get("min", -math.inf)), float(attrs.get("max", math.inf)))
        ]
    low = args[1] if len(args) > 1 else None
    high = args[2] if len(args) > 2 else None
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))
    return [x]


@_op("MatMul")
def _matmul(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    return [torch.matmul(_req(args, 0), _req(args, 1))]


@_op("Gemm")
def _gemm(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    a, b = _req(args, 0), _req(args, 1)
    if attrs.get("transA", 0):
        a = a.T
    if attrs.get("transB", 0):
        b = b.T
    out = float(attrs.get("alpha", 1.0)) * (a @ b)
    c = args[2] if len(args) > 2 else None
    if c is not None:
        out = out + float(attrs.get("beta", 1.0)) * c
    return [out]


def _spatial_padding(
    attrs: dict[str, Any],
    spatial: int,
    kernel: Sequence[int],
    dilations: Sequence[int],
    strides: Sequence[int],
    in_sizes: Sequence[int],
) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] (explicit or from auto_pad)."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, d, s in zip(in_sizes, kernel, dilations, strides, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        return begins + ends
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    pads = list(attrs.get("pads", [0] * (2 * spatial)))
    return [int(p) for p in pads]


def _apply_pads(x: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Symmetric pads are returned for the op; asymmetric ones are applied with F.pad."""
    spatial = len(pads) // 2
    begins, ends = pads[:spatial], pads[spatial:]
    if begins == ends:
        return x, begins
    torch_pads: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends), strict=True):
        torch_pads += [b, e]
    return F.pad(x, torch_pads, value=value), [0] * spatial


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@_op("Conv")
def _conv(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, weight = _req(args, 0), _req(args, 1)
    bias = args[2] if len(args) > 2 else None
    spatial = weight.dim() - 2
    if spatial not in _CONV:
        raise ClassifierRejected(f"ONNX Conv with {spatial} spatial dimensions is not supported")
    kernel = list(attrs.get("kernel_shape", weight.shape[2:]))
    strides = list(attrs.get("strides", [1] * spatial))
    dilations = list(attrs.get("dilations", [1] * spatial))
    pads = _spatial_padding(attrs, spatial, kernel, dilations, strides, list(x.shape[2:]))
    x, padding = _apply_pads(x, pads)
    return [
        _CONV[spatial](
            x,
            weight,
            bias,
            stride=strides,
            padding=padding,
            dilation=dilations,
            groups=int(attrs.get("group", 1)),
        )
    ]


@_op("ConvTranspose")
def _conv_transpose(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, weight = _req(args, 0), _req(args, 1)
    bias = args[2] if len(args) > 2 else None
    spatial = weight.dim() - 2
    if spatial not in _CONV_T or "output_shape" in attrs:
        raise ClassifierRejected("this ONNX ConvTranspose form is not supported")
    pads = [int(p) for p in attrs.get("pads", [0] * (2 * spatial))]
    if pads[:spatial] != pads[spatial:]:
        raise ClassifierRejected("ONNX ConvTranspose with asymmetric pads is not supported")
    return [
        _CONV_T[spatial](
            x,
            weight,
            bias,
            stride=list(attrs.get("strides", [1] * spatial)),
            padding=pads[:spatial],
            output_padding=list(attrs.get("output_padding", [0] * spatial)),
            groups=int(attrs.get("group", 1)),
            dilation=list(attrs.get("dilations", [1] * spatial)),
        )
    ]


def _pool_op(kind: str) -> OpFn:
    def run(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
        x = _req(args, 0)
        kernel = [int(k) for k in attrs["kernel_shape"]]
        spatial = len(kernel)
        if spatial != 2 and spatial != 1:
            raise ClassifierRejected(f"ONNX {kind} over {spatial} dimensions is not supported")
        strides = list(attrs.get("strides", [1] * spatial))
        dilations = list(attrs.get("dilations", [1] * spatial))
        pads = _spatial_padding(attrs, spatial, kernel, dilations, strides, list(x.shape[2:]))
        ceil_mode = bool(attrs.get("ceil_mode", 0))
        if kind == "MaxPool":
            x, padding = _apply_pads(x, pads, value=-math.inf)
            pool = F.max_pool2d if spatial == 2 else F.max_pool1d
            return [pool(x, kernel, strides, padding, dilations, ceil_mode=ceil_mode)]
        if any(d != 1 for d in dilations):
            raise ClassifierRejected("dilated ONNX AveragePool is not supported")
        include = bool(attrs.get("count_include_pad", 0))
        if pads[:spatial] != pads[spatial:]:
            if not include:
                raise ClassifierRejected("asymmetric ONNX AveragePool padding is not supported")
            x, padding = _apply_pads(x, pads)
        else:
            padding = pads[:spatial]
        avg = F.avg_pool2d if spatial == 2 else F.avg_pool1d
        return [avg(x, kernel, strides, padding, ceil_mode=ceil_mode, count_include_pad=include)]

    return run


OPS["MaxPool"] = _pool_op("MaxPool")
OPS["AveragePool"] = _pool_op("AveragePool")


@_op("GlobalAveragePool")
def _global_avg(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]


@_op("GlobalMaxPool")
def _global_max(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    return [x.flatten(2).amax(dim=2).reshape(*x.shape[:2], *([1] * (x.dim() - 2)))]


@_op("BatchNormalization")
def _batch_norm(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    if attrs.get("training_mode", 0):
        raise ClassifierRejected("ONNX BatchNormalization in training mode is not supported")
    x, scale, bias, mean, var = (_req(args, i) for i in range(5))
    return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(attrs.get("epsilon", 1e-5)))]


@_op("InstanceNormalization")
def _instance_norm(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, scale, bias = (_req(args, i) for i in range(3))
    return [F.instance_norm(x, weight=scale, bias=bias, eps=float(attrs.get("epsilon", 1e-5)))]


@_op("LayerNormalization")
def _layer_norm(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, scale = _req(args, 0), _req(args, 1)
    bias = args[2] if len(args) > 2 else None
    axis = int(attrs.get("axis", -1)) % x.dim()
    shape = list(x.shape[axis:])
    return [
        F.layer_norm(
            x,
            shape,
            scale.expand(shape),
            None if bias is None else bias.expand(shape),
            float(attrs.get("epsilon", 1e-5)),
        )
    ]


@_op("Flatten")
def _flatten(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    axis = int(attrs.get("axis", 1)) % (x.dim() + 1) if x.dim() else 0
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@_op("Reshape")
def _reshape(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    shape = _ints(_req(args, 1))
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


@_op("Transpose")
def _transpose(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    perm = attrs.get("perm", list(reversed(range(x.dim()))))
    return [x.permute(*[int(p) for p in perm])]


def _axes(args: list[Tensor | None], attrs: dict[str, Any], index: int) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    value = args[index] if len(args) > index else None
    return None if value is None else _ints(value)


@_op("Squeeze")
def _squeeze(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    axes = _axes(args, attrs, 1)
    if axes is None:
        return [x.squeeze()]
    return [x.squeeze(tuple(a % x.dim() for a in axes))]


@_op("Unsqueeze")
def _unsqueeze(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    axes = _axes(args, attrs, 1) or []
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return [x]


@_op("Concat")
def _concat(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    values = [a for a in args if a is not None]
    dtype = torch.promote_types(values[0].dtype, values[-1].dtype)
    return [torch.cat([v.to(dtype) for v in values], dim=int(attrs["axis"]))]


@_op("Shape")
def _shape(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    dims = list(x.shape)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    dims = dims[start:] if end is None else dims[start : int(end)]
    return [torch.tensor(dims, dtype=torch.int64, device=x.device)]


@_op("Size")
def _size(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    return [torch.tensor(x.numel(), dtype=torch.int64, device=x.device)]


@_op("Gather")
def _gather(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, index = _req(args, 0), _req(args, 1).long()
    axis = int(attrs.get("axis", 0)) % x.dim()
    index = torch.where(index < 0, index + x.shape[axis], index)
    out = torch.index_select(x, axis, index.flatten())
    return [out.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1 :])]


@_op("ConstantOfShape")
def _constant_of_shape(
    args: list[Tensor | None], attrs: dict[str, Any], opset: int
) -> list[Tensor]:
    shape = _ints(_req(args, 0))
    _check_created(shape)
    fill = _to_tensor(attrs["value"]) if "value" in attrs else torch.zeros(1)
    return [
        torch.full(shape, fill.flatten()[0].item(), dtype=fill.dtype, device=_req(args, 0).device)
    ]


@_op("Cast")
def _cast(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    to = int(attrs["to"])
    if to not in _DTYPES:
        raise ClassifierRejected(f"ONNX Cast to element type {to} is not supported")
    return [_req(args, 0).to(_DTYPES[to])]


@_op("Slice")
def _slice(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    if opset < 10:
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes = list(attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(_req(args, 1)), _ints(_req(args, 2))
        axes_arg = args[3] if len(args) > 3 else None
        steps_arg = args[4] if len(args) > 4 else None
        axes = _ints(axes_arg) if axes_arg is not None else list(range(len(starts)))
        steps = _ints(steps_arg) if steps_arg is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step == 0:
            raise ClassifierRejected("ONNX Slice with step 0 is invalid")
        axis %= x.dim()
        size = x.shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if step > 0:
            start, end = max(0, min(size, start)), max(0, min(size, end))
        else:  # ONNX clamps to [0, size-1] and [-1, size-1] when stepping backwards
            start, end = max(-1, min(size - 1, start)), max(-1, min(size - 1, end))
        indices = torch.arange(start, end, step, device=x.device)
        x = torch.index_select(x, axis, indices)
    return [x]


@_op("Expand")
def _expand(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x, shape = _req(args, 0), _ints(_req(args, 1))
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))
    _check_created(list(target))
    return [x.expand(target)]


def _reduce(fn: Callable[..., Tensor], axes_input_from: int) -> OpFn:
    def run(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
        x = _req(args, 0)
        keepdims = bool(attrs.get("keepdims", 1))
        axes = [int(a) for a in attrs["axes"]] if "axes" in attrs else None
        if axes is None and opset >= axes_input_from and len(args) > 1 and args[1] is not None:
            axes = _ints(args[1])
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return [x]
            axes = list(range(x.dim()))
        return [fn(x, dim=tuple(a % x.dim() for a in axes), keepdim=keepdims)]

    return run


OPS["ReduceMean"] = _reduce(torch.mean, 18)
OPS["ReduceSum"] = _reduce(torch.sum, 13)
OPS["ReduceMax"] = _reduce(torch.amax, 18)
OPS["ReduceMin"] = _reduce(torch.amin, 18)


@_op("Pad")
def _pad(args: list[Tensor | None], attrs: dict[str, Any], opset: int) -> list[Tensor]:
    x = _req(args, 0)
    mode = attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if opset < 11:
        pads = [int(p) for p in attrs["pads"]]
        value = float(attrs.get("value", 0.0))
        axes = list(range(x.dim()))
    else:
        pads = _ints(_req(args, 1))
        constant = args[2] if len(args) > 2 else None
        value = float(constant.item()) if constant is not None and constant.numel() else 0.0
        axes_arg = args[3] if len(args) > 3 else None
        axes = (
            [a % x.dim() for a in _ints(axes_arg)] if axes_arg is not None else list(range(x.dim()))
        )
    half = len(pads) // 2
    begin = dict(zip(axes, pads[:half], strict=True))
    end = dict(zip(axes, pads[half:], strict=True))
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):
        torch_pads += [begin.get(axis, 0), end.get(axis, 0)]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # reflect/replicate need pads on trailing dims only
    if mode == "constant":
        return [F.pad(x, torch_pads, value=value)]
    if mode in ("reflect", "edge"):
        return [F.pad(x, torch_pads, mode="reflect" if mode == "reflect" else "replicate")]
    raise ClassifierRejected(f"ONNX Pad mode {mode!r} is not supported")


SUPPORTED_OPS = frozenset(OPS) | {"Constant"}
