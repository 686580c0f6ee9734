"""Factories for test classifiers and data, shared by every test package.

Tiny classifiers are trained on scikit-learn's digits in well under a second and cached per
process, so tests never retrain the same one; every accessor returns a fresh copy (or
immutable bytes), so a test cannot leak changes into another. Upload formats (safetensors,
ONNX, npz reference sets) and refused formats (pickle, TorchScript, .pt2) come as bytes.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from models.architectures import build_architecture
from models.classifier import LoadedClassifier
from models.contracts.classifier import ClassifierSpec
from models.digits import DigitsData, load_digits_data, train_classifier
from models.loading import load_classifier

DIGIT_CLASSES = tuple(str(d) for d in range(10))
Shape = tuple[int, int, int]


@lru_cache(maxsize=8)
def digits(shape: Shape = (1, 28, 28)) -> DigitsData:
    """The digits resized to `shape`, stratified 70/30 split (cached; tensors are shared)."""
    return load_digits_data(shape)


@lru_cache(maxsize=16)
def _trained(
    architecture: str, shape: Shape, epochs: int, config_items: tuple[Any, ...]
) -> nn.Module:
    result = train_classifier(
        architecture, digits(shape), epochs=epochs, seed=0, config=dict(config_items)
    )
    return result.model


def trained_model(
    architecture: str = "mlp", shape: Shape = (1, 28, 28), epochs: int = 3, **config: Any
) -> nn.Module:
    """A classifier trained on digits for a few epochs (eval mode, a fresh copy)."""
    model = _trained(architecture, tuple(shape), epochs, tuple(sorted(config.items())))
    return copy.deepcopy(model).eval()


def random_model(
    architecture: str = "paper-cnn",
    shape: Shape = (1, 28, 28),
    num_classes: int = 10,
    **config: Any,
) -> nn.Module:
    """An untrained registered architecture with seeded weights (eval mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_architecture(architecture, shape, num_classes, **config).eval()


def spec(
    fmt: str = "safetensors",
    shape: Shape = (1, 28, 28),
    num_classes: int = 10,
    architecture: str | None = "mlp",
    **extra: Any,
) -> ClassifierSpec:
    names = DIGIT_CLASSES if num_classes == 10 else tuple(f"class {k}" for k in range(num_classes))
    return ClassifierSpec.model_validate(
        {
            "format": fmt,
            "input_shape": list(shape),
            "class_names": list(names),
            "architecture": architecture if fmt == "safetensors" else None,
            **extra,
        }
    )


def safetensors_bytes(model: nn.Module) -> bytes:
    """A module's state_dict as safetensors bytes (what users upload with an arch name)."""
    return safetensors_save({k: v.detach().contiguous() for k, v in model.state_dict().items()})


def onnx_bytes(
    model: nn.Module,
    shape: Shape,
    *,
    dynamo: bool = True,
    opset: int | None = None,
    fixed_batch: bool = False,
) -> bytes:
    """Export with torch.onnx.export, either exporter; returns the .onnx bytes.

    A dynamic batch by default; `fixed_batch` exports a batch of 1 without dynamic axes, and
    with the default exporter and opset that is the plain `torch.onnx.export(model, (x,))`.
    """
    example = torch.rand(1 if fixed_batch else 2, *shape)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo and fixed_batch and opset is None:
            program = torch.onnx.export(model, (example,))  # the most common call
            assert program is not None
            return program.model_proto.SerializeToString()
        if dynamo:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=None if fixed_batch else ({0: torch.export.Dim("batch")},),
                opset_version=opset,
                verbose=False,
            )
            assert program is not None
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes=None if fixed_batch else {"x": {0: "batch"}},
            opset_version=opset or 17,
        )
        return buffer.getvalue()


