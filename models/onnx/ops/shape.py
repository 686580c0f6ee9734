"""Shape arithmetic and data movement: what exporters emit around the layers.

`x.view(x.size(0), -1)` through the legacy exporter becomes Shape → Gather (a 0-d index)
→ Unsqueeze → Concat → Reshape; attention adds Split/Slice, Transpose and Expand. Index and
axis semantics follow the ONNX specification to the letter (a 0-d Gather index removes the
axis, negative indices and axes count from the end), since these values become shapes.
"""

from __future__ import annotations

import math
from typing import Any

import onnx
import torch
from torch.nn import functional as F

from models.onnx.registry import (
    OUTPUT_COUNT,
    Attributes,
    Inputs,
    UnsupportedOperatorForm,
    register,
)
from models.onnx.tensors import (
    DTYPES,
    check_created,
    int_list,
    optional,
    required,
    text,
    to_tensor,
)

__all__ = ["constant_value"]

Tensor = torch.Tensor


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise UnsupportedOperatorForm(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def constant_value(attrs: dict[str, Any]) -> Tensor:
    """The value of a Constant node (any version): one of its value attributes."""
    if "value" in attrs:
        proto: onnx.TensorProto = attrs["value"]
        if proto.data_type not in DTYPES:
            raise UnsupportedOperatorForm(f"element type {proto.data_type} is not supported")
        return to_tensor(proto)
    if "value_float" in attrs:
        return torch.tensor(float(attrs["value_float"]), dtype=torch.float32)
    if "value_floats" in attrs:
        return torch.tensor([float(v) for v in attrs["value_floats"]], dtype=torch.float32)
    if "value_int" in attrs:
        return torch.tensor(int(attrs["value_int"]), dtype=torch.int64)
    if "value_ints" in attrs:
        return torch.tensor([int(v) for v in attrs["value_ints"]], dtype=torch.int64)
    raise UnsupportedOperatorForm("sparse and string constants are not supported")


@register("Constant", 11, 12, 13, 19, 21, 23)
def constant(args: Inputs, attrs: Attributes) -> list[Tensor]:
    return [constant_value(attrs)]


@register("Shape", 1, 13, 15, 19, 21, 23)
def shape(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """`start`/`end` (version 15) clamp like Python slices."""
    x = required(args, 0)
    start, end = int(attrs.get("start", 0)), attrs.get("end")
    dims = list(x.shape)[start : None if end is None else int(end)]
    return [torch.tensor(dims, dtype=torch.int64, device=x.device)]


@register("Size", 1, 13, 19, 21, 23)
def size(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    return [torch.tensor(x.numel(), dtype=torch.int64, device=x.device)]


@register("Reshape", 5, 13, 14, 19, 21, 23)
def reshape(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """0 copies the input's dimension unless `allowzero` (version 14) is set."""
    x, target = required(args, 0), int_list(required(args, 1))
    if not int(attrs.get("allowzero", 0)):
        target = [x.shape[i] if d == 0 and i < x.dim() else d for i, d in enumerate(target)]
    return [x.reshape(target)]


@register("Flatten", 11, 13, 21, 23)
def flatten(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    axis = int(attrs.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return [x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))]


@register("Transpose", 1, 13, 21, 23)
def transpose(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    perm = [int(p) for p in attrs.get("perm", reversed(range(x.dim())))]
    return [x.permute(*perm)]


def _squeeze(x: Tensor, axes: list[int] | None) -> Tensor:
    if axes is None:
        return x.squeeze()
    dims = tuple(_axis(a, x.dim()) for a in axes)
    if any(x.shape[d] != 1 for d in dims):
        raise UnsupportedOperatorForm(f"cannot squeeze axes {axes} of shape {list(x.shape)}")
    return x.squeeze(dims) if dims else x


def _unsqueeze(x: Tensor, axes: list[int]) -> Tensor:
    rank = x.dim() + len(axes)
    for axis in sorted(_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@register("Squeeze", 11)
def squeeze_axes_attribute(args: Inputs, attrs: Attributes) -> list[Tensor]:
    axes = [int(a) for a in attrs["axes"]] if "axes" in attrs else None
    return [_squeeze(required(args, 0), axes)]


@register("Squeeze", 13, 21, 23)
def squeeze(args: Inputs, attrs: Attributes) -> list[Tensor]:
    axes = optional(args, 1)
    return [_squeeze(required(args, 0), None if axes is None else int_list(axes))]


@register("Unsqueeze", 11)
def unsqueeze_axes_attribute(args: Inputs, attrs: Attributes) -> list[Tensor]:
    return [_unsqueeze(required(args, 0), [int(a) for a in attrs["axes"]])]


@register("Unsqueeze", 13, 21, 23)
def unsqueeze(args: Inputs, attrs: Attributes) -> list[Tensor]:
    return [_unsqueeze(required(args, 0), int_list(required(args, 1)))]


@register("Concat", 11, 13)
def concat(args: Inputs, attrs: Attributes) -> list[Tensor]:
    values = [a for a in args if a is not None]
    axis = _axis(int(attrs["axis"]), max(v.dim() for v in values))
    return [torch.cat(values, dim=axis)]


def _split(x: Tensor, axis: int, sizes: list[int] | None, count: int) -> list[Tensor]:
    axis = _axis(axis, x.dim())
    if sizes is None:  # equal parts; the last one smaller when uneven (version 18)
        sizes = [-(-x.shape[axis] // count)] * count
        sizes[-1] = x.shape[axis] - sizes[0] * (count - 1)
    if sum(sizes) != x.shape[axis] or any(s < 0 for s in sizes):
        raise UnsupportedOperatorForm(f"split sizes {sizes} do not fit dimension {axis}")
    return list(torch.split(x, sizes, dim=axis))


@register("Split", 11)
def split_sizes_attribute(args: Inputs, attrs: Attributes) -> list[Tensor]:
    sizes = [int(s) for s in attrs["split"]] if "split" in attrs else None
    return _split(required(args, 0), int(attrs.get("axis", 0)), sizes, attrs[OUTPUT_COUNT])


@register("Split", 13)
def split_sizes_input(args: Inputs, attrs: Attributes) -> list[Tensor]:
    sizes = optional(args, 1)
    count = attrs[OUTPUT_COUNT]
    parts = None if sizes is None else int_list(sizes)
    return _split(required(args, 0), int(attrs.get("axis", 0)), parts, count)


@register("Split", 18)
def split_num_outputs(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """Either split sizes as an input or `num_outputs` (uneven: the last part is smaller)."""
    sizes = optional(args, 1)
    count = int(attrs.get("num_outputs") or attrs[OUTPUT_COUNT])
    parts = None if sizes is None else int_list(sizes)
    return _split(required(args, 0), int(attrs.get("axis", 0)), parts, count)


@register("Slice", 11, 13)
def slice_(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """starts/ends clamp to the dimension; a negative step walks backwards."""
    x = required(args, 0)
    starts, ends = int_list(required(args, 1)), int_list(required(args, 2))
    axes_input, steps_input = optional(args, 3), optional(args, 4)
    axes = int_list(axes_input) if axes_input is not None else list(range(len(starts)))
    steps = int_list(steps_input) if steps_input is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step == 0:
            raise UnsupportedOperatorForm("a slice step of 0 is invalid")
        axis = _axis(axis, x.dim())
        length = x.shape[axis]
        start = start + length if start < 0 else start
        end = end + length if end < 0 else end
        if step > 0:
            start, end = max(0, min(length, start)), max(0, min(length, end))
            x = x.narrow(axis, start, max(0, end - start))[
                (slice(None),) * axis + (slice(None, None, step),)
            ]
        else:  # ONNX clamps to [0, length-1] and [-1, length-1] when stepping backwards
            start, end = max(-1, min(length - 1, start)), max(-1, min(length - 1, end))
            indices = torch.arange(start, end, step, device=x.device)
            x = torch.index_select(x, axis, indices)
    return [x]


@register("Gather", 11, 13)
def gather(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """out.shape = data.shape[:axis] + indices.shape + data.shape[axis+1:]; a 0-d index (how
    exporters read `x.shape[0]`) therefore removes the axis."""
    x, indices = required(args, 0), required(args, 1).long()
    axis = _axis(int(attrs.get("axis", 0)), x.dim())
    length = x.shape[axis]
    if indices.numel() and (indices.min() < -length or indices.max() >= length):
        raise UnsupportedOperatorForm(f"an index is out of range for a dimension of {length}")
    indices = torch.where(indices < 0, indices + length, indices)
    picked = torch.index_select(x, axis, indices.flatten())
    return [picked.reshape([*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :]])]


@register("Expand", 8, 13)
def expand(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """Broadcasts both ways: the target may hold 1s where the input is larger."""
    x, target = required(args, 0), int_list(required(args, 1))
    result_shape = torch.broadcast_shapes(tuple(x.shape), tuple(target))
    check_created(list(result_shape))
    return [x.expand(result_shape)]


@register("ConstantOfShape", 9, 20, 21, 23)
def constant_of_shape(args: Inputs, attrs: Attributes) -> list[Tensor]:
    target = int_list(required(args, 0))
    check_created(target)
    fill = to_tensor(attrs["value"]) if "value" in attrs else torch.zeros(1)
    device = required(args, 0).device
    return [torch.full(target, fill.flatten()[0].item(), dtype=fill.dtype, device=device)]


@register("Cast", 9, 13, 19, 21, 23)
def cast(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """To one of the interpreter's three dtypes; float16 and double compute in float32."""
    to = int(attrs["to"])
    if to not in DTYPES:
        raise UnsupportedOperatorForm(f"casting to element type {to} is not supported")
    return [required(args, 0).to(DTYPES[to])]


@register("Range", 11)
def range_(args: Inputs, attrs: Attributes) -> list[Tensor]:
    start, limit, delta = (required(args, i) for i in range(3))
    if float(delta) == 0:
        raise UnsupportedOperatorForm("a range step of 0 is invalid")
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    check_created([count])
    values = float(start) + float(delta) * torch.arange(count, dtype=torch.float64)
    return [values.to(start.dtype)]


@register("Pad", 11, 13, 18, 19, 21, 23)
def pad(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """Pads as an input (version 11), optional axes input (18), `wrap` mode (19).
    Negative pads crop."""
    x = required(args, 0)
    mode = text(attrs, "mode", "constant")
    pads = int_list(required(args, 1))
    value_input, axes_input = optional(args, 2), optional(args, 3)
    value = float(value_input.item()) if value_input is not None and value_input.numel() else 0.0
    axes = (
        [_axis(a, x.dim()) for a in int_list(axes_input)]
        if axes_input is not None
        else list(range(x.dim()))
    )
    if len(pads) != 2 * len(axes):
        raise UnsupportedOperatorForm(f"{len(pads)} pads for {len(axes)} axes")
    begins = dict(zip(axes, pads[: len(axes)], strict=True))
    ends = dict(zip(axes, pads[len(axes) :], strict=True))
    check_created([x.shape[a] + begins.get(a, 0) + ends.get(a, 0) for a in range(x.dim())])
    torch_pads: list[int] = []
    for axis in reversed(range(x.dim())):
        torch_pads += [begins.get(axis, 0), ends.get(axis, 0)]
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # torch pads trailing dimensions only
    if mode == "constant":
        return [F.pad(x, torch_pads, value=value)]
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise UnsupportedOperatorForm(f"pad mode {mode!r} is not supported")
    if len(torch_pads) // 2 > x.dim() - 2 or any(p < 0 for p in torch_pads):
        raise UnsupportedOperatorForm(
            f"{mode} padding of the batch or channel axes, or with negative pads, is not supported"
        )
    return [F.pad(x, torch_pads, mode=torch_mode)]
