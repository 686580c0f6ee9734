"""The operator registry: one torch function per (ONNX operator, since_version).

ONNX versions each operator separately: `Squeeze` took its axes as an attribute up to
version 11 and as an input from version 13; `Softmax` before 13 flattened to 2-D around its
axis. A model states one opset per domain, and the version of an operator in that model is the
newest `since_version` of its schema at or below that opset (`onnx.defs.get_schema`). This
registry holds an implementation for exactly those versions, the way onnx2torch's converter
registry does, so a version the project has never checked is refused instead of running under
the semantics of another. Registering one function under several versions says that those
versions differ only in element types the interpreter maps onto the same torch dtypes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import onnx
import torch

from models.contracts.classifier import ClassifierRejected

__all__ = [
    "ALLOWLIST_DOC",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUT_COUNT",
    "OpFn",
    "UnsupportedOperatorForm",
    "implementation",
    "lookup",
    "operator_version",
    "register",
    "registered_versions",
]

MIN_OPSET, MAX_OPSET = 11, 23  # default-domain opsets accepted; every version in between is
# registered for every allowlisted operator (a test checks this against onnx.defs)
ALLOWLIST_DOC = (
    'the operators and versions C3 runs are listed under "ONNX support" in the C3 README; '
    "`c3 check model.onnx` shows what would happen to a model"
)

Tensor = torch.Tensor
Inputs = Sequence[Tensor | None]
Attributes = dict[str, Any]
OpFn = Callable[[Inputs, Attributes], list[Tensor]]
OUTPUT_COUNT = "__output_count__"  # an attribute the graph adds: how many outputs the node
# declares (Split without sizes splits into that many parts)

_REGISTRY: dict[tuple[str, int], OpFn] = {}


class UnsupportedOperatorForm(ClassifierRejected):
    """An allowlisted operator used in a form the interpreter does not run (an attribute value,
    a rank, a mode). The graph adds which node it was."""


def register(op_type: str, *since_versions: int) -> Callable[[OpFn], OpFn]:
    """Register `fn` as the implementation of `op_type` at each of `since_versions`."""

    def decorate(fn: OpFn) -> OpFn:
        for version in since_versions:
            key = (op_type, version)
            if key in _REGISTRY:
                raise RuntimeError(f"{op_type} version {version} is registered twice")
            _REGISTRY[key] = fn
        return fn

    return decorate


def registered_versions() -> dict[str, tuple[int, ...]]:
    """Allowlisted operator → the since_versions it is implemented for, sorted."""
    versions: dict[str, list[int]] = {}
    for op_type, version in _REGISTRY:
        versions.setdefault(op_type, []).append(version)
    return {op: tuple(sorted(v)) for op, v in sorted(versions.items())}


def implementation(op_type: str, version: int) -> OpFn:
    """The function registered for exactly (`op_type`, `version`); KeyError if none."""
    return _REGISTRY[(op_type, version)]


def operator_version(op_type: str, opset: int) -> int | None:
    """The since_version of `op_type` in a model of default-domain `opset`; None if the
    operator does not exist at that opset (or at all)."""
    try:
        return int(onnx.defs.get_schema(op_type, opset, "").since_version)
    except onnx.defs.SchemaError:
        return None


def lookup(op_type: str, opset: int) -> tuple[int, OpFn]:
    """The (since_version, implementation) that runs `op_type` in a model of `opset`.

    Raises `ClassifierRejected` naming the cause: not an ONNX operator at that opset, not on
    the allowlist, or on it but not at this version.
    """
    supported = registered_versions()
    version = operator_version(op_type, opset)
    if op_type not in supported:
        raise ClassifierRejected(
            f"ONNX operator {op_type} is not supported: it is not on C3's operator allowlist "
            f"(what torch.onnx.export emits for image classifiers); {ALLOWLIST_DOC}"
        )
    if version is None:
        first = operator_version(op_type, MAX_OPSET)
        since = f" (it was added in opset {min(supported[op_type])})" if first else ""
        raise ClassifierRejected(
            f"ONNX operator {op_type} does not exist at opset {opset}{since}: the file is not "
            "a valid export; export it again with torch.onnx.export"
        )
    implementation = _REGISTRY.get((op_type, version))
    if implementation is None:
        shown = ", ".join(str(v) for v in supported[op_type])
        raise ClassifierRejected(
            f"ONNX operator {op_type} version {version} (opset {opset}) is not supported: C3 "
            f"runs {op_type} versions {shown}; export with an opset in {MIN_OPSET}..{MAX_OPSET}"
        )
    return version, implementation
