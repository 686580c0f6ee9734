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
    model: nn.Module, shape: Shape, *, dynamo: bool = True, opset: int | None = None
) -> bytes:
    """Export with torch.onnx.export (dynamic batch), both exporters; returns the .onnx bytes."""
    example = torch.rand(2, *shape)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
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
            dynamic_axes={"x": {0: "batch"}},
            opset_version=opset or 17,
        )
        return buffer.getvalue()


@lru_cache(maxsize=16)
def trained_onnx_bytes(
    architecture: str = "paper-cnn", shape: Shape = (1, 28, 28), dynamo: bool = True
) -> bytes:
    """A digits-trained registered architecture exported to ONNX (cached)."""
    return onnx_bytes(trained_model(architecture, shape), shape, dynamo=dynamo)


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
