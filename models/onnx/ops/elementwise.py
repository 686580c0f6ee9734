"""Element-wise operators: activations, arithmetic with numpy broadcasting, comparisons."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from models.onnx.registry import Attributes, Inputs, OpFn, register
from models.onnx.tensors import optional, required, text

Tensor = torch.Tensor


def _unary(fn: Callable[[Tensor], Tensor]) -> OpFn:
    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        return [fn(required(args, 0))]

    return run


# Versions that differ only in element types (bfloat16, ints, optional/sequence types).
for _op_type, _versions, _fn in (
    ("Identity", (1, 13, 14, 16, 19, 21, 23), lambda x: x),
    ("Relu", (6, 13, 14), F.relu),
    ("Sigmoid", (6, 13), torch.sigmoid),
    ("Tanh", (6, 13), torch.tanh),
    ("Neg", (6, 13), torch.neg),
    ("Abs", (6, 13), torch.abs),
    ("Exp", (6, 13), torch.exp),
    ("Log", (6, 13), torch.log),
    ("Sqrt", (6, 13), torch.sqrt),
    ("Reciprocal", (6, 13), torch.reciprocal),
    ("Floor", (6, 13), torch.floor),
    ("Ceil", (6, 13), torch.ceil),
    ("Erf", (9, 13), torch.erf),
    ("Softplus", (1, 22), lambda x: torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)),
    ("Softsign", (1, 22), F.softsign),
    ("HardSwish", (14, 22), F.hardswish),
    ("Mish", (18, 22), F.mish),
    ("Not", (1,), torch.logical_not),
):
    register(_op_type, *_versions)(_unary(_fn))


@register("LeakyRelu", 6, 16)
def leaky_relu(args: Inputs, attrs: Attributes) -> list[Tensor]:
    return [F.leaky_relu(required(args, 0), float(attrs.get("alpha", 0.01)))]


@register("PRelu", 9, 16)
def prelu(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x, slope = required(args, 0), required(args, 1)  # slope broadcasts to x (numpy rules)
    return [torch.where(x >= 0, x, x * slope)]


@register("Elu", 6, 22)
def elu(args: Inputs, attrs: Attributes) -> list[Tensor]:
    return [F.elu(required(args, 0), float(attrs.get("alpha", 1.0)))]


@register("Selu", 6, 22)
def selu(args: Inputs, attrs: Attributes) -> list[Tensor]:
    alpha = float(attrs.get("alpha", 1.67326319217681884765625))
    gamma = float(attrs.get("gamma", 1.05070102214813232421875))
    x = required(args, 0)
    return [gamma * torch.where(x > 0, x, alpha * torch.expm1(x))]


@register("HardSigmoid", 6, 22)
def hard_sigmoid(args: Inputs, attrs: Attributes) -> list[Tensor]:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    return [torch.clamp(alpha * required(args, 0) + beta, 0.0, 1.0)]


@register("Gelu", 20)
def gelu(args: Inputs, attrs: Attributes) -> list[Tensor]:
    approximate = "tanh" if text(attrs, "approximate", "none") == "tanh" else "none"
    return [F.gelu(required(args, 0), approximate=approximate)]


@register("Clip", 11, 12, 13)
def clip(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """Bounds are optional scalar inputs since version 11 (attributes before)."""
    x = required(args, 0)
    low, high = optional(args, 1), optional(args, 2)
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))
    return [x]


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        return [fn(required(args, 0), required(args, 1))]

    return run


def _divide(a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")  # integer Div truncates toward zero
    return a / b


def _power(base: Tensor, exponent: Tensor) -> Tensor:
    """The result has the base's type (version 12+ allows an integer exponent)."""
    if base.is_floating_point():
        return torch.pow(base, exponent.to(base.dtype))
    return torch.pow(base.double(), exponent.double()).to(base.dtype)


_BINARY: tuple[tuple[str, tuple[int, ...], Callable[[Tensor, Tensor], Tensor]], ...] = (
    ("Add", (7, 13, 14), torch.add),
    ("Sub", (7, 13, 14), torch.sub),
    ("Mul", (7, 13, 14), torch.mul),
    ("Div", (7, 13, 14), _divide),
    ("Pow", (7, 12, 13, 15), _power),
    ("Equal", (11, 13, 19), torch.eq),
    ("Less", (9, 13), torch.lt),
    ("Greater", (9, 13), torch.gt),
)
for _binary_op, _binary_versions, _binary_fn in _BINARY:
    register(_binary_op, *_binary_versions)(_binary(_binary_fn))


@register("Mod", 10, 13)
def mod(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """fmod=0: the remainder takes the divisor's sign (Python's %); fmod=1: the dividend's
    (C's fmod, required for floats). The legacy exporter emits it for `x.shape[i] % n`."""
    a, b = required(args, 0), required(args, 1)
    if int(attrs.get("fmod", 0)) or a.is_floating_point() or b.is_floating_point():
        return [torch.fmod(a, b)]
    return [torch.remainder(a, b)]


@register("Where", 9, 16)
def where(args: Inputs, attrs: Attributes) -> list[Tensor]:
    condition = required(args, 0).bool()
    return [torch.where(condition, required(args, 1), required(args, 2))]


def _variadic(fn: Callable[[Tensor, Tensor], Tensor], average: bool = False) -> OpFn:
    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        values = [a for a in args if a is not None]
        result = values[0]
        for value in values[1:]:
            result = fn(result, value)
        return [result / len(values) if average else result]

    return run


register("Min", 8, 12, 13)(_variadic(torch.minimum))
register("Max", 8, 12, 13)(_variadic(torch.maximum))
register("Sum", 8, 13)(_variadic(torch.add))
register("Mean", 8, 13)(_variadic(torch.add, average=True))
