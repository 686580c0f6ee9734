"""`LoadedClassifier`: a frozen classifier that takes [0, 1] pixels and exposes its features.

Every inversion method talks to this wrapper only. It applies the declared normalisation
inside (so generators always work in [0, 1] pixel space), stays in eval mode whatever its
parent does, and returns the features used by the diversity losses: the input of the last
`nn.Linear` that runs in a forward pass (found once by hooks), else the logits. A wrapped
module may instead provide `forward_with_features(x) -> (logits, features)` itself, as the ONNX
interpreter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from models.device import to_channels_last

__all__ = ["LoadedClassifier"]


class LoadedClassifier(nn.Module):
    """A frozen classifier over [0, 1] images of `input_shape`, with K = `num_classes` logits."""

    mean: torch.Tensor  # (1, C, 1, 1)
    inv_std: torch.Tensor  # (1, C, 1, 1)

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        class_names: Sequence[str],
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        *,
        source_format: str = "torch",
        architecture: str | None = None,
    ) -> None:
        super().__init__()
        channels, height, width = (int(d) for d in input_shape)
        self.model = model
        self.input_shape: tuple[int, int, int] = (channels, height, width)
        self.class_names: tuple[str, ...] = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.source_format = source_format
        self.architecture = architecture
        mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
        std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1).expand(1, channels, 1, 1).clone())
        self.register_buffer(
            "inv_std", (1.0 / std_t).view(1, -1, 1, 1).expand(1, channels, 1, 1).clone()
        )
        self._captured: torch.Tensor | None = None
        self._capturing = False
        self._hook: RemovableHandle | None = None
        self.feature_layer: str = "logits"
        self.eval()
        self.requires_grad_(False)
        # NHWC convolutions are faster on CPU (oneDNN) and on GPU; values are unchanged.
        to_channels_last(self.model)
        if not hasattr(model, "forward_with_features"):
            self._attach_feature_hook()
        else:
            self.feature_layer = str(getattr(model, "feature_name", "model"))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def train(self, mode: bool = True) -> LoadedClassifier:
        """Always eval: the classifier under audit is frozen, whatever its parent asks."""
        return super().train(False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.inv_std  # (n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (n, c, h, w) → logits (n, K)."""
        if self._wraps_features():
            return self.forward_with_features(x)[0]
        return self.model(self.normalise(x))  # (n, K)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[0, 1] images (n, c, h, w) → (logits (n, K), features (n, d))."""
        logits, features = self._logits_and_raw_features(self.normalise(x))
        return logits, features.flatten(1)

    def forward_flops(self) -> int:
        """FLOPs of one sample's forward pass (matrix products and convolutions, as torch's
        FlopCounterMode counts them: 2 per multiply-add); sizes the generator
        (`models.contracts.cost.classifier_sized_width`)."""
        x = torch.zeros(2, *self.input_shape, device=self.device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            self(x)
        return counter.get_total_flops() // 2

    def batch_norms(self) -> list[nn.Module]:
        """The BatchNorm layers with running statistics: DeepInversion's data-free prior for
        detector-aware c3. An ONNX export has none: it folds them into its convolutions."""
        return [
            m
            for m in self.model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
        ]

    def class_directions(self) -> torch.Tensor | None:
        """(K, d): ∂logit_k / ∂features, the rows of the last layer's weights (the head after
        the features is that one affine layer): data-free class prototypes (issue 15). None
        when the classifier has no feature layer before its logits."""
        probe = torch.full((1, *self.input_shape), 0.5, device=self.device, requires_grad=True)
        with torch.enable_grad():
            logits, features = self._logits_and_raw_features(self.normalise(probe))
            if features is logits or not features.requires_grad:
                return None
            rows = [
                torch.autograd.grad(logits[0, k], features, retain_graph=True)[0].flatten()
                for k in range(self.num_classes)
            ]
        return torch.stack(rows)

    def _logits_and_raw_features(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images → (logits, the features as the graph holds them, unflattened:
        the tensor the logits were computed from)."""
        if self._wraps_features():
            logits, features = self.model.forward_with_features(z)  # type: ignore[operator]
            return logits, features
        if self._hook is None:
            logits = self.model(z)
            return logits, logits
        self._capturing, self._captured = True, None
        try:
            logits = self.model(z)
        finally:
            self._capturing = False
        features = self._captured if self._captured is not None else logits
        self._captured = None
        return logits, features

    def _wraps_features(self) -> bool:
        return hasattr(self.model, "forward_with_features")

    def _attach_feature_hook(self) -> None:
        """Find the last `nn.Linear` executed in a forward pass and hook its input."""
        order: list[str] = []
        probes = []
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear):
                probes.append(
                    module.register_forward_pre_hook(lambda _m, _a, name=name: order.append(name))
                )
        if not probes:
            return
        try:
            with torch.no_grad():
                probe = torch.full((1, *self.input_shape), 0.5, device=self.device)
                self.model(self.normalise(probe))
        finally:
            for handle in probes:
                handle.remove()
        if not order:
            return
        self.feature_layer = order[-1]
        layer = self.model.get_submodule(order[-1])
        self._hook = layer.register_forward_pre_hook(self._capture_input)

    def _capture_input(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._capturing and args:
            self._captured = args[0]
