"""Parse, validate and run an uploaded ONNX graph with torch ops.

Everything is checked before a single operator runs (`validate_model`): no external data, no
sparse or non-default-domain content, no local functions or subgraphs, one image input, one
output, a topologically sorted graph of bounded size, and every node resolved in the operator
registry at the model's opset. `onnx.load` is never called: bytes are parsed with
`ModelProto.ParseFromString`, which never touches the file system.

At run time a node that fails raises `OnnxNodeFailed`, which names the node, its operator and
the model's opset, and says what the real cause was, so a refusal never blames the declared
input shape for an interpreter or export problem.

Features for the diversity losses: the input of the last Gemm/MatMul node, else the logits.
A graph that ends in Softmax returns probabilities: its logits are read before that Softmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import torch
from torch import nn

from models.contracts.classifier import ClassifierRejected
from models.onnx import ops  # noqa: F401  (registers every operator)
from models.onnx.ops.shape import constant_value
from models.onnx.registry import (
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_COUNT,
    Attributes,
    OpFn,
    UnsupportedOperatorForm,
    lookup,
)
from models.onnx.tensors import DTYPES, to_tensor

__all__ = [
    "MAX_NODES",
    "MAX_PARAMETERS",
    "GraphNode",
    "OnnxGraphModule",
    "OnnxNodeFailed",
    "default_opset",
    "graph_input",
    "input_dims",
    "node_attributes",
    "node_label",
    "parse_model",
    "validate_model",
]

MAX_NODES = 20_000
MAX_PARAMETERS = 200_000_000  # float values over all initializers and constants
DEFAULT_DOMAINS = ("", "ai.onnx")
_AXIS_NAMES = ("batch", "channels", "height", "width")

Tensor = torch.Tensor


class OnnxNodeFailed(ClassifierRejected):
    """A node could not run; the message names the node, its operator, the opset and why."""


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


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset for the standard operators (0 when it declares none)."""
    opsets = {o.domain: o.version for o in model.opset_import}
    return int(opsets.get("", opsets.get("ai.onnx", 0)))


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The one graph input that is not an initializer (validated to exist)."""
    initializers = {t.name for t in model.graph.initializer}
    return next(i for i in model.graph.input if i.name not in initializers)


def input_dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """Declared input dimensions (None for a symbolic one), or None without a shape."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def node_label(node: onnx.NodeProto, index: int, opset: int) -> str:
    """How refusals name a node: `node 'name' (OpType, opset N)`."""
    if node.name:
        return f"node {node.name!r} ({node.op_type}, opset {opset})"
    output = next((o for o in node.output if o), "")
    return f"node #{index} ({node.op_type}, opset {opset}, output {output!r})"


