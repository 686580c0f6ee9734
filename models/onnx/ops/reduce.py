"""Reductions. Their axes moved from an attribute to an optional input (ReduceSum in
version 13, the others in 18); without axes they reduce everything, unless
`noop_with_empty_axes` asks for the input back unchanged."""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.onnx.registry import Attributes, Inputs, OpFn, register
from models.onnx.tensors import int_list, optional, required

Tensor = torch.Tensor
Reduction = Callable[..., Tensor]


def _reduce(x: Tensor, fn: Reduction, axes: list[int] | None, attrs: Attributes) -> Tensor:
    keepdims = bool(attrs.get("keepdims", 1))
    if not axes:
        if axes is not None and int(attrs.get("noop_with_empty_axes", 0)):
            return x
        axes = list(range(x.dim()))
    if x.dim() == 0:
        return x
    dims = tuple(a + x.dim() if a < 0 else a for a in axes)
    return fn(x, dim=dims, keepdim=keepdims)


def _axes_attribute(fn: Reduction) -> OpFn:
    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        axes = [int(a) for a in attrs["axes"]] if "axes" in attrs else None
        return [_reduce(required(args, 0), fn, axes, attrs)]

    return run


def _axes_input(fn: Reduction) -> OpFn:
    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        axes_input = optional(args, 1)
        axes = [] if axes_input is None else int_list(axes_input)
        return [_reduce(required(args, 0), fn, axes, attrs)]

    return run


register("ReduceMean", 11, 13)(_axes_attribute(torch.mean))
register("ReduceMean", 18)(_axes_input(torch.mean))
register("ReduceSum", 11)(_axes_attribute(torch.sum))
register("ReduceSum", 13)(_axes_input(torch.sum))
register("ReduceMax", 11, 12, 13)(_axes_attribute(torch.amax))
register("ReduceMax", 18, 20)(_axes_input(torch.amax))
register("ReduceMin", 11, 12, 13)(_axes_attribute(torch.amin))
register("ReduceMin", 18, 20)(_axes_input(torch.amin))