@lru_cache(maxsize=16)
def trained_onnx_bytes(
    architecture: str = "paper-cnn", shape: Shape = (1, 28, 28), dynamo: bool = True
) -> bytes:
    """A digits-trained registered architecture exported to ONNX (cached)."""
    return onnx_bytes(trained_model(architecture, shape), shape, dynamo=dynamo)


# -- what teams export: small model families for the ONNX exporter matrix ------------------


class _SmallCnn(nn.Module):
    """paper-cnn-like, flattened with `x.view(x.size(0), -1)` (Shape → Gather → Reshape)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16 * 7 * 7, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(nn.functional.leaky_relu(self.conv1(x), 0.2), 2)
        x = nn.functional.max_pool2d(nn.functional.leaky_relu(self.conv2(x), 0.2), 2)
        x = x.view(x.size(0), -1)  # (n, 784)
        return self.fc2(nn.functional.leaky_relu(self.fc1(x), 0.2))


class _BatchNormCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AvgPool2d(2),
        )
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (n, 16, 8, 8)
        return self.head(x.reshape(x.shape[0], -1))


class _ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.blocks = nn.Sequential(
            _ResidualBlock(8, 8, 1), _ResidualBlock(8, 16, 2), _ResidualBlock(16, 32, 2)
        )
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class _InvertedResidual(nn.Module):
    """MobileNetV3-style: expand, depthwise conv, squeeze-excite, project."""

    def __init__(self, channels: int, expand: int) -> None:
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.Hardswish(),
        )
        self.squeeze, self.excite = nn.Conv2d(hidden, 8, 1), nn.Conv2d(8, hidden, 1)
        self.project = nn.Sequential(
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise(self.expand(x))
        weights = nn.functional.adaptive_avg_pool2d(y, 1)
        weights = nn.functional.hardsigmoid(self.excite(torch.relu(self.squeeze(weights))))
        return x + self.project(y * weights)


class _MobileNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.blocks = nn.Sequential(_InvertedResidual(16, 4), _InvertedResidual(16, 2))
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 32),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class _VitMultiheadAttention(nn.Module):
    """One ViT block: patch embedding, class token expanded to the batch, nn.MultiheadAttention."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 7, 7)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.1)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2)  # (n, 16, dim)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos  # (n, 17, dim)
        h = self.norm1(x)
        x = x + self.attention(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x)[:, 0])


class _VitEncoder(nn.Module):
    """Patch embedding into a two-layer nn.TransformerEncoder (pre-norm, GELU), mean-pooled."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 8, 8)
        self.pos = nn.Parameter(torch.randn(1, 16, dim) * 0.1)
        layer = nn.TransformerEncoderLayer(
            dim, 4, 64, dropout=0.1, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (n, 16, dim)
        return self.head(self.norm(self.encoder(x)).mean(1))


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(64, 32),
            nn.Tanh(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Activations(nn.Module):
    """GELU, SiLU, Hardswish, Mish, ELU, Softplus and a sigmoid gate in one small net."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1, self.fc2, self.fc3 = (
            nn.Linear(8 * 14 * 14, 64),
            nn.Linear(64, 64),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.silu(nn.functional.avg_pool2d(nn.functional.gelu(self.conv(x)), 2))
        x = nn.functional.hardswish(self.fc1(x.view(x.shape[0], -1)))
        x = nn.functional.softplus(nn.functional.elu(nn.functional.mish(self.fc2(x))))
        return self.fc3(torch.sigmoid(x) * x)


