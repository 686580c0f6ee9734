"""Benchmark of the inversion engine: c3 against its baselines on one digits classifier.

    .venv/bin/python bench/inversion.py                # the README's figures (~3 minutes)
    .venv/bin/python bench/inversion.py --per-class 20 --no-rgb   # a quicker look

Trains the paper's CNN on scikit-learn's digits (upsampled to 28x28; held-out 30% is the
reference set), runs `c3` (sampled with dropout off and on), `soft` and `pixel` on that same
classifier, plus two ablations (c3 with the paper's constant diversity weights; pixel that
stops as soon as a batch is confident), prints one table and checks the quality bar of
issue 3. Then the same on 3x32x32 (digits tiled into RGB)
to show shape generality, and c3 on an ONNX export of a network it has never seen (RGB,
non-square). Times are wall clock with `torch.set_num_threads(--threads)`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.audit import Reference  # noqa: E402
from models.classifier import LoadedClassifier  # noqa: E402
from models.comparison import MethodRun, format_table, run_method  # noqa: E402
from models.contracts.inversion import InversionConfig, LossWeights  # noqa: E402
from models.digits import load_digits_data, train_classifier  # noqa: E402
from models.images import encode_png, grid_array, hstack_arrays  # noqa: E402


def gates(runs: dict[str, MethodRun]) -> list[tuple[str, bool, str]]:
    """The quality bar of issue 3, on the 28x28 runs."""
    c3 = runs["c3"].metrics
    overall = c3.overall
    pixel_speed = runs["pixel"].samples_per_second
    c3_speed = runs["c3"].samples_per_second
    ratios = {
        name: m.pixel_diversity / m.reference_pixel_diversity
        for name, m in c3.per_class.items()
        if m.pixel_diversity is not None and m.reference_pixel_diversity
    }
    nn_ratio = (overall.train_nn_distance or 0.0) / (overall.reference_train_nn_distance or 1.0)
    return [
        (
            "confident share (p >= 0.99) >= 99%",
            (overall.confident_share or 0) >= 0.99,
            f"{100 * (overall.confident_share or 0):.1f}%",
        ),
        (
            "argmax = target >= 99.5%",
            (overall.argmax_accuracy or 0) >= 0.995,
            f"{100 * (overall.argmax_accuracy or 0):.1f}%",
        ),
        ("MSP-AUROC <= 0.3", (overall.msp_auroc or 1) <= 0.3, f"{overall.msp_auroc:.3f}"),
        (
            "kNN-pixel AUROC >= 0.99",
            (overall.knn_pixel_auroc or 0) >= 0.99,
            f"{overall.knn_pixel_auroc:.3f}",
        ),
        (
            "nearest-training-image distance >= 2x real",
            nn_ratio >= 2.0,
            f"{overall.train_nn_distance:.2f} vs {overall.reference_train_nn_distance:.2f} "
            f"({nn_ratio:.2f}x)",
        ),
        (
            "within-class pixel diversity >= real",
            (overall.pixel_diversity or 0) >= (overall.reference_pixel_diversity or 0),
            f"{overall.pixel_diversity:.2f} vs {overall.reference_pixel_diversity:.2f}",
        ),
        (
            "no class collapsed",
            not c3.collapsed_classes,
            f"lowest class diversity {min(ratios.values()):.2f}x its real images'",
        ),
        (
            "generator training <= 30 s",
            runs["c3"].train_seconds <= 30.0,
            f"{runs['c3'].train_seconds:.1f} s",
        ),
        ("sampling >= 3,000 samples/s", c3_speed >= 3000, f"{c3_speed:,.0f}/s"),
        (
            "sampling >= 100x pixel's",
            c3_speed >= 100 * pixel_speed,
            f"{c3_speed / pixel_speed:,.0f}x ({pixel_speed:.1f}/s)",
        ),
    ]


def run_shape(shape: tuple[int, int, int], args: argparse.Namespace) -> dict[str, MethodRun]:
    data = load_digits_data(shape)
    trained = train_classifier("paper-cnn", data, epochs=args.classifier_epochs, seed=args.seed)
    print(
        f"\n## paper-cnn on digits {'x'.join(map(str, shape))}: {len(data.train_y)} training, "
        f"{len(data.test_y)} held-out images; held-out accuracy {100 * trained.accuracy:.1f}% "
        f"(trained in {trained.seconds:.1f} s)\n",
        flush=True,
    )
    classifier = LoadedClassifier(trained.model, shape, data.class_names)
    reference = Reference(data.test_x, data.test_y, train_x=data.train_x)
    runs: dict[str, MethodRun] = {}
    plans: list[tuple[str, InversionConfig, tuple[bool, ...]]] = [
        ("c3", InversionConfig(method="c3", seed=args.seed), (False, True)),
        ("soft", InversionConfig(method="soft", seed=args.seed), (False,)),
        ("pixel", InversionConfig(method="pixel", seed=args.seed), (False,)),
    ]
    if args.ablation:
        # The paper's fixed recipe (constant diversity weights), the previous default (weights
        # fading out late in a fixed run), and pixel optimisation that stops each batch as
        # soon as all its samples reach p >= 0.99 (a cheaper pixel).
        plans.insert(
            1,
            (
                "c3 paper recipe",
                InversionConfig(method="c3", seed=args.seed, recipe="paper"),
                (False,),
            ),
        )
        plans.insert(
            2,
            (
                "c3 fade recipe",
                InversionConfig(method="c3", seed=args.seed, recipe="fade"),
                (False,),
            ),
        )
        plans.append(
            (
                "pixel stop at 0.99",
                InversionConfig(method="pixel", seed=args.seed, pixel_stop_confidence=0.99),
                (False,),
            )
        )
    for name, config, variants in plans:
        for run in run_method(
            classifier, config, args.per_class, dropout_variants=variants, reference=reference
        ):
            if name != config.method:
                run.label = name
            runs[run.label] = run
            print(f"  done: {run.label}", file=sys.stderr, flush=True)
    print(format_table(list(runs.values())))
    real_div = runs["c3"].metrics.overall
    print(
        f"\nreal held-out images: MSP {real_div.mean_reference_confidence:.3f} mean, "
        f"nearest-training distance {real_div.reference_train_nn_distance:.2f}, "
        f"within-class diversity {real_div.reference_pixel_diversity:.2f}, "
        f"feature cosine {real_div.reference_feature_cosine:.3f} "
        f"(c3: {runs['c3'].metrics.overall.feature_cosine:.3f})"
    )
    if args.img_dir and shape == (1, 28, 28):
        save_images(runs, data.test_x, data.test_y, shape, Path(args.img_dir))
    return runs


def save_images(
    runs: dict[str, MethodRun],
    real_x: torch.Tensor,
    real_y: torch.Tensor,
    shape: tuple[int, int, int],
    folder: Path,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tag = "x".join(map(str, shape))
    real = grid_array(real_x, real_y, per_row=10, scale=2)
    for label in ("c3", "soft", "pixel"):
        result = runs[label].result
        fake = grid_array(result.images, result.targets, per_row=10, scale=2)
        (folder / f"{label}_vs_real_{tag}.png").write_bytes(encode_png(hstack_arrays([fake, real])))


class UnseenNet(torch.nn.Module):
    """A network the engine has never seen: GELU, BatchNorm, a residual, SiLU, mean pooling."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24)
        self.c2, self.b2 = nn.Conv2d(24, 48, 3, padding=1, stride=2), nn.BatchNorm2d(48)
        self.c3, self.b3 = nn.Conv2d(48, 48, 3, padding=1), nn.BatchNorm2d(48)
        self.fc1, self.fc2 = nn.Linear(48, 64), nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional
        x = f.gelu(self.b1(self.c1(x)))
        x = f.relu(self.b2(self.c2(x)))
        x = (x + f.relu(self.b3(self.c3(x)))).mean(dim=(2, 3))
        return self.fc2(f.silu(self.fc1(x)))


