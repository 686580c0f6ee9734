"""The classifier zoo: members the inversion engine is tuned and regression-tested on.

Each member is a (name, digits variant, torch architecture, training recipe, upload route).
Members train in seconds to about a minute on one CPU thread, on data made here from
scikit-learn's digits (`models.digits`). Trained weights and exports are cached under
`bench/.zoo-cache/`, keyed by a hash of the member's definition (its fields and the source of
its architecture), so re-runs skip training.

Upload routes, as a user would upload the classifier:
- "onnx": exported with `torch.onnx.export(dynamo=False)` and `dynamo=True`, both loaded
  through `models.loading.load_classifier`. The inversion runs on one of them (the dynamo
  export by default); when an export is refused today the refusal is printed and the member
  runs on its torch module instead, marked as such.
- "safetensors": a registered architecture (`models.architectures`) uploaded as weights.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn
from torch.nn import functional as F

from models.architectures import build_architecture
from models.classifier import LoadedClassifier
from models.contracts.classifier import ClassifierRejected, ClassifierSpec
from models.digits import DigitsData, load_digits_variant
from models.loading import load_classifier

logger = logging.getLogger(__name__)

CACHE_DIR = Path(__file__).resolve().parent / ".zoo-cache"
CACHE_VERSION = 1


# -- architectures ---------------------------------------------------------------------------


class GeluBnCnn(nn.Module):
    """Conv–BatchNorm–GELU ×3 with max-pooling, global average pool, one linear layer."""

    def __init__(self, shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        c = shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.BatchNorm2d(16), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))  # (n, K)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.skip(x))


class ResNetMaxPool(nn.Module):
    """Stem conv–BN–ReLU–MaxPool, three residual blocks (BatchNorm), average pool, linear."""

    def __init__(self, shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(shape[0], 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.blocks = nn.Sequential(ResBlock(16, 16, 1), ResBlock(16, 32, 2), ResBlock(32, 64, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (n, c, 1, 1)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expand, depthwise 3x3, squeeze-excitation, 1x1 project."""

    def __init__(self, c_in: int, c_out: int, expand: int, stride: int) -> None:
        super().__init__()
        hidden = c_in * expand
        self.use_skip = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.Hardswish(),
            SqueezeExcite(hidden, max(8, hidden // 4)),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.use_skip else out


class MobileNetSE(nn.Module):
    """MobileNetV3-style: Hardswish stem, depthwise inverted residuals with SE, linear head."""

    def __init__(self, shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(shape[0], 16, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.Hardswish(),
        )
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 2, 1),
            InvertedResidual(16, 24, 3, 2),
            InvertedResidual(24, 24, 3, 1),
            InvertedResidual(24, 40, 3, 2),
        )
        self.head = nn.Sequential(nn.Linear(40, 64), nn.Hardswish(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class TinyViT(nn.Module):
    """Patch convolution, learned positions, pre-norm Transformer encoder, mean-pooled tokens."""

    def __init__(
        self, shape: tuple[int, int, int], classes: int, patch: int = 4, dim: int = 48
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.patch = nn.Conv2d(c, dim, patch, stride=patch)
        tokens = (h // patch) * (w // patch)
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        layer = nn.TransformerEncoderLayer(
            dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.position  # (n, T, dim)
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))


class PlainCnn(nn.Module):
    """conv–ReLU–pool ×2, FC 128, FC K; `softmax=True` ends the graph in Softmax."""

    def __init__(self, shape: tuple[int, int, int], classes: int, softmax: bool = False) -> None:
        super().__init__()
        c, h, w = shape
        self.conv1 = nn.Conv2d(c, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * (h // 4) * (w // 4), 128)
        self.fc2 = nn.Linear(128, classes)
        self.softmax = softmax

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        return F.softmax(logits, dim=1) if self.softmax else logits


class StridedCnn(nn.Module):
    """Strided conv–BatchNorm–SiLU stack (any size, e.g. non-square or 64x64), average pool."""

    def __init__(self, shape: tuple[int, int, int], classes: int, stages: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = shape[0]
        for stage in range(stages):
            c_out = 16 * 2 ** min(stage, 2)
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out)]
            layers.append(nn.SiLU())
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in, 96)
        self.fc2 = nn.Linear(96, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(self.features(x).mean(dim=(2, 3)))))


class PairsCnn(nn.Module):
    """Two digits side by side, 100 classes: conv–BN–ReLU–pool ×3, FC 256, FC 100."""

    def __init__(self, shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc1 = nn.Linear(64 * (h // 8) * (w // 8), 256)
        self.fc2 = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.features(x).flatten(1))))


class UnseenNet(nn.Module):
    """bench/inversion.py's unseen network: GELU, BatchNorm, a residual, SiLU, mean pooling."""

    def __init__(self, shape: tuple[int, int, int], classes: int) -> None:
        super().__init__()
        c = shape[0]
        self.c1, self.b1 = nn.Conv2d(c, 24, 3, padding=1), nn.BatchNorm2d(24)
        self.c2, self.b2 = nn.Conv2d(24, 48, 3, padding=1, stride=2), nn.BatchNorm2d(48)
        self.c3, self.b3 = nn.Conv2d(48, 48, 3, padding=1), nn.BatchNorm2d(48)
        self.fc1, self.fc2 = nn.Linear(48, 64), nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.b1(self.c1(x)))
        x = F.relu(self.b2(self.c2(x)))
        x = (x + F.relu(self.b3(self.c3(x)))).mean(dim=(2, 3))
        return self.fc2(F.silu(self.fc1(x)))


def _registered(name: str, **config: Any) -> Callable[[tuple[int, int, int], int], nn.Module]:
    def build(shape: tuple[int, int, int], classes: int) -> nn.Module:
        return build_architecture(name, shape, classes, **config)

    build.__qualname__ = f"registered:{name}:{json.dumps(config, sort_keys=True)}"
    return build


# -- members ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How a member's classifier is trained (Adam or AdamW, shift augmentation)."""

    epochs: int = 20
    lr: float = 2e-3
    batch_size: int = 64
    label_smoothing: float = 0.0
    weight_decay: float = 0.0  # AdamW's decoupled decay when > 0


@dataclass(frozen=True)
class Member:
    name: str
    description: str
    variant: str  # models.digits variant: "grey", "tinted", "pairs"
    shape: tuple[int, int, int]
    build: Callable[[tuple[int, int, int], int], nn.Module] = field(compare=False)
    route: str = "onnx"  # "onnx" (both exporters) or "safetensors" (registered architecture)
    architecture: str | None = None  # registered name for the safetensors route
    classes: int | None = None  # keep digits 0..classes-1 only
    recipe: Recipe = Recipe()
    mean: float = 0.0  # normalisation declared with the upload
    std: float = 1.0

    def data(self) -> DigitsData:
        return load_digits_variant(self.variant, self.shape, classes=self.classes)

    def key(self) -> str:
        """Hash of everything that determines the trained weights and exports."""
        try:
            source = inspect.getsource(self.build)
        except (OSError, TypeError):
            source = self.build.__qualname__
        if isinstance(self.build, type):
            source += "".join(
                inspect.getsource(base)
                for base in self.build.__mro__[1:]
                if base.__module__ == __name__
            )
        payload = {
            "version": CACHE_VERSION,
            "torch": torch.__version__,
            "fields": {k: v for k, v in asdict(self).items() if k != "build"},
            "build": self.build.__qualname__,
            "source": source,
            "helpers": inspect.getsource(ResBlock)
            + inspect.getsource(InvertedResidual)
            + inspect.getsource(SqueezeExcite),
        }
        return hashlib.sha256(
            json.dumps(payload, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]


def _members() -> list[Member]:
    grey28 = (1, 28, 28)
    return [
        Member("paper-cnn", "the paper's CNN (LeakyReLU, dropout), the reference", "grey", grey28,
               _registered("paper-cnn"), route="safetensors", architecture="paper-cnn",
               recipe=Recipe(epochs=25, lr=1e-3)),
        Member("gelu-bn-cnn", "CNN, BatchNorm + GELU, global average pool", "grey", grey28,
               GeluBnCnn, mean=0.15, std=0.3),
        Member("resnet", "ResNet: BatchNorm, MaxPool stem, 3 residual blocks", "tinted",
               (3, 32, 32), ResNetMaxPool, mean=0.3, std=0.3, recipe=Recipe(epochs=15)),
        Member("mobilenet-se", "MobileNetV3-style: depthwise, Hardswish, squeeze-excitation",
               "grey", (1, 32, 32), MobileNetSE, classes=5, recipe=Recipe(epochs=30)),
        Member("vit", "tiny ViT: 4x4 patch conv, 2 pre-norm Transformer layers, LayerNorm",
               "grey", grey28, TinyViT, mean=0.15, std=0.3, recipe=Recipe(epochs=30)),
        Member("mlp", "MLP 256-128, ReLU, dropout (registered 'mlp')", "grey", grey28,
               _registered("mlp"), route="safetensors", architecture="mlp"),
        Member("softmax-cnn", "CNN whose graph ends in Softmax", "grey", grey28,
               lambda s, k: PlainCnn(s, k, softmax=True)),
        Member("rgb-nonsquare", "strided CNN, BatchNorm + SiLU, tinted RGB 3x32x40", "tinted",
               (3, 32, 40), StridedCnn, mean=0.3, std=0.3, recipe=Recipe(epochs=25)),
        Member("cnn-64", "strided CNN, BatchNorm + SiLU, 4 stages, 64x64", "grey",
               (1, 64, 64), lambda s, k: StridedCnn(s, k, stages=4), recipe=Recipe(epochs=15)),
        Member("pairs-100", "CNN on two digits side by side: 100 classes", "pairs",
               (1, 28, 56), PairsCnn, recipe=Recipe(epochs=8)),
        Member("label-smoothing", "plain CNN trained with label smoothing 0.1", "grey", grey28,
               PlainCnn, recipe=Recipe(label_smoothing=0.1)),
        Member("weight-decay", "plain CNN trained with heavy weight decay (AdamW 0.5)", "grey",
               grey28, PlainCnn, recipe=Recipe(weight_decay=0.5)),
        Member("unseen-net", "GELU, BatchNorm, residual, SiLU: tinted RGB 3x20x36", "tinted",
               (3, 20, 36), UnseenNet, mean=0.3, std=0.35, recipe=Recipe(epochs=30)),
    ]  # fmt: skip


MEMBERS: dict[str, Member] = {m.name: m for m in _members()}


# -- training, export, loading -----------------------------------------------------------------


@dataclass
class Prepared:
    """A trained member, loaded the way it is uploaded."""

    member: Member
    data: DigitsData
    classifier: LoadedClassifier  # what the inversion runs on
    accuracy: float  # of `classifier` on the held-out split
    train_seconds: float  # classifier training (0 when cached ... reported from the cache)
    cached: bool
    route: str  # e.g. "onnx dynamo", "safetensors", "torch (onnx refused)"
    exports: dict[str, str] = field(default_factory=dict)  # exporter → "ok, max |Δlogit| …"


def _train(member: Member, data: DigitsData, seed: int) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    model = member.build(member.shape, len(data.class_names))
    recipe = member.recipe
    optimizer: torch.optim.Optimizer
    if recipe.weight_decay > 0:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    rng = torch.Generator().manual_seed(seed)
    n = len(data.train_y)
    steps = recipe.epochs * -(-n // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=steps)
    start = time.perf_counter()
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(n, generator=rng)
        for first in range(0, n, recipe.batch_size):
            idx = order[first : first + recipe.batch_size]
            dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=rng))
            x = torch.roll(data.train_x[idx], shifts=(dy, dx), dims=(2, 3))
            x = (x - member.mean) / member.std
            out = model.logits(x) if isinstance(model, PlainCnn) else model(x)
            loss = F.cross_entropy(out, data.train_y[idx], label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    return model, time.perf_counter() - start


def export_onnx(model: nn.Module, shape: tuple[int, int, int], dynamo: bool) -> bytes:
    """`torch.onnx.export` with a dynamic batch dimension, as a user would call it."""
    example = torch.rand(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
            if program is None:
                raise RuntimeError("the dynamo exporter returned nothing")
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
            opset_version=17,
        )
        return buffer.getvalue()


class _LogProbabilities(nn.Module):
    """Torch fallback for a Softmax-terminated model: log p are logits up to a constant."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.inner(x).clamp_min(1e-30))


def _normalised(member: Member, model: nn.Module) -> nn.Module:
    """The torch module on [0, 1] pixels' normalised values, with logits out."""
    if isinstance(model, PlainCnn) and model.softmax:
        return _LogProbabilities(model)
    return model


def prepare(member: Member, *, seed: int = 0, route: str = "dynamo") -> Prepared:
    """Train (or load from the cache), export and load `member` as it would be uploaded.

    `route` picks which ONNX export the inversion runs on: "dynamo" or "legacy"; "torch" runs
    the torch module itself (its BatchNorm layers kept, as a safetensors upload of a registered
    architecture keeps them: an ONNX export folds them into the convolutions).
    """
    data = member.data()
    names = data.class_names
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    stem = CACHE_DIR / f"{member.name}-{member.key()}-s{seed}"
    weights_path, meta_path = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    cached = weights_path.exists() and meta_path.exists()
    model = member.build(member.shape, len(names))
    if cached:
        model.load_state_dict(safetensors_load(weights_path.read_bytes()))
        model.eval()
        meta = json.loads(meta_path.read_text())
        train_seconds = float(meta["train_seconds"])
    else:
        model, train_seconds = _train(member, data, seed)
        weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        weights_path.write_bytes(safetensors_save(weights))
        meta_path.write_text(json.dumps({"train_seconds": train_seconds}))
    spec_fields: dict[str, Any] = {
        "input_shape": member.shape,
        "class_names": names,
        "mean": (member.mean,),
        "std": (member.std,),
    }
    exports: dict[str, str] = {}
    loaded: dict[str, LoadedClassifier] = {}
    with torch.no_grad():
        x_check = data.test_x[:64]
        reference_logits = _normalised(member, model)((x_check - member.mean) / member.std)
    if member.route == "safetensors":
        spec = ClassifierSpec(format="safetensors", architecture=member.architecture, **spec_fields)
        weights = safetensors_save({k: v.contiguous() for k, v in model.state_dict().items()})
        loaded["safetensors"] = load_classifier(weights, spec)
        exports["safetensors"] = "ok"
    else:
        spec = ClassifierSpec(format="onnx", **spec_fields)
        for exporter in ("legacy", "dynamo"):
            path = stem.with_name(f"{stem.name}-{exporter}.onnx")
            try:
                if path.exists():
                    onnx_bytes = path.read_bytes()
                else:
                    onnx_bytes = export_onnx(model, member.shape, dynamo=exporter == "dynamo")
                    path.write_bytes(onnx_bytes)
            except Exception as error:  # an exporter failure is a finding, not a crash
                exports[exporter] = f"export failed: {type(error).__name__}: {error}"[:200]
                continue
            try:
                classifier = load_classifier(onnx_bytes, spec)
                with torch.no_grad():
                    logits = classifier(x_check)
                    if member.name == "softmax-cnn":  # compare probabilities
                        gap = (logits.softmax(1) - reference_logits.softmax(1)).abs().max()
                        what = "|Δp|"
                    else:
                        gap = (logits - reference_logits).abs().max()
                        what = "|Δlogit|"
                exports[exporter] = f"ok, max {what} {float(gap):.1e}"
                loaded[exporter] = classifier
            except ClassifierRejected as error:
                exports[exporter] = f"refused: {error}"[:300]
    if member.route == "safetensors":
        chosen, used = loaded["safetensors"], "safetensors"
    elif route in loaded:
        chosen, used = loaded[route], f"onnx {route}"
    else:
        chosen = LoadedClassifier(
            _normalised(member, model), member.shape, names, (member.mean,), (member.std,)
        )
        used = "torch" if route == "torch" else f"torch (onnx {route} refused)"
    with torch.no_grad():
        accuracy = float((chosen(data.test_x).argmax(1) == data.test_y).float().mean())
    return Prepared(member, data, chosen, accuracy, train_seconds, cached, used, exports)
