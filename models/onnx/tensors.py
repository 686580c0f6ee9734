"""ONNX tensors as torch tensors, and the small helpers every operator shares.

Element types collapse onto three torch dtypes: float32 (every float type: the interpreter
computes in float32, the dtype generators and losses use), int64 (every integer type, as
exporters use them for shapes and indices) and bool. Anything else is refused at validation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from models.onnx.registry import Inputs, UnsupportedOperatorForm

__all__ = [
    "DTYPES",
    "MAX_CREATED_VALUES",
    "check_created",
    "int_list",
    "optional",
    "required",
    "text",
    "to_tensor",
]

MAX_CREATED_VALUES = 50_000_000  # elements one ConstantOfShape/Expand/Range may create

Tensor = torch.Tensor

DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float32,  # computed in float32
    onnx.TensorProto.BFLOAT16: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float32,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int64,
    onnx.TensorProto.INT16: torch.int64,
    onnx.TensorProto.INT8: torch.int64,
    onnx.TensorProto.UINT8: torch.int64,
    onnx.TensorProto.UINT16: torch.int64,
    onnx.TensorProto.UINT32: torch.int64,
    onnx.TensorProto.BOOL: torch.bool,
}


def to_tensor(proto: onnx.TensorProto) -> Tensor:
    """A validated TensorProto (never external data) as a torch tensor of a DTYPES dtype."""
    array = numpy_helper.to_array(proto)
    dtype = DTYPES[proto.data_type]
    if dtype == torch.float32:
        array = array.astype(np.float32)
    elif dtype == torch.int64:
        array = array.astype(np.int64)
    return torch.from_numpy(np.array(array, copy=True)).to(dtype)


def optional(args: Inputs, index: int) -> Tensor | None:
    """Input `index`, or None when it is absent or given as the empty name."""
    return args[index] if index < len(args) else None


def required(args: Inputs, index: int) -> Tensor:
    value = optional(args, index)
    if value is None:
        raise UnsupportedOperatorForm(f"required input #{index} is missing")
    return value


def int_list(value: Tensor | None) -> list[int]:
    """A shape, axes or index tensor as Python ints ([] for None)."""
    return [] if value is None else [int(v) for v in value.flatten().tolist()]


def text(attrs: dict[str, Any], name: str, default: str) -> str:
    """A string attribute (onnx gives bytes)."""
    value = attrs.get(name, default)
    return value.decode() if isinstance(value, bytes) else str(value)


def check_created(shape: Sequence[int]) -> None:
    """Refuse a tensor a graph asks to create that is invalid or too large to hold."""
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_CREATED_VALUES:
        raise UnsupportedOperatorForm(
            f"the graph creates a tensor of shape {list(shape)}: too large or invalid "
            f"(at most {MAX_CREATED_VALUES:,} values)"
        )
