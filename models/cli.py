"""Offline command line: `c3 invert ...` and `c3 demo` (no service needed).

    python -m models.cli invert --classifier model.onnx --method c3 --per-class 10 --out out/
    python -m models.cli invert --classifier w.safetensors --arch paper-cnn \\
        --input-shape 1,28,28 --reference heldout.npz --out out/
    python -m models.cli demo

A reference set is an .npz with `x` (n, C, H, W) or (n, H, W) images in [0, 1] (or uint8
0..255) and optionally `y` (n,) integer labels; it is read with `allow_pickle=False`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c3", description="Confidently Classified Counterfeits: audit an image classifier."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    invert = commands.add_parser("invert", help="generate counterfeits for a classifier")
    invert.add_argument("--classifier", required=True, type=Path, help=".safetensors or .onnx")
    invert.add_argument("--format", choices=("safetensors", "onnx"), help="default: by suffix")
    invert.add_argument("--arch", help="registered architecture of a safetensors file")
    invert.add_argument("--config", default="{}", help="architecture config as JSON")
    invert.add_argument("--input-shape", type=_ints, help="C,H,W (default: from ONNX/reference)")
    invert.add_argument("--class-names", help="comma-separated names, one per output")
    invert.add_argument("--mean", type=_floats, default=(0.0,), help="normalisation mean(s)")
    invert.add_argument("--std", type=_floats, default=(1.0,), help="normalisation std(s)")
    invert.add_argument("--method", default="c3", help="c3, soft or pixel")
    invert.add_argument("--method-config", default="{}", help="InversionConfig fields as JSON")
    invert.add_argument("--steps", type=int, help="training steps (overrides the config)")
    invert.add_argument("--seed", type=int, default=0)
    invert.add_argument("--per-class", type=int, default=10, help="samples per class")
    invert.add_argument("--dropout", action="store_true", help="sample with dropout on")
    invert.add_argument("--reference", type=Path, help=".npz of real images (x, y)")
    invert.add_argument("--top-k", type=int, default=5)
    invert.add_argument("--device", default=None, help="cpu, cuda (default: cuda if present)")
    invert.add_argument("--out", required=True, type=Path, help="output folder")
    invert.add_argument("--quiet", action="store_true", help="no progress bar")

    demo = commands.add_parser("demo", help="train paper-cnn on digits and compare the methods")
    demo.add_argument("--per-class", type=int, default=20)
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    demo.add_argument(
        "--out", type=Path, default=None,
        help="write grids (c3/soft/pixel), the classifier and the held-out reference set here",
    )  # fmt: skip
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "invert":
            return _invert(args)
        return _demo(args)
    except ValueError as error:  # ClassifierRejected, config errors: show, no traceback
        print(f"c3: error: {error}", file=sys.stderr)
        return 2


def _load_reference(path: Path) -> tuple[Any, Any]:
    import numpy as np
    import torch

    with np.load(path, allow_pickle=False) as archive:
        if "x" not in archive:
            raise ValueError(f"{path}: the reference .npz needs an array 'x' of images")
        x = archive["x"]
        y = archive.get("y")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"{path}: 'x' must be (n, C, H, W) or (n, H, W)")
    if float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(f"{path}: 'x' must hold [0, 1] floats or uint8 pixels")
    labels = None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64)).flatten()
    if labels is not None and len(labels) != len(x):
        raise ValueError(f"{path}: 'x' and 'y' differ in length")
    return x, labels


def _invert(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from models.config import InversionConfig
    from models.device import pick_device
    from models.images import grid_png, png_bytes
    from models.loading import (
        check_classifier,
        load_classifier,
        probe_input_shape,
        probe_num_classes,
    )
    from models.methods import build_method
    from models.metrics import Cost, compute_metrics
    from models.scoring import score_samples
    from models.spec import ClassifierSpec
    from models.training import Progress, train

    data = args.classifier.read_bytes()
    fmt = args.format or ("onnx" if args.classifier.suffix.lower() == ".onnx" else "safetensors")
    reference_x = reference_y = None
    if args.reference:
        reference_x, reference_y = _load_reference(args.reference)
    shape = args.input_shape or probe_input_shape(data, fmt)
    if shape is None and reference_x is not None:
        shape = tuple(int(d) for d in reference_x.shape[1:])
    if shape is None or len(shape) != 3:
        raise ValueError("give --input-shape C,H,W (it cannot be read from the classifier)")
    arch_config = json.loads(args.config)
    if args.class_names:
        names = tuple(n.strip() for n in args.class_names.split(","))
    else:
        count = probe_num_classes(data, fmt, shape, args.arch, arch_config)
        names = tuple(str(k) for k in range(count))
    spec = ClassifierSpec.from_dict(
        {
            "format": fmt,
            "input_shape": shape,
            "class_names": names,
            "mean": args.mean,
            "std": args.std,
            "architecture": args.arch,
            "architecture_config": arch_config,
        }
    )
    device = pick_device(args.device)
    classifier = load_classifier(data, spec, device)
    report = check_classifier(classifier)
    print(
        f"classifier: {fmt}, input {'x'.join(map(str, shape))}, {report.num_classes} classes, "
        f"{report.param_count:,} parameters, features from {report.feature_layer} "
        f"({report.feature_dim}-d), {report.forward_latency_ms:.2f} ms per image on {device}"
    )
    overrides = json.loads(args.method_config)
    overrides.update(method=args.method, seed=args.seed)
    if args.steps is not None:
        overrides["steps"] = args.steps
    config = InversionConfig.from_dict(overrides)
    method = build_method(classifier, config, device)

    start = time.perf_counter()
    steps = config.step_budget if method.needs_training else 0
    if steps:
        with tqdm(total=steps, desc=f"training {config.method}", disable=args.quiet) as bar:

            def show(progress: Progress) -> None:
                bar.update(progress.step - bar.n)
                bar.set_postfix(
                    loss=f"{progress.losses.get('total', float('nan')):.3f}",
                    confident=f"{100 * progress.confident_share:.0f}%",
                )

            train(method, steps=steps, on_progress=show, progress_every_s=0.2)
    train_seconds = time.perf_counter() - start

    targets = torch.arange(classifier.num_classes).repeat_interleave(args.per_class)
    begin = time.perf_counter()
    chunks = []
    for k in tqdm(range(classifier.num_classes), desc="sampling", disable=args.quiet):
        labels = targets[targets == k]
        chunks.append(method.sample(labels, dropout=args.dropout, seed=args.seed + k).cpu())
    images = torch.cat(chunks)
    sample_seconds = time.perf_counter() - begin
    cost = Cost(
        train_seconds=train_seconds,
        steps=method.step_count,
        sample_seconds=sample_seconds,
        samples_per_second=len(targets) / sample_seconds if sample_seconds > 0 else None,
        device=str(device),
    )
    metrics = compute_metrics(classifier, images, targets, reference_x, reference_y, cost)
    scores = score_samples(classifier, images, targets, args.top_k, metrics.counterfeit_outputs)

    out: Path = args.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    records = []
    for score, image in zip(scores, images, strict=True):
        name = f"samples/{score.target:03d}_{score.index:05d}.png"
        (out / name).write_bytes(png_bytes(image))
        records.append({"file": name, **score.to_dict(classifier.class_names)})
    (out / "grid.png").write_bytes(grid_png(images, targets, per_row=16))
    (out / "samples.json").write_text(json.dumps(records, indent=1))
    (out / "metrics.json").write_text(
        json.dumps({"config": config.to_dict(), "metrics": metrics.to_dict()}, indent=2)
    )
    overall = metrics.overall
    print(
        f"{len(targets)} samples in {out}: {100 * (overall.confident_share or 0):.1f}% at "
        f"p >= 0.99, {100 * (overall.argmax_accuracy or 0):.1f}% argmax = target, "
        f"training {train_seconds:.1f} s, sampling {cost.samples_per_second or 0:,.0f}/s"
        + (
            f", MSP-AUROC {overall.msp_auroc:.3f}, kNN-pixel AUROC {overall.knn_pixel_auroc:.3f}"
            if overall.msp_auroc is not None and overall.knn_pixel_auroc is not None
            else ""
        )
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from models.classifier import LoadedClassifier
    from models.comparison import format_table, run_method
    from models.config import InversionConfig
    from models.digits import load_digits_data, train_classifier
    from models.images import encode_png, grid_array, hstack_arrays

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (1, 28, 28)
    data = load_digits_data(shape)
    print("training paper-cnn on scikit-learn digits (28x28) ...", flush=True)
    trained = train_classifier("paper-cnn", data, seed=args.seed)
    print(f"held-out accuracy {100 * trained.accuracy:.1f}% ({trained.seconds:.1f} s)")
    classifier = LoadedClassifier(trained.model, shape, data.class_names)
    runs = []
    for name in ("c3", "soft", "pixel"):
        print(f"running {name} ...", flush=True)
        runs += run_method(
            classifier,
            InversionConfig(method=name, seed=args.seed),
            args.per_class,
            reference_x=data.test_x,
            reference_y=data.test_y,
            train_x=data.train_x,
            timing_repeats=1,
        )
    print()
    print(format_table(runs))
    print(
        "\np>=0.99: share of samples the classifier gives p >= 0.99; MSP-AUC: AUROC of telling "
        "counterfeits from held-out digits by max softmax (below 0.5: the classifier is surer "
        "of counterfeits); kNN-*: the same by nearest-neighbour distance (near 1: they differ); "
        "NN-train: mean distance to the nearest training image; div: within-class diversity."
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        real = grid_array(data.test_x, data.test_y, per_row=10, scale=2)
        for run in runs:
            fake = grid_array(run.images, run.targets, per_row=10, scale=2)
            (args.out / f"{run.label}_vs_real.png").write_bytes(
                encode_png(hstack_arrays([fake, real]))
            )
        _export_demo_files(args.out, trained.model, data.test_x, data.test_y)
        print(
            f"grids, classifier.safetensors (paper-cnn, 1x28x28) and reference.npz "
            f"(held-out digits) in {args.out}"
        )
    return 0


def _export_demo_files(out: Path, model: Any, x: Any, y: Any) -> None:
    """The demo's classifier and held-out set, as a user would upload them to the service."""
    import numpy as np
    from safetensors.torch import save

    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    (out / "classifier.safetensors").write_bytes(save(weights))
    with (out / "reference.npz").open("wb") as f:
        np.savez(f, x=(x * 255).round().byte().numpy(), y=y.numpy())


if __name__ == "__main__":
    raise SystemExit(main())