def node_attributes(node: onnx.NodeProto) -> Attributes:
    """A node's attributes as Python values, plus how many outputs it declares."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    attrs[OUTPUT_COUNT] = len(node.output)
    return attrs


def _tensor_problem(tensor: onnx.TensorProto) -> str | None:
    if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        where = f" (location {location!r})" if location else ""
        return (
            f"tensor {tensor.name!r} keeps its data outside the file{where}: external data "
            "is refused; export with all weights inside one .onnx file (under 2 GB)"
        )
    if tensor.data_type not in DTYPES:
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
    """Refuse anything the interpreter will not run safely; the message says what to do."""
    graph = model.graph
    for opset_id in model.opset_import:
        if opset_id.domain not in DEFAULT_DOMAINS:
            raise ClassifierRejected(
                f"ONNX operator domain {opset_id.domain!r} is not supported: only the standard "
                "ONNX operators (default domain) can be converted"
            )
    opset = default_opset(model)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ClassifierRejected(
            f"ONNX opset {opset} is not supported: export with opset_version between "
            f"{MIN_OPSET} and {MAX_OPSET}"
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
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise ClassifierRejected("the ONNX model's input must be float32 images")
    if input_shape is not None:
        _check_declared_shape(input_dims(inputs[0]), input_shape)
    _check_nodes(graph, opset, initializers | {inputs[0].name, ""})


def _check_declared_shape(dims: list[int | None] | None, input_shape: Sequence[int]) -> None:
    if dims is None:
        return
    declared = "x".join(str(d) for d in input_shape)
    shown = "x".join("?" if d is None else str(d) for d in dims)
    if len(dims) != 4:
        raise ClassifierRejected(
            f"the ONNX model expects input {shown} ({len(dims)} dimensions), but images of "
            f"{declared} (CxHxW) were declared: the model must take a batch of images "
            "(N, C, H, W)"
        )
    for axis, (found, wanted) in enumerate(zip(dims[1:], input_shape, strict=True), start=1):
        if found is not None and found != wanted:
            raise ClassifierRejected(
                f"the ONNX model expects input {shown}, but {declared} (CxHxW) was declared: "
                f"its {_AXIS_NAMES[axis]} dimension is {found}, not {wanted}; declare the "
                "shape the model was exported with"
            )


def _check_nodes(graph: onnx.GraphProto, opset: int, known: set[str]) -> None:
    unsupported: dict[str, str] = {}  # operator → the first refusal naming its node
    unordered: str | None = None  # the first node that reads a value not yet computed
    for index, node in enumerate(graph.node):
        label = node_label(node, index, opset)
        if node.domain not in DEFAULT_DOMAINS:
            raise ClassifierRejected(
                f"{label}: ONNX operator {node.domain}::{node.op_type} is not supported: only "
                "standard operators can be converted"
            )
        for attribute in node.attribute:
            if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ClassifierRejected(
                    f"{label}: ONNX subgraphs (control flow) are not supported: export a "
                    "model without data-dependent control flow"
                )
        if node.op_type not in unsupported:
            try:
                lookup(node.op_type, opset)
            except ClassifierRejected as error:
                unsupported[node.op_type] = f"{label}: {error}"
        missing = next((name for name in node.input if name not in known), None)
        if missing is not None and unordered is None:
            unordered = (
                f"{label} uses {missing!r} before it is computed: export a topologically "
                "sorted graph"
            )
        known.update(node.output)
    if unsupported:
        first, *others = unsupported.values()
        also = f" (also not supported: {'; '.join(others)})" if others else ""
        raise ClassifierRejected(first + also)
    if unordered is not None:
        raise ClassifierRejected(unordered)
    if graph.output[0].name not in known:
        raise ClassifierRejected("the ONNX graph's output is never computed")


@dataclass(frozen=True)
class GraphNode:
    """One node, resolved to the implementation of its operator version."""

    label: str  # node 'name' (OpType, opset N)
    op_type: str
    version: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Attributes
    run: OpFn


class OnnxGraphModule(nn.Module):
    """Runs a validated ONNX graph with torch ops; `forward_with_features` for the losses.

    `per_image=True` runs a graph whose batch dimension the export fixed at 1 one image at a
    time (see `models.onnx.batch`). `batch_mode` is "dynamic", "rewritten" or "per-image";
    `batch_note` says it in words for `c3 check`.
    """

    def __init__(self, model: onnx.ModelProto, *, per_image: bool = False) -> None:
        super().__init__()
        graph = model.graph
        self.opset = default_opset(model)
        self.per_image = per_image
        self.batch_mode = "per-image" if per_image else "dynamic"
        self.batch_note = "the graph takes any batch size"
        self._slots: dict[str, str] = {}  # ONNX value name → buffer name
        for index, tensor in enumerate(graph.initializer):
            self._add_constant(f"init_{index}", tensor.name, to_tensor(tensor))
        self.input_name = graph_input(model).name
        dims = input_dims(graph_input(model))
        self._open_axes = [
            _AXIS_NAMES[i] for i, d in enumerate(dims or [None] * 4) if d is None and 0 < i < 4
        ]
        self.output_name = graph.output[0].name
        self.nodes: list[GraphNode] = []
        for index, node in enumerate(graph.node):
            label = node_label(node, index, self.opset)
            version, run = lookup(node.op_type, self.opset)
            attrs = node_attributes(node)
            if node.op_type == "Constant":
                try:
                    value = constant_value(attrs)
                except UnsupportedOperatorForm as error:
                    raise OnnxNodeFailed(f"{label}: {error}") from None
                self._add_constant(f"const_{index}", node.output[0], value)
                continue
            self.nodes.append(
                GraphNode(
                    label, node.op_type, version, tuple(node.input), tuple(node.output), attrs, run
                )
            )
        self._consumed = {name for node in self.nodes for name in node.inputs}
        self._consumed.add(self.output_name)
        self.ends_in_softmax = False
        producer = {out: node for node in self.nodes for out in node.outputs}
        last = producer.get(self.output_name)
        while last is not None and last.op_type == "Identity":
            last = producer.get(last.inputs[0])
        if last is not None and last.op_type == "Softmax":
            # A graph that returns probabilities: its logits are the input of that Softmax
            # (softmax of probabilities would flatten every confidence towards 1/K).
            self.output_name = last.inputs[0]
            self.ends_in_softmax = True
        matmuls = [node for node in self.nodes if node.op_type in ("Gemm", "MatMul")]
        self.feature_name = matmuls[-1].inputs[0] if matmuls else self.output_name

    def _add_constant(self, slot: str, name: str, value: Tensor) -> None:
        self.register_buffer(slot, value)
        self._slots[name] = slot

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(n, c, h, w) → (logits (n, K), features (n, ...))."""
        if self.per_image and x.shape[0] != 1:
            runs = [self._run(x[i : i + 1]) for i in range(x.shape[0])]
            return torch.cat([r[0] for r in runs]), torch.cat([r[1] for r in runs])
        return self._run(x)

    def _run(self, x: Tensor) -> tuple[Tensor, Tensor]:
        values: dict[str, Tensor] = {
            name: getattr(self, slot) for name, slot in self._slots.items()
        }
        values[self.input_name] = x
        for node in self.nodes:
            args = [values[name] if name else None for name in node.inputs]
            results = self._run_node(node, args, tuple(x.shape))
            for name, result in zip(node.outputs, results, strict=False):
                if name:
                    values[name] = result
        logits = values[self.output_name]
        if logits.dim() > 2:
            logits = logits.flatten(1)
        return logits, values[self.feature_name]

    def _run_node(
        self, node: GraphNode, args: list[Tensor | None], batch_shape: tuple[int, ...]
    ) -> list[Tensor]:
        try:
            results = node.run(args, node.attrs)
        except (torch.OutOfMemoryError, MemoryError):
            raise  # resources, not the model: the caller decides
        except UnsupportedOperatorForm as error:
            raise OnnxNodeFailed(f"{node.label}: {error}") from error
        except Exception as error:
            shapes = ", ".join(
                "none" if a is None else "x".join(map(str, a.shape)) or "scalar" for a in args
            )
            raise OnnxNodeFailed(
                f"{node.label} fails on inputs of shape [{shapes}] (input batch "
                f"{'x'.join(map(str, batch_shape))}): {type(error).__name__}: {error}"
                f"{self._shape_hint(batch_shape)}"
            ) from error
        for index, name in enumerate(node.outputs[len(results) :], start=len(results)):
            if name in self._consumed:
                raise OnnxNodeFailed(
                    f"{node.label}: output #{index} ({name!r}) is not supported: export "
                    "without it (for MaxPool: without return_indices)"
                )
        return results

    def _shape_hint(self, batch_shape: tuple[int, ...]) -> str:
        if not self._open_axes:
            return (
                ". The graph's input size is fixed and matches the declaration, so this is an "
                "export C3 cannot run: please report it with the output of `c3 check`"
            )
        declared = "x".join(map(str, batch_shape[1:]))
        return (
            f". The graph leaves its input {', '.join(self._open_axes)} open: check that "
            f"{declared} (CxHxW) is the size the model was exported for"
        )
