"""The conditioned generator G(z, c) of C3 (Suhail & Sethi, arXiv:2503.20187, Sec. 3).

z ⊕ c → FC → reshape to (w₀, h₀, w₀') → transposed convolutions that double the size, each with
BatchNorm, LeakyReLU and channel dropout → 3x3 conv → centre crop → sigmoid into [0, 1].
In eval mode each BatchNorm is folded into the layer before it (same values, fewer passes).
After the first up-convolution the label is injected again as a *hot conditioning matrix*:
K planes, all zeros except the plane of the label, all ones ("deeper conditioning", so the
label cannot be ignored). The number of up-convolutions adapts to the declared input shape so
that the first feature map is about 5..8 pixels on its shorter side (28x28 → 7x7 base); the
layer sizes come from `models.contracts.cost.generator_plan`, which the API's memory estimate
uses too. Its width is the config's; the adaptive recipe leaves it open and sizes it to the
classifier's FLOPs (`models.methods.generator_width`): half the paper's width for a classifier
cheaper than that generator.

Dropout masks come from a `torch.Generator` passed in by the caller, never the global RNG, so
a run resumed from a checkpoint draws exactly the same masks as an uninterrupted one.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from models.contracts.cost import generator_plan

__all__ = ["ConditionedGenerator"]


def _bn_affine(norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = scale · x + shift, per channel."""
    mean, var = norm.running_mean, norm.running_var
    if mean is None or var is None:
        raise RuntimeError("the generator's BatchNorm layers track running statistics")
    scale = norm.weight / torch.sqrt(var + norm.eps)
    return scale, norm.bias - mean * scale


class ConditionedGenerator(nn.Module):
    """G(z, c, y): latent (n, d), conditioning vector (n, K), labels (n,) → images (n, C, H, W)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        latent_dim: int = 100,
        width: int = 16,
        dropout: float = 0.5,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        channels, height, out_width = input_shape
        self.output_shape = (channels, height, out_width)
        self.num_classes = num_classes
        self.latent_dim = latent_dim
        self.dropout = float(dropout)
        self.negative_slope = float(negative_slope)
        plan = generator_plan(input_shape, num_classes, latent_dim, width)
        self.plan, steps = plan, plan.steps
        self.base_h, self.base_w, self.inject_at = plan.base_h, plan.base_w, plan.inject_at
        widths = list(plan.widths)
        self.widths = widths
        self.fc = nn.Linear(latent_dim + num_classes, widths[0] * self.base_h * self.base_w)
        self.fc_norm = nn.BatchNorm2d(widths[0])
        ups, norms = [], []
        for level in range(steps):
            c_in = widths[level] + (num_classes if level == self.inject_at else 0)
            ups.append(nn.ConvTranspose2d(c_in, widths[level + 1], 4, stride=2, padding=1))
            norms.append(nn.BatchNorm2d(widths[level + 1]))
        self.ups = nn.ModuleList(ups)
        self.norms = nn.ModuleList(norms)
        self.to_pixels = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(
        self,
        z: torch.Tensor,
        condition: torch.Tensor,
        labels: torch.Tensor,
        *,
        dropout: bool = False,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """`dropout` switches channel dropout on (training, or diverse sampling)."""
        n = z.shape[0]
        if self.training:
            x = self.fc(torch.cat([z, condition], dim=1))  # (n, w0 * h0 * w0')
            x = self.fc_norm(x.view(n, self.widths[0], self.base_h, self.base_w))
        else:  # BatchNorm folded into the layer before it: same values, one pass fewer
            weight, bias = self._folded_fc()
            x = F.linear(torch.cat([z, condition], dim=1), weight, bias)
            x = x.view(n, self.widths[0], self.base_h, self.base_w)  # (n, w0, h0, w0')
        x = F.leaky_relu(x, self.negative_slope)
        for level, (up_module, norm_module) in enumerate(zip(self.ups, self.norms, strict=True)):
            up = cast(nn.ConvTranspose2d, up_module)
            norm = cast(nn.BatchNorm2d, norm_module)
            if self.training:
                x = norm(self._up(level, up.weight, up.bias, x, labels))
            else:
                scale, shift = _bn_affine(norm)
                weight = up.weight * scale.view(1, -1, 1, 1)  # (c_in, c_out, 4, 4)
                bias = shift if up.bias is None else up.bias * scale + shift
                x = self._up(level, weight, bias, x, labels)
            x = F.leaky_relu(x, self.negative_slope)  # (n, w', 2h, 2w)
            if dropout and self.dropout > 0:
                x = self._channel_dropout(x, rng)
        x = self.to_pixels(x)  # (n, C, H', W'), H' >= H, W' >= W
        _, height, width = self.output_shape
        top = (x.shape[2] - height) // 2
        left = (x.shape[3] - width) // 2
        x = x[:, :, top : top + height, left : left + width]  # (n, C, H, W)
        return torch.sigmoid(x)

    def _folded_fc(self) -> tuple[torch.Tensor, torch.Tensor]:
        """FC weights with the following BatchNorm (per channel of the reshaped map) folded in."""
        scale, shift = _bn_affine(self.fc_norm)
        per_feature = self.base_h * self.base_w
        scale = scale.repeat_interleave(per_feature)  # (w0 * h0 * w0',)
        shift = shift.repeat_interleave(per_feature)
        return self.fc.weight * scale[:, None], self.fc.bias * scale + shift

    def _up(
        self,
        level: int,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        x: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """The ×2 transposed convolution of `level`; at `inject_at` its input is x ⊕ the hot
        conditioning matrix (K planes, the label's all ones).

        Computed without building the K planes: the convolution is linear, so its response to
        the hot matrix is the response of the label's plane alone, the same map for every
        sample of that label. That map is computed once per label in the batch (a grouped
        transposed convolution of an all-ones plane) and added: the same values as
        convolving the concatenation, at a cost that no longer grows with K · n.
        """
        if level != self.inject_at:
            return F.conv_transpose2d(x, weight, bias, stride=2, padding=1)
        channels = x.shape[1]
        out = F.conv_transpose2d(x, weight[:channels], bias, stride=2, padding=1)
        present, index = torch.unique(labels, return_inverse=True)  # (u,), (n,)
        ones = x.new_ones(1, len(present), x.shape[2], x.shape[3])
        maps = F.conv_transpose2d(
            ones, weight[channels:][present], stride=2, padding=1, groups=len(present)
        )  # (1, u · c_out, 2h, 2w)
        maps = maps.view(len(present), -1, maps.shape[2], maps.shape[3])  # (u, c_out, 2h, 2w)
        return out + maps[index]  # (n, c_out, 2h, 2w)

    def _channel_dropout(self, x: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        keep = 1.0 - self.dropout
        mask = torch.rand(x.shape[0], x.shape[1], 1, 1, generator=rng, device=x.device) < keep
        return x * mask.to(x.dtype) / keep  # (n, c, h, w)
