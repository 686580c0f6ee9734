"""`c3 check model.onnx`: what an upload of this file would meet, before uploading it.

It runs the same steps as the service's sandboxed validation (`load_classifier`, then
`check_classifier`: batches of 2, 4 and 1, a backward pass to the input) and reports what it
found on the way: the opset and every operator with its version and whether C3 runs it, the
input the graph declares and how its batch dimension is handled, the number of classes, where
features are read, the parameter count and the latency per image. The verdict is the
refusal users would see, verbatim.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from models.contracts.classifier import ClassifierRejected, ClassifierSpec
from models.loading import check_classifier, load_classifier, probe_num_classes
from models.onnx import (
    OnnxGraphModule,
    default_opset,
    graph_input,
    input_dims,
    lookup,
    operator_version,
    parse_model,
)

__all__ = ["ModelCheck", "OperatorUse", "check_onnx", "format_check"]


@dataclass(frozen=True)
class OperatorUse:
    op_type: str
    version: int | None  # the operator's since_version at the model's opset
    nodes: int
    supported: bool
    reason: str | None = None  # why not, when not


@dataclass
class ModelCheck:
    """What `c3 check` found; fields stay None where checking stopped before them."""

    accepted: bool = False
    reason: str | None = None  # the refusal, verbatim
    producer: str | None = None
    opset: int | None = None
    operators: list[OperatorUse] = field(default_factory=list)
    graph_input: str | None = None  # as declared, e.g. "x: batch x 1 x 28 x 28"
    input_shape: tuple[int, int, int] | None = None  # the CxHxW checked
    batch: str | None = None
    num_classes: int | None = None
    ends_in_softmax: bool | None = None
    feature_layer: str | None = None
    feature_dim: int | None = None
    param_count: int | None = None
    latency_ms_per_image: float | None = None
    batch_norm_layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_onnx(data: bytes, input_shape: Sequence[int] | None = None) -> ModelCheck:
    """Check ONNX bytes as an upload would be checked; never raises `ClassifierRejected`."""
    result = ModelCheck()
    try:
        _check(data, input_shape, result)
    except ClassifierRejected as error:
        result.accepted, result.reason = False, str(error)
    return result


def _check(data: bytes, input_shape: Sequence[int] | None, result: ModelCheck) -> None:
    model = parse_model(data)
    result.producer = f"{model.producer_name} {model.producer_version}".strip() or "unknown"
    result.opset = default_opset(model)
    result.operators = _operators(model.graph.node, result.opset)
    dims = input_dims(graph_input(model)) if _has_one_input(model) else None
    if dims is not None:
        shown = " x ".join(
            ("batch" if i == 0 else "?") if d is None else str(d) for i, d in enumerate(dims)
        )
        result.graph_input = f"{graph_input(model).name}: {shown}"
    shape = tuple(input_shape) if input_shape else _static_shape(dims)
    if shape is None or len(shape) != 3:
        raise ClassifierRejected("the graph does not fix its input size: give --input-shape C,H,W")
    result.input_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    result.num_classes = probe_num_classes(data, "onnx", result.input_shape)
    names = tuple(str(k) for k in range(result.num_classes))
    spec = ClassifierSpec(format="onnx", input_shape=result.input_shape, class_names=names)
    classifier = load_classifier(data, spec)
    graph = classifier.model
    if isinstance(graph, OnnxGraphModule):
        result.batch = graph.batch_note
        result.ends_in_softmax = graph.ends_in_softmax
    report = check_classifier(classifier)
    result.feature_layer = report.feature_layer
    result.feature_dim = report.feature_dim
    result.param_count = report.param_count
    result.latency_ms_per_image = report.forward_latency_ms
    result.batch_norm_layers = report.batch_norm_layers
    result.accepted = True


def _has_one_input(model: Any) -> bool:
    initializers = {t.name for t in model.graph.initializer}
    return sum(1 for i in model.graph.input if i.name not in initializers) == 1


def _static_shape(dims: list[int | None] | None) -> tuple[int, ...] | None:
    if dims is None or len(dims) != 4 or any(d is None or d <= 0 for d in dims[1:]):
        return None
    return tuple(int(d) for d in dims[1:] if d is not None)


def _operators(nodes: Sequence[Any], opset: int) -> list[OperatorUse]:
    counts = Counter(node.op_type for node in nodes if node.domain in ("", "ai.onnx"))
    uses = []
    for op_type, count in sorted(counts.items()):
        try:
            lookup(op_type, opset)
            supported, reason = True, None
        except ClassifierRejected as error:
            supported, reason = False, str(error)
        uses.append(
            OperatorUse(op_type, operator_version(op_type, opset), count, supported, reason)
        )
    custom = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx")})
    for name in custom:
        uses.append(OperatorUse(name, None, 0, False, "custom domains are not supported"))
    return uses


def format_check(name: str, check: ModelCheck) -> str:
    """The human-readable report `c3 check` prints."""
    verdict = "would be accepted" if check.accepted else f"would be refused: {check.reason}"
    lines = [f"{name}: {verdict}"]

    def row(label: str, value: object) -> None:
        if value is not None:
            lines.append(f"  {label:<11} {value}")

    if check.opset is not None:
        row("producer", f"{check.producer}, opset {check.opset}")
    if check.operators:
        usable = [u for u in check.operators if u.supported]
        missing = [u for u in check.operators if not u.supported]
        listed = ", ".join(f"{u.op_type} v{u.version} ({u.nodes})" for u in usable)
        row("operators", f"{len(usable)} supported: {listed}")
        for use in missing:
            row("", f"NOT SUPPORTED {use.op_type}: {use.reason}")
    row("input", check.graph_input)
    if check.input_shape is not None:
        row("checked at", "x".join(map(str, check.input_shape)) + " (CxHxW)")
    row("batch", check.batch)
    if check.num_classes is not None:
        softmax = ", read before the final Softmax" if check.ends_in_softmax else ""
        row("classes", f"{check.num_classes} logits{softmax}")
    if check.feature_layer is not None:
        row("features", f"{check.feature_layer!r} ({check.feature_dim}-d)")
    if check.param_count is not None:
        row("parameters", f"{check.param_count:,}")
    if check.latency_ms_per_image is not None:
        row("latency", f"{check.latency_ms_per_image:.2f} ms per image (one forward pass)")
    if check.batch_norm_layers is not None:
        row("BatchNorm", _data_free_prior(check.batch_norm_layers))
    return "\n".join(lines)


def _data_free_prior(layers: int) -> str:
    if layers:
        return f"{layers} layers with running statistics: detector-aware c3 runs without data"
    return "none with running statistics: detector-aware c3 needs a reference set"
