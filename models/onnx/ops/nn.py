"""Network layers: convolutions, pooling, normalisation, linear maps, softmax, dropout."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.nn import functional as F

from models.onnx.registry import Attributes, Inputs, OpFn, UnsupportedOperatorForm, register
from models.onnx.tensors import optional, required, text

Tensor = torch.Tensor

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _spatial_pads(
    attrs: Attributes,
    kernel: Sequence[int],
    dilations: Sequence[int],
    strides: Sequence[int],
    in_sizes: Sequence[int],
) -> list[int]:
    """ONNX pads [begin_1, begin_2, ..., end_1, end_2, ...], explicit or from auto_pad."""
    spatial = len(kernel)
    auto_pad = text(attrs, "auto_pad", "NOTSET")
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
    return [int(p) for p in attrs.get("pads", [0] * (2 * spatial))]


def _pad_asymmetric(x: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Symmetric pads are returned for the torch op; asymmetric ones are applied here."""
    spatial = len(pads) // 2
    begins, ends = pads[:spatial], pads[spatial:]
    if begins == ends:
        return x, begins
    torch_pads: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends), strict=True):
        torch_pads += [begin, end]
    return F.pad(x, torch_pads, value=value), [0] * spatial


def _spatial_rank(x: Tensor, op_type: str, supported: Mapping[int, object]) -> int:
    spatial = x.dim() - 2
    if spatial not in supported:
        raise UnsupportedOperatorForm(
            f"{op_type} over {spatial} spatial dimensions is not supported (1 to 3 are)"
        )
    return spatial


@register("Conv", 11, 22)
def conv(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x, weight, bias = required(args, 0), required(args, 1), optional(args, 2)
    spatial = _spatial_rank(x, "Conv", _CONV)
    kernel = [int(k) for k in attrs.get("kernel_shape", weight.shape[2:])]
    strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * spatial)]
    pads = _spatial_pads(attrs, kernel, dilations, strides, list(x.shape[2:]))
    x, padding = _pad_asymmetric(x, pads)
    groups = int(attrs.get("group", 1))
    return [_CONV[spatial](x, weight, bias, strides, padding, dilations, groups)]


@register("ConvTranspose", 11, 22)
def conv_transpose(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x, weight, bias = required(args, 0), required(args, 1), optional(args, 2)
    spatial = _spatial_rank(x, "ConvTranspose", _CONV_TRANSPOSE)
    if "output_shape" in attrs or text(attrs, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOperatorForm(
            "output_shape and SAME auto_pad are not supported: export with explicit padding"
        )
    pads = [int(p) for p in attrs.get("pads", [0] * (2 * spatial))]
    if pads[:spatial] != pads[spatial:]:
        raise UnsupportedOperatorForm("asymmetric pads are not supported")
    return [
        _CONV_TRANSPOSE[spatial](
            x,
            weight,
            bias,
            stride=[int(s) for s in attrs.get("strides", [1] * spatial)],
            padding=pads[:spatial],
            output_padding=[int(p) for p in attrs.get("output_padding", [0] * spatial)],
            groups=int(attrs.get("group", 1)),
            dilation=[int(d) for d in attrs.get("dilations", [1] * spatial)],
        )
    ]


@register("MaxPool", 11, 12, 22)
def max_pool(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    spatial = _spatial_rank(x, "MaxPool", _MAX_POOL)
    if int(attrs.get("storage_order", 0)):
        raise UnsupportedOperatorForm("storage_order=1 is not supported")
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * spatial)]
    pads = _spatial_pads(attrs, kernel, dilations, strides, list(x.shape[2:]))
    x, padding = _pad_asymmetric(x, pads, value=-math.inf)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    return [_MAX_POOL[spatial](x, kernel, strides, padding, dilations, ceil_mode=ceil_mode)]


@register("AveragePool", 11, 19, 22)
def average_pool(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    spatial = _spatial_rank(x, "AveragePool", _AVG_POOL)
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * spatial)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * spatial)]
    if any(d != 1 for d in dilations):
        raise UnsupportedOperatorForm("dilated average pooling is not supported")
    pads = _spatial_pads(attrs, kernel, dilations, strides, list(x.shape[2:]))
    include_pad = bool(attrs.get("count_include_pad", 0))
    if pads[:spatial] != pads[spatial:] or any(
        p > k // 2 for p, k in zip(pads, kernel * 2, strict=True)
    ):
        if not include_pad:
            raise UnsupportedOperatorForm(
                "asymmetric or wide padding without count_include_pad is not supported"
            )
        x, padding = F.pad(x, _torch_order(pads)), [0] * spatial
    else:
        padding = pads[:spatial]
    return [
        _AVG_POOL[spatial](
            x,
            kernel,
            strides,
            padding,
            ceil_mode=bool(attrs.get("ceil_mode", 0)),
            count_include_pad=include_pad,
        )
    ]


