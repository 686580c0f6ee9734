"""Loading classifiers: ONNX round trips, safetensors, and every refused format."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from pydantic import ValidationError
from torch import nn

from models.architectures import build_architecture, list_architectures
from models.contracts.classifier import ClassifierSpec
from models.loading import (
    ClassifierRejected,
    canonical_bytes,
    check_classifier,
    load_classifier,
    probe_input_shape,
    probe_num_classes,
)
from tests import factories


class UnseenNet(nn.Module):
    """Not a registered architecture: BatchNorm, residual, GELU, avg-pool, padding, clamp."""

    def __init__(self, channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(channels, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh())
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Sequential(
            nn.Linear(8, 16), nn.GELU(), nn.Dropout(0.3), nn.Linear(16, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.leaky_relu(self.bn(self.stem(x)), 0.1)
        x = self.pool(x + self.block(x))
        x = nn.functional.pad(x, (1, 0, 0, 1)).clamp(-3, 3)
        x = torch.sigmoid(x).mean(dim=(2, 3))
        return self.head(x)


def _perturbed(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics, so folding bugs would show."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript-exporter"])
@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: UnseenNet(3, 5), (3, 20, 36)),
        (lambda: build_architecture("resnet-small", (3, 24, 40), 5, widths=(8, 16)), (3, 24, 40)),
        (lambda: build_architecture("paper-cnn", (1, 28, 28), 5), (1, 28, 28)),
    ],
    ids=["unseen-rgb-nonsquare", "resnet-small-rgb-nonsquare", "paper-cnn"],
)
def test_onnx_round_trip(make, shape: tuple[int, int, int], dynamo: bool) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = _perturbed(make())
    data = factories.onnx_bytes(model, shape, dynamo=dynamo)
    spec = factories.spec("onnx", shape, 5, mean=(0.5,), std=(0.25,))
    classifier = load_classifier(data, spec)

    x = torch.rand(4, *shape)
    with torch.no_grad():
        expected = model((x - 0.5) / 0.25)
    assert torch.allclose(classifier(x), expected, atol=1e-4, rtol=1e-4)

    x.requires_grad_(True)
    logits, features = classifier.forward_with_features(x)
    logits[:, 0].sum().backward()
    assert x.grad is not None
    assert x.grad.abs().sum() > 0
    assert features.shape[0] == 4
    assert features.shape[1] != 5

    # the data-free class prototypes: the head's weights, read through the graph by autograd
    directions = classifier.class_directions()
    assert directions is not None
    with torch.no_grad():
        logits, features = classifier.forward_with_features(torch.rand(16, *shape))
    bias = (logits - features @ directions.T).mean(dim=0)
    assert torch.allclose(features @ directions.T + bias, logits, atol=1e-4)

    report = check_classifier(classifier)
    assert report.num_classes == 5
    assert report.batch_norm_layers == 0  # an export folds BatchNorm into its convolutions
    assert report.param_count > 0
    assert probe_input_shape(data, "onnx") == shape
    assert probe_num_classes(data, "onnx", shape) == 5
    again = load_classifier(canonical_bytes(data, spec), spec)
    assert torch.allclose(again(x.detach()), expected, atol=1e-4, rtol=1e-4)


def test_onnx_old_opset_export() -> None:
    model = _perturbed(UnseenNet(1, 4))
    data = factories.onnx_bytes(model, (1, 16, 16), dynamo=False, opset=11)
    classifier = load_classifier(data, factories.spec("onnx", (1, 16, 16), 4))
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(classifier(x), model(x), atol=1e-4)


@pytest.mark.parametrize("architecture", list_architectures())
def test_safetensors_round_trip_for_every_architecture(architecture: str) -> None:
    shape = (3, 20, 36)
    model = factories.random_model(architecture, shape, 4)
    spec = factories.spec("safetensors", shape, 4, architecture)
    data = factories.safetensors_bytes(model)
    classifier = load_classifier(data, spec)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        assert torch.allclose(classifier(x), model(x), atol=1e-5)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert check_classifier(classifier).batch_norm_layers == len(norms)  # the data-free prior
    assert check_classifier(classifier).feature_dim > 0
    assert canonical_bytes(data, spec) == canonical_bytes(canonical_bytes(data, spec), spec)
    assert probe_num_classes(data, "safetensors", shape, architecture) == 4


def test_trained_classifier_features_are_the_last_linear_input() -> None:
    classifier = factories.loaded("paper-cnn", (1, 28, 28))
    assert classifier.feature_layer == "fc2"
    _, features = classifier.forward_with_features(torch.rand(3, 1, 28, 28))
    assert features.shape == (3, 128)
    head = classifier.model.get_submodule("fc2")
    assert isinstance(head, nn.Linear)
    assert torch.equal(classifier.class_directions(), head.weight)  # type: ignore[arg-type]


def test_a_classifier_without_a_feature_layer_has_no_class_directions() -> None:
    """A graph of convolutions only: its logits are its features, no prototypes to read."""
    model = nn.Sequential(nn.Conv2d(1, 3, 8), nn.Flatten()).eval()
    classifier = load_classifier(
        factories.onnx_bytes(model, (1, 8, 8), dynamo=False), factories.spec("onnx", (1, 8, 8), 3)
    )
    assert classifier.class_directions() is None


# -- refused -----------------------------------------------------------------------------


def _rejected(data: bytes, spec: ClassifierSpec, match: str) -> None:
    with pytest.raises(ClassifierRejected, match=match):
        load_classifier(data, spec)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickles_are_refused_without_running_them(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = factories.pickle_payload_bytes(str(marker), protocol=protocol)
    for fmt in ("safetensors", "onnx"):
        _rejected(payload, factories.spec(fmt), "pickle files are refused")
    with pytest.raises(ClassifierRejected, match="refused"):
        canonical_bytes(payload, factories.spec())
    assert not marker.exists()


def test_torch_save_checkpoints_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = factories.torch_save_bytes({"w": factories._CreatesMarker(str(marker))})
    _rejected(data, factories.spec(), r"\.pt/\.pth checkpoints are refused")
    _rejected(data, factories.spec("onnx"), "refused")
    assert not marker.exists()


def test_torchscript_and_pt2_are_refused() -> None:
    model = factories.random_model("mlp")
    _rejected(factories.torchscript_bytes(model), factories.spec(), "TorchScript")
    _rejected(factories.pt2_bytes(model), factories.spec("onnx"), r"\.pt2")


def test_broken_safetensors_are_refused() -> None:
    data = factories.safetensors_bytes(factories.random_model("mlp"))
    _rejected(data[: len(data) // 2], factories.spec(), "truncated")
    _rejected(data[:5], factories.spec(), "truncated")
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 1 << 42]}}
    ).encode()
    _rejected(struct.pack("<Q", len(header)) + header + b"\0" * 64, factories.spec(), "truncated")
    _rejected(struct.pack("<Q", 1 << 40) + b"{}", factories.spec(), "header declares")
    _rejected(b"\x10\0\0\0\0\0\0\0not json at all!", factories.spec(), "not a safetensors")
    _rejected(b"", factories.spec(), "empty")


def test_weights_that_do_not_fit_the_architecture_are_refused() -> None:
    data = factories.safetensors_bytes(factories.random_model("mlp", (1, 28, 28), 10))
    _rejected(data, factories.spec("safetensors", (1, 28, 28), 10, "paper-cnn"), "do not fit")
    _rejected(data, factories.spec("safetensors", (1, 20, 20), 10, "mlp"), "do not fit")
    _rejected(data, factories.spec("safetensors", (1, 28, 28), 10, "nope"), "unknown architecture")
    bad = factories.spec("safetensors", (1, 28, 28), 10, "mlp", architecture_config={"wide": 1})
    _rejected(data, bad, "cannot build")
    huge = factories.spec(
        "safetensors", (1, 28, 28), 10, "mlp", architecture_config={"hidden": [100_000, 100_000]}
    )
    _rejected(data, huge, "parameters: at most")


def test_class_count_mismatch_is_refused() -> None:
    model = factories.random_model("paper-cnn", (1, 28, 28), 12)
    safetensors = factories.safetensors_bytes(model)
    _rejected(
        safetensors,
        factories.spec("safetensors", (1, 28, 28), 10, "paper-cnn"),
        "declared 10 classes, model outputs 12",
    )
    onnx_data = factories.onnx_bytes(model, (1, 28, 28), dynamo=False)
    _rejected(
        onnx_data, factories.spec("onnx", (1, 28, 28), 10), "declared 10 classes, model outputs 12"
    )


def test_wrong_declared_shape_for_onnx_is_refused() -> None:
    data = factories.trained_onnx_bytes("paper-cnn", (1, 28, 28), dynamo=False)
    _rejected(data, factories.spec("onnx", (3, 28, 28), 10), "expects input")


def _onnx_model(nodes, inputs, outputs, initializers=(), opset=18, domain="") -> bytes:  # type: ignore[no-untyped-def]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    return model.SerializeToString()


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])


def _linear_nodes() -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 2], [0.1] * 32)
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, 16])
    nodes = [
        helper.make_node("Reshape", ["x", "s"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["y"]),
    ]
    return nodes, [weight, shape]


def test_handmade_onnx_graph_loads() -> None:
    nodes, inits = _linear_nodes()
    clf = load_classifier(_onnx_model(nodes, [X], [Y], inits), factories.spec("onnx", (1, 4, 4), 2))
    assert clf(torch.ones(3, 1, 4, 4)).shape == (3, 2)


def test_onnx_external_data_is_refused() -> None:
    nodes, inits = _linear_nodes()
    for location in ("weights.bin", "../../../../etc/passwd", "/etc/shadow"):
        weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 2], [0.1] * 32)
        weight.ClearField("float_data")
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location
        data = _onnx_model(nodes, [X], [Y], [weight, inits[1]])
        _rejected(data, factories.spec("onnx", (1, 4, 4), 2), "external data is refused")
        with pytest.raises(ClassifierRejected, match="external"):
            canonical_bytes(data, factories.spec("onnx", (1, 4, 4), 2))


def test_unsupported_onnx_operators_and_domains_are_refused() -> None:
    nodes, inits = _linear_nodes()
    loop = helper.make_node("Loop", ["m", "c"], ["y"])
    _rejected(
        _onnx_model([loop], [X], [Y]),
        factories.spec("onnx", (1, 4, 4), 2),
        "ONNX operator Loop is not supported",
    )
    custom = helper.make_node("Relu", ["x"], ["y"], domain="com.evil")
    _rejected(
        _onnx_model([custom], [X], [Y], opset=18, domain="com.evil"),
        factories.spec("onnx", (1, 4, 4), 2),
        "domain",
    )
    second = helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["n", 1, 4, 4])
    _rejected(
        _onnx_model(nodes, [X, second], [Y], inits),
        factories.spec("onnx", (1, 4, 4), 2),
        "2 inputs",
    )
    _rejected(b"\x08\x07garbage" * 3, factories.spec("onnx", (1, 4, 4), 2), "ONNX")


def test_classifier_with_nan_outputs_is_refused() -> None:
    model = factories.random_model("mlp", (1, 28, 28), 10)
    with torch.no_grad():
        model.net[-1].bias.fill_(float("nan"))  # type: ignore[index, union-attr]
    classifier = load_classifier(factories.safetensors_bytes(model), factories.spec())
    with pytest.raises(ClassifierRejected, match="NaN"):
        check_classifier(classifier)


def test_classifier_that_ignores_its_input_is_refused() -> None:
    model = factories.random_model("mlp", (1, 28, 28), 10)
    with torch.no_grad():
        model.net[1].weight.zero_()  # type: ignore[index, union-attr]
    classifier = load_classifier(factories.safetensors_bytes(model), factories.spec())
    with pytest.raises(ClassifierRejected, match="does not depend on its input"):
        check_classifier(classifier)


def test_spec_validation_messages() -> None:
    def refused(match: str, **fields: object) -> None:
        with pytest.raises(ValidationError, match=match):
            ClassifierSpec.model_validate(fields)

    refused("name the architecture", format="safetensors", input_shape=(1, 28, 28),
            class_names=("a", "b"))  # fmt: skip
    refused("mean has 2 values", format="onnx", input_shape=(3, 28, 28), class_names="a,b",
            mean=(0.1, 0.2))  # fmt: skip
    refused("unique", format="onnx", input_shape=(1, 28, 28), class_names=("a", "a"))
    refused("Extra inputs", format="onnx", input_shape="1,8,8", class_names="a,b", x=1)
    spec = factories.spec("onnx", (3, 20, 36), 4, mean=(0.1, 0.2, 0.3), std=(1.0,))
    assert ClassifierSpec.model_validate_json(spec.model_dump_json()) == spec
    assert ClassifierSpec.model_validate(
        {"format": "onnx", "input_shape": "3x20x36", "class_names": "a, b", "mean": "0.5"}
    ).input_shape == (3, 20, 36)


def test_unknown_architecture_config_key() -> None:
    with pytest.raises(ValueError, match="no config key 'depth'"):
        build_architecture("mlp", (1, 8, 8), 3, depth=3)


def test_onnx_graph_ending_in_softmax_yields_logits() -> None:
    model = nn.Sequential(factories.random_model("mlp", (1, 8, 8), 3), nn.Softmax(dim=1)).eval()
    classifier = load_classifier(
        factories.onnx_bytes(model, (1, 8, 8), dynamo=False), factories.spec("onnx", (1, 8, 8), 3)
    )
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(classifier(x).softmax(1), model(x), atol=1e-5)