def run_onnx(args: argparse.Namespace) -> dict[str, MethodRun]:
    """c3 on an ONNX export (dynamo exporter) of UnseenNet: tinted RGB digits at 3x20x36."""
    import warnings

    import torch.nn.functional as F

    from models.contracts.classifier import ClassifierSpec
    from models.loading import check_classifier, load_classifier

    shape = (3, 20, 36)
    data = load_digits_data(shape)
    rng = torch.Generator().manual_seed(args.seed)

    def tint(x: torch.Tensor) -> torch.Tensor:  # a random colour per image
        return x * (0.4 + 0.6 * torch.rand(x.shape[0], 3, 1, 1, generator=rng))

    train_x, test_x = tint(data.train_x), tint(data.test_x)
    mean, std = 0.3, 0.35
    torch.manual_seed(args.seed)
    model = UnseenNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for _ in range(30):
        model.train()
        order = torch.randperm(len(train_x), generator=rng)
        for first in range(0, len(order), 64):
            idx = order[first : first + 64]
            loss = F.cross_entropy(model((train_x[idx] - mean) / std), data.train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (torch.rand(2, *shape),),
            dynamo=True,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    onnx_bytes = program.model_proto.SerializeToString()  # type: ignore[union-attr]
    spec = ClassifierSpec(
        format="onnx", input_shape=shape, class_names=data.class_names, mean=(mean,), std=(std,)
    )
    classifier = load_classifier(onnx_bytes, spec)
    report = check_classifier(classifier)
    with torch.no_grad():
        accuracy = (classifier(test_x).argmax(1) == data.test_y).float().mean().item()
    print(
        f"\n## c3 on an ONNX export of an unseen network (GELU, BatchNorm, residual, SiLU), "
        f"tinted RGB digits at 3x20x36: held-out accuracy {100 * accuracy:.1f}% (trained in "
        f"{seconds:.1f} s), {len(onnx_bytes):,} bytes, features from ONNX value "
        f"{report.feature_layer!r} ({report.feature_dim}-d)\n",
        flush=True,
    )
    runs: dict[str, MethodRun] = {}
    seeking = InversionConfig(
        method="c3", seed=args.seed, recipe="fade", loss_weights=LossWeights(mode_seeking=0.5)
    )
    for name, config, variants in (
        ("c3", InversionConfig(method="c3", seed=args.seed), (False, True)),
        ("c3 fade recipe", InversionConfig(method="c3", seed=args.seed, recipe="fade"), (False,)),
        ("c3 fade + seeking 0.5", seeking, (False,)),
    ):
        for run in run_method(
            classifier,
            config,
            args.per_class,
            reference=Reference(test_x, data.test_y, train_x=train_x),
            dropout_variants=variants,
        ):
            if name != config.method:
                run.label = name
            runs[run.label] = run
    print(format_table(list(runs.values())))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier-epochs", type=int, default=25)
    parser.add_argument("--no-rgb", dest="rgb", action="store_false", help="skip 3x32x32")
    parser.add_argument("--no-ablation", dest="ablation", action="store_false")
    parser.add_argument("--no-onnx", dest="onnx", action="store_false", help="skip the ONNX run")
    parser.add_argument("--img-dir", default=None, help="write grids (c3/soft/pixel beside real)")
    parser.add_argument("--json", default=None, help="write all metrics to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench/inversion.py: torch {torch.__version__}, {args.threads} threads on "
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load:.2f} at start, "
        f"{args.per_class} samples per class"
    )
    results = {"1x28x28": run_shape((1, 28, 28), args)}
    print("\n### quality bar (issue 3), 1x28x28, c3 sampled in eval mode")
    failed = 0
    for name, ok, shown in gates(results["1x28x28"]):
        failed += not ok
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {shown}")
    if args.rgb:
        results["3x32x32"] = run_shape((3, 32, 32), args)
    if args.onnx:
        results["onnx 3x20x36"] = run_onnx(args)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        payload = {
            shape: {label: run.metrics.model_dump(mode="json") for label, run in runs.items()}
            for shape, runs in results.items()
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