def _torch_order(pads: list[int]) -> list[int]:
    spatial = len(pads) // 2
    order: list[int] = []
    for axis in reversed(range(spatial)):
        order += [pads[axis], pads[axis + spatial]]
    return order


@register("GlobalAveragePool", 1, 22)
def global_average_pool(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    return [x.mean(dim=tuple(range(2, x.dim())), keepdim=True)]


@register("GlobalMaxPool", 1, 22)
def global_max_pool(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    return [x.amax(dim=tuple(range(2, x.dim())), keepdim=True)]


@register("BatchNormalization", 9, 14, 15)
def batch_normalization(args: Inputs, attrs: Attributes) -> list[Tensor]:
    if int(attrs.get("training_mode", 0)):
        raise UnsupportedOperatorForm(
            "training_mode=1 is not supported: export the model in eval mode (model.eval())"
        )
    x, scale, bias, mean, var = (required(args, i) for i in range(5))
    epsilon = float(attrs.get("epsilon", 1e-5))
    return [F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)]


@register("InstanceNormalization", 6, 22)
def instance_normalization(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x, scale, bias = (required(args, i) for i in range(3))
    return [F.instance_norm(x, weight=scale, bias=bias, eps=float(attrs.get("epsilon", 1e-5)))]


@register("LayerNormalization", 17)
def layer_normalization(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """Normalises over the axes from `axis` on; scale and bias broadcast to them."""
    x, scale, bias = required(args, 0), required(args, 1), optional(args, 2)
    axis = int(attrs.get("axis", -1))
    axis = axis + x.dim() if axis < 0 else axis
    shape = list(x.shape[axis:])
    epsilon = float(attrs.get("epsilon", 1e-5))
    expanded_bias = None if bias is None else bias.expand(shape)
    return [F.layer_norm(x, shape, scale.expand(shape), expanded_bias, epsilon)]


@register("MatMul", 9, 13)
def matmul(args: Inputs, attrs: Attributes) -> list[Tensor]:
    return [torch.matmul(required(args, 0), required(args, 1))]


@register("Gemm", 11, 13)
def gemm(args: Inputs, attrs: Attributes) -> list[Tensor]:
    a, b, c = required(args, 0), required(args, 1), optional(args, 2)
    if int(attrs.get("transA", 0)):
        a = a.T
    if int(attrs.get("transB", 0)):
        b = b.T
    out = float(attrs.get("alpha", 1.0)) * (a @ b)  # (m, n)
    if c is not None:
        out = out + float(attrs.get("beta", 1.0)) * c
    return [out]


def _softmax_over_2d(fn: Callable[..., Tensor]) -> OpFn:
    """Versions 1 and 11: the input is coerced to 2-D at `axis` (default 1) first."""

    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        x = required(args, 0)
        axis = int(attrs.get("axis", 1))
        axis = axis + x.dim() if axis < 0 else axis
        flat = x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return [fn(flat, dim=1).reshape(x.shape)]

    return run


def _softmax_on_axis(fn: Callable[..., Tensor]) -> OpFn:
    """Version 13: along one axis (default -1), like torch."""

    def run(args: Inputs, attrs: Attributes) -> list[Tensor]:
        return [fn(required(args, 0), dim=int(attrs.get("axis", -1)))]

    return run


register("Softmax", 11)(_softmax_over_2d(F.softmax))
register("Softmax", 13)(_softmax_on_axis(F.softmax))
register("LogSoftmax", 11)(_softmax_over_2d(F.log_softmax))
register("LogSoftmax", 13)(_softmax_on_axis(F.log_softmax))


@register("Dropout", 10)
def dropout_ratio_attribute(args: Inputs, attrs: Attributes) -> list[Tensor]:
    x = required(args, 0)
    return [x, torch.ones_like(x, dtype=torch.bool)]  # inference: identity, mask all kept


@register("Dropout", 12, 13, 22)
def dropout(args: Inputs, attrs: Attributes) -> list[Tensor]:
    """Ratio and training mode became inputs in version 12; a graph that trains is refused
    (its output would be random)."""
    x, training_mode = required(args, 0), optional(args, 2)
    if training_mode is not None and bool(training_mode.item()):
        raise UnsupportedOperatorForm(
            "training_mode=True makes the output random: export the model in eval mode"
        )
    return [x, torch.ones_like(x, dtype=torch.bool)]
