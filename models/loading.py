"""Turn uploaded bytes into a frozen `LoadedClassifier`, or refuse them with a clear reason.

Accepted: safetensors weights of a registered architecture, and single-file ONNX models
(run by `models.onnx`). Never unpickled: `.pt`/`.pth` pickles, TorchScript archives and
`.pt2` exported programs are recognised by their bytes and refused before anything parses
them. Every refusal is a `ClassifierRejected` whose message users see verbatim.
"""

from __future__ import annotations

import io
import json
import logging
import math
import struct
import time
import zipfile
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from models.architectures import ARCHITECTURES, build_architecture
from models.classifier import LoadedClassifier
from models.contracts.classifier import ClassifierRejected, ClassifierSpec
from models.onnx import (
    MAX_PARAMETERS,
    build_module,
    parse_model,
    validate_model,
)

__all__ = [
    "MAX_CLASSIFIER_BYTES",
    "ClassifierReport",
    "LoadedClassifier",
    "canonical_bytes",
    "check_classifier",
    "load_classifier",
    "sniff_refused_format",
]

logger = logging.getLogger(__name__)

MAX_CLASSIFIER_BYTES = 512 * 1024 * 1024
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024
_SAFETENSORS_DTYPES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}
_PICKLE_REASON = (
    "pickle files are refused (they can run arbitrary code when loaded): "
    "export to safetensors or ONNX"
)


def sniff_refused_format(data: bytes) -> str | None:
    """The reason these bytes are refused outright (pickle, TorchScript, .pt2), else None."""
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        names = _zip_names(data)
        if any(
            n.endswith("constants.pkl") or "/code/" in n or n.startswith("code/") for n in names
        ):
            return (
                "TorchScript archives are refused (they contain pickled code): "
                "export to safetensors or ONNX"
            )
        if any(
            n.endswith(".pt2")
            or "serialized_exported_program" in n
            or "archive_format" in n
            or n.startswith("archive/")
            or "/archive/" in n
            for n in names
        ) and not any(n.endswith("data.pkl") for n in names):
            return (
                ".pt2 exported programs are refused (they contain pickled objects): "
                "export to safetensors or ONNX"
            )
        if any(n.endswith(".pkl") for n in names):
            return "PyTorch .pt/.pth checkpoints are " + _PICKLE_REASON.removeprefix(
                "pickle files are "
            )
        return "zip archives are refused: upload a single .safetensors or .onnx file"
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return _PICKLE_REASON
    looks_safetensors = data[8:9] == b"{"
    if (
        data[:1] in (b"(", b"c", b"]", b"}")
        and b"\n" in data[:64]
        and data[-1:] == b"."
        and (not looks_safetensors)
    ):
        return _PICKLE_REASON  # protocol 0/1 pickles are text-like and end with STOP (".")
    return None


def _zip_names(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return []


# -- safetensors -------------------------------------------------------------------------


def _safetensors_header(data: bytes) -> dict[str, Any]:
    """Validate the header against the file before the library maps any tensor."""
    if len(data) < 8:
        raise ClassifierRejected("the safetensors file is truncated (no header): upload it again")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > MAX_SAFETENSORS_HEADER:
        raise ClassifierRejected(
            f"the safetensors header declares {header_size:,} bytes, more than the "
            f"{MAX_SAFETENSORS_HEADER // 2**20} MiB a model's header needs: this is not a "
            "safetensors file; save the state_dict with safetensors.torch.save_file"
        )
    if 8 + header_size > len(data):
        raise ClassifierRejected(
            "the safetensors file is truncated or corrupt (its header runs past the end): "
            "save it again with safetensors.torch.save_file"
        )
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ClassifierRejected(
            "this is not a safetensors file (unreadable header): save the state_dict with "
            "safetensors.torch.save_file"
        ) from None
    if not isinstance(header, dict):
        raise ClassifierRejected("this is not a safetensors file (header is not a JSON object)")
    payload = len(data) - 8 - header_size
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _SAFETENSORS_DTYPES:
            raise ClassifierRejected(f"safetensors tensor {name!r} has an unsupported dtype")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)
        ):
            raise ClassifierRejected(f"safetensors tensor {name!r} has a malformed header entry")
        start, end = offsets
        size = math.prod(shape) * _SAFETENSORS_DTYPES[info["dtype"]]
        if not 0 <= start <= end <= payload or end - start != size:
            raise ClassifierRejected(
                f"the safetensors file is truncated or corrupt: tensor {name!r} claims "
                f"{size:,} bytes beyond what the file holds; save it again"
            )
    return header