ONNX_FAMILIES: dict[str, tuple[type[nn.Module], Shape]] = {
    "cnn": (_SmallCnn, (1, 28, 28)),
    "batchnorm-cnn": (_BatchNormCnn, (3, 32, 32)),
    "resnet": (_ResNet, (3, 32, 32)),
    "mobilenet-depthwise": (_MobileNet, (3, 32, 32)),
    "vit-multihead-attention": (_VitMultiheadAttention, (1, 28, 28)),
    "vit-transformer-encoder": (_VitEncoder, (3, 32, 32)),
    "mlp": (_Mlp, (1, 28, 28)),
    "activations": (_Activations, (1, 28, 28)),
}
# How a team might call torch.onnx.export: keyword arguments of `onnx_bytes`.
EXPORT_MODES: dict[str, dict[str, Any]] = {
    "legacy-dynamic": {"dynamo": False, "opset": 20},  # the legacy exporter's default opset
    "legacy-fixed": {"dynamo": False, "opset": 20, "fixed_batch": True},
    "legacy-opset14": {"dynamo": False, "opset": 14},  # the lowest opset attention exports at
    "dynamo-default": {"dynamo": True, "fixed_batch": True},  # torch.onnx.export(model, (x,))
    "dynamo-opset18": {"dynamo": True, "opset": 18},
}


def onnx_family(name: str) -> tuple[nn.Module, Shape]:
    """A seeded family member in eval mode; BatchNorm gets non-trivial statistics."""
    cls, shape = ONNX_FAMILIES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cls().eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.5, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
    return model, shape


@lru_cache(maxsize=64)
def exported_family(name: str, mode: str) -> bytes:
    """`onnx_family(name)` exported as EXPORT_MODES[mode] (cached for the session)."""
    model, shape = onnx_family(name)
    return onnx_bytes(model, shape, **EXPORT_MODES[mode])


def loaded(
    architecture: str = "mlp", shape: Shape = (1, 28, 28), epochs: int = 3
) -> LoadedClassifier:
    """A trained classifier through the real upload path (safetensors bytes → load)."""
    model = trained_model(architecture, shape, epochs)
    return load_classifier(safetensors_bytes(model), spec("safetensors", shape, 10, architecture))


def reference_npz_bytes(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray | None = None
) -> bytes:
    """A reference set as .npz bytes: `x` (n, C, H, W) floats in [0, 1], `y` (n,) labels."""
    buffer = io.BytesIO()
    arrays = {"x": np.asarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, dtype=np.int64)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def digits_reference_npz(shape: Shape = (1, 28, 28), per_class: int | None = None) -> bytes:
    data = digits(shape)
    x, y = data.test_x, data.test_y
    if per_class is not None:
        keep = torch.cat([torch.nonzero(y == k).flatten()[:per_class] for k in range(10)])
        x, y = x[keep], y[keep]
    return reference_npz_bytes(x.numpy(), y.numpy())


# -- refused formats ---------------------------------------------------------------------


class _CreatesMarker:
    """Unpickling this would create `path`: proof that a loader executed pickled code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def pickle_payload_bytes(marker_path: str, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """A pickle whose loading would create `marker_path`."""
    return pickle.dumps({"state_dict": _CreatesMarker(marker_path)}, protocol=protocol)


def torch_save_bytes(obj: Any) -> bytes:
    """torch.save output (a zip with data.pkl): what a .pt/.pth upload is."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def torchscript_bytes(model: nn.Module, shape: Shape = (1, 28, 28)) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # torch.jit is deprecated: exactly why users still have such files
        torch.jit.save(torch.jit.trace(model.eval(), torch.rand(1, *shape)), buffer)
    return buffer.getvalue()


def pt2_bytes(model: nn.Module, shape: Shape = (1, 28, 28)) -> bytes:
    """A torch.export program saved as .pt2."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model.eval(), (torch.rand(1, *shape),)), buffer)
    return buffer.getvalue()


def upload_files(folder: Path, side: int = 8) -> tuple[Path, Path]:
    """What a user uploads, as files: a small MLP trained on digits at side×side (safetensors,
    architecture `mlp`) and its held-out reference set (.npz, 10 images a class)."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = (1, side, side)
    model = folder / "digits-mlp.safetensors"
    model.write_bytes(safetensors_bytes(trained_model("mlp", shape, epochs=10)))
    reference = folder / "held-out.npz"
    reference.write_bytes(digits_reference_npz(shape, per_class=10))
    return model, reference