def _load_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    _safetensors_header(data)
    try:
        tensors = safetensors_load(data)
    except Exception as error:  # the library's own checks (overlaps, alignment, ...)
        raise ClassifierRejected(f"the safetensors file is corrupt: {error}") from None
    return {
        name: tensor.float() if tensor.is_floating_point() else tensor
        for name, tensor in tensors.items()
    }


def _output_layer(model: torch.nn.Module) -> str | None:
    """Name of the last nn.Linear in registration order (the logits layer of our nets)."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            last = name
    return last


def _build_torch(data: bytes, spec: ClassifierSpec) -> torch.nn.Module:
    name = spec.architecture or ""
    if name not in ARCHITECTURES:
        raise ClassifierRejected(
            f"unknown architecture {name!r}: use one of {', '.join(sorted(ARCHITECTURES))}, "
            "or upload an ONNX export instead"
        )
    try:
        with torch.device("meta"):  # count first: a config must not allocate a huge model
            skeleton = build_architecture(
                name, spec.input_shape, spec.num_classes, **spec.architecture_config
            )
        size = sum(t.numel() for t in skeleton.state_dict().values())
        if size > MAX_PARAMETERS:
            raise ClassifierRejected(
                f"architecture {name!r} with this config has {size:,} parameters: at most "
                f"{MAX_PARAMETERS:,} are accepted"
            )
        model = build_architecture(
            name, spec.input_shape, spec.num_classes, **spec.architecture_config
        )
    except (ValueError, TypeError, RuntimeError) as error:
        if isinstance(error, ClassifierRejected):
            raise
        raise ClassifierRejected(f"cannot build architecture {name!r}: {error}") from None
    tensors = _load_safetensors(data)
    expected = model.state_dict()
    head = _output_layer(model)
    if head is not None and f"{head}.weight" in tensors and f"{head}.weight" in expected:
        found = tensors[f"{head}.weight"].shape[0]
        if found != spec.num_classes and tensors[f"{head}.weight"].dim() == 2:
            raise ClassifierRejected(
                f"declared {spec.num_classes} classes, model outputs {found}: declare one "
                "class name per output"
            )
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        k
        for k in set(expected) & set(tensors)
        if tuple(expected[k].shape) != tuple(tensors[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(
                f"unexpected {', '.join(unexpected[:5])}" + (" ..." if len(unexpected) > 5 else "")
            )
        for key in mismatched[:5]:
            parts.append(
                f"{key} has shape {list(tensors[key].shape)}, expected {list(expected[key].shape)}"
            )
        raise ClassifierRejected(
            f"the weights do not fit architecture {name!r} with config "
            f"{json.dumps(spec.architecture_config, sort_keys=True)} and input "
            f"{'x'.join(map(str, spec.input_shape))}: {'; '.join(parts)}. Check the "
            "architecture name, its config and the input shape"
        )
    model.load_state_dict({k: tensors[k].to(expected[k].dtype) for k in expected})
    return model


# -- ONNX --------------------------------------------------------------------------------


def _build_onnx(data: bytes, spec: ClassifierSpec) -> torch.nn.Module:
    model = parse_model(data)
    validate_model(model, spec.input_shape)
    return build_module(model, spec.input_shape)


# -- public ------------------------------------------------------------------------------


def _check_size(data: bytes) -> None:
    if not data:
        raise ClassifierRejected("the classifier file is empty: upload it again")
    if len(data) > MAX_CLASSIFIER_BYTES:
        raise ClassifierRejected(
            f"the classifier file is {len(data) / 2**20:.0f} MiB: at most "
            f"{MAX_CLASSIFIER_BYTES // 2**20} MiB are accepted"
        )
    reason = sniff_refused_format(data)
    if reason:
        raise ClassifierRejected(reason)


def load_classifier(
    data: bytes, spec: ClassifierSpec, device: torch.device | str = "cpu"
) -> LoadedClassifier:
    """Parse, validate and wrap an uploaded classifier; raises `ClassifierRejected`."""
    _check_size(data)
    model = _build_torch(data, spec) if spec.format == "safetensors" else _build_onnx(data, spec)
    try:
        classifier = LoadedClassifier(
            model,
            spec.input_shape,
            spec.class_names,
            spec.mean,
            spec.std,
            source_format=spec.format,
            architecture=spec.architecture,
        )
    except ClassifierRejected:
        raise
    except Exception as error:  # the probe forward of the feature hooks
        raise ClassifierRejected(
            f"the classifier fails on a {'x'.join(map(str, spec.input_shape))} input: "
            f"{type(error).__name__}: {error}"
        ) from None
    classifier = classifier.to(device)
    _check_output_count(classifier)
    return classifier


def _check_output_count(classifier: LoadedClassifier) -> None:
    probe = torch.full((2, *classifier.input_shape), 0.5, device=classifier.device)
    try:
        with torch.no_grad():
            logits = classifier(probe)
    except ClassifierRejected:
        raise
    except Exception as error:
        raise ClassifierRejected(
            f"the classifier fails on a {'x'.join(map(str, classifier.input_shape))} input: "
            f"{type(error).__name__}: {error}. Check the declared input shape"
        ) from None
    if logits.dim() != 2 or logits.shape[0] != 2:
        raise ClassifierRejected(
            f"the classifier returns shape {list(logits.shape)} for a batch of 2: it must "
            "return logits of shape [batch, classes]"
        )
    if logits.shape[1] != classifier.num_classes:
        raise ClassifierRejected(
            f"declared {classifier.num_classes} classes, model outputs {logits.shape[1]}: "
            "declare one class name per output"
        )


def canonical_bytes(data: bytes, spec: ClassifierSpec) -> bytes:
    """A clean re-serialised copy: safetensors rebuilt from parsed tensors (no metadata),
    ONNX re-serialised from the validated graph (doc strings and metadata dropped)."""
    _check_size(data)
    if spec.format == "safetensors":
        tensors = _load_safetensors(data)
        return safetensors_save({k: v.contiguous() for k, v in sorted(tensors.items())})
    model = parse_model(data)
    validate_model(model, spec.input_shape)
    model.doc_string = ""
    del model.metadata_props[:]
    model.graph.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    return model.SerializeToString()


@dataclass(frozen=True)
class ClassifierReport:
    num_classes: int
    param_count: int  # parameters and buffers holding float values
    forward_latency_ms: float  # one forward pass of a single image (median of 3)
    feature_layer: str  # where the diversity losses read features
    feature_dim: int
    batch_norm_layers: int  # with running statistics: a data-free prior (issue 15)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "param_count": self.param_count,
            "forward_latency_ms": self.forward_latency_ms,
            "feature_layer": self.feature_layer,
            "feature_dim": self.feature_dim,
            "batch_norm_layers": self.batch_norm_layers,
        }


def check_classifier(clf: LoadedClassifier, seed: int = 0) -> ClassifierReport:
    """One real forward/backward on the declared shape; refuse unusable classifiers.

    Output must be [N, K] and finite, gradients must reach the input, and the output must
    depend on the input (else inversion has nothing to optimise).
    """
    device = clf.device
    rng = torch.Generator().manual_seed(seed)
    x = torch.rand(4, *clf.input_shape, generator=rng).to(device).requires_grad_(True)
    try:
        with torch.enable_grad():
            logits, features = clf.forward_with_features(x)
            if logits.dim() != 2 or logits.shape != (4, clf.num_classes):
                raise ClassifierRejected(
                    f"the classifier returns shape {list(logits.shape)} for a batch of 4: it must "
                    f"return logits of shape [batch, {clf.num_classes}]"
                )
            if not torch.isfinite(logits).all():
                raise ClassifierRejected(
                    "the classifier returns NaN or infinite logits on ordinary [0, 1] images: "
                    "check the weights and the declared mean/std"
                )
            logits.log_softmax(dim=1).sum().backward()
    except ClassifierRejected:
        raise
    except Exception as error:
        raise ClassifierRejected(
            f"the classifier fails on a batch of {'x'.join(map(str, clf.input_shape))} "
            f"images: {type(error).__name__}: {error}"
        ) from None
    grad = x.grad
    if grad is None or not torch.isfinite(grad).all():
        raise ClassifierRejected(
            "gradients do not reach the input through this classifier: it must be "
            "differentiable end to end (no argmax, rounding or integer casts on the input)"
        )
    with torch.no_grad():
        other = clf(torch.rand(4, *clf.input_shape, generator=rng).to(device))
        spread = (logits.detach() - other).abs().max().item()
    if grad.abs().max().item() == 0.0 or spread < 1e-6:
        raise ClassifierRejected(
            "the classifier's output does not depend on its input: check that the exported "
            "graph uses the input and that the weights are trained"
        )
    single = torch.rand(1, *clf.input_shape, generator=rng).to(device)
    timings = []
    with torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            clf(single)
            timings.append((time.perf_counter() - start) * 1000.0)
    param_count = sum(t.numel() for t in clf.model.parameters()) + sum(
        b.numel() for b in clf.model.buffers() if b.is_floating_point()
    )
    return ClassifierReport(
        num_classes=clf.num_classes,
        param_count=int(param_count),
        forward_latency_ms=round(sorted(timings)[1], 3),
        feature_layer=clf.feature_layer,
        feature_dim=int(features.flatten(1).shape[1]),
        batch_norm_layers=len(clf.batch_norms()),
    )


def probe_input_shape(data: bytes, fmt: str) -> tuple[int, int, int] | None:
    """The (C, H, W) an ONNX model declares for its input, when static; else None."""
    if fmt != "onnx":
        return None
    _check_size(data)
    model = parse_model(data)
    initializers = {t.name for t in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        values = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
        if len(values) == 4 and all(v > 0 for v in values[1:]):
            return values[1], values[2], values[3]
    return None


def probe_num_classes(
    data: bytes,
    fmt: str,
    input_shape: tuple[int, int, int],
    architecture: str | None = None,
    architecture_config: dict[str, Any] | None = None,
) -> int:
    """How many logits a classifier returns, for callers that did not declare class names."""
    _check_size(data)
    if fmt == "onnx":
        model = parse_model(data)
        validate_model(model, input_shape)
        with torch.no_grad():
            logits = build_module(model, input_shape)(torch.full((1, *input_shape), 0.5))
        return int(logits.flatten(1).shape[1])
    name = architecture or ""
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ClassifierRejected(
            f"unknown architecture {name!r}: use one of {known}, or upload an ONNX export instead"
            if name
            else f"safetensors files hold only weights: name their architecture (one of {known})"
        )
    with torch.device("meta"):  # names and shapes only, nothing allocated
        skeleton = build_architecture(name, input_shape, 2, **(architecture_config or {}))
    head = _output_layer(skeleton)
    tensors = _load_safetensors(data)
    if head is None or f"{head}.weight" not in tensors:
        raise ClassifierRejected(f"the weights do not fit architecture {name!r}")
    return int(tensors[f"{head}.weight"].shape[0])
