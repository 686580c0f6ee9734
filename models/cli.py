"""Offline command line: `c3 invert ...`, `c3 demo` and `c3 check` (no service needed).

    python -m models.cli invert --classifier model.onnx --method c3 --per-class 10 --out out/
    python -m models.cli invert --classifier w.safetensors --arch paper-cnn \\
        --input-shape 1,28,28 --reference heldout.npz --out out/
    python -m models.cli demo
    python -m models.cli check model.onnx [--input-shape C,H,W] [--json]

User errors (a missing file, a refused model, a bad option value) end as one
`c3: error: ...` line and exit status 2, never a traceback.

A reference set is an .npz with `x` (n, C, H, W) or (n, H, W) images in [0, 1] (or uint8
0..255) and optionally `y` (n,) integer labels; it is read with `allow_pickle=False`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from models.contracts.errors import field_errors
from models.contracts.inversion import METHODS

if TYPE_CHECKING:
    from models.audit import Reference

__all__ = ["main"]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())


def _command(commands: Any, name: str, summary: str, description: str, example: str) -> Any:
    return commands.add_parser(
        name, help=summary, description=description, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="c3", description="Confidently Classified Counterfeits: audit an image classifier."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    invert = _command(
        commands, "invert", "generate counterfeits for a classifier",
        "Generate counterfeits for a model file on this machine (no service): samples, metrics,\n"
        "report figures, a grid and the config go to --out.",
        "c3 invert --classifier model.onnx --per-class 10 --reference heldout.npz --out out/",
    )  # fmt: skip
    invert.add_argument("--classifier", required=True, type=Path, help=".safetensors or .onnx")
    invert.add_argument("--format", choices=("safetensors", "onnx"), help="default: by suffix")
    invert.add_argument("--arch", help="registered architecture of a safetensors file")
    invert.add_argument("--config", default="{}", help="architecture config as JSON (default: {})")
    invert.add_argument("--input-shape", type=_ints, help="C,H,W (default: from ONNX/reference)")
    invert.add_argument("--class-names", help="comma-separated names, one per output")
    invert.add_argument("--mean", default="0", help="normalisation mean(s) (default: 0)")
    invert.add_argument("--std", default="1", help="normalisation std(s) (default: 1)")
    invert.add_argument("--method", default="c3", choices=METHODS, help="default: c3")
    invert.add_argument("--method-config", default="{}", help="config as JSON (default: {})")
    invert.add_argument("--steps", type=int, help="training steps (overrides the config)")
    invert.add_argument("--seed", type=int, default=0, help="(default: 0)")
    invert.add_argument("--per-class", type=int, default=10, help="samples per class (default: 10)")
    invert.add_argument("--dropout", action="store_true", help="sample with dropout on")
    invert.add_argument("--reference", type=Path, help=".npz of real images (x, y)")
    invert.add_argument("--device", default=None, help="cpu, cuda (default: cuda if present)")
    invert.add_argument("--out", required=True, type=Path, help="output folder")
    invert.add_argument("--quiet", action="store_true", help="no progress bar")
    _threads_option(invert)

    demo = _command(
        commands, "demo", "train paper-cnn on digits and compare the methods",
        "Train the paper's CNN on scikit-learn's digits (28x28), run c3, soft and pixel on it\n"
        "and print the comparison; with --out, first write the classifier and the held-out\n"
        "reference set (to upload to the service), then each method's grid.",
        "c3 demo --per-class 10 --out c3demo",
    )  # fmt: skip
    demo.add_argument("--per-class", type=int, default=20, help="samples per class (default: 20)")
    demo.add_argument(
        "--epochs", type=int, default=25, help="classifier training epochs (default: 25)"
    )
    demo.add_argument("--steps", type=int, help="each method's step budget (default: its own)")
    _threads_option(demo)
    demo.add_argument(
        "--out", type=Path, default=None,
        help="write grids (c3/soft/pixel), the classifier and the held-out reference set here",
    )  # fmt: skip
    demo.add_argument("--seed", type=int, default=0, help="(default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    check = _command(
        commands, "check", "what an upload of this ONNX file would meet",
        "Run the upload validation's steps on an ONNX file on this machine and print what it\n"
        "found and the verdict; exit status 0 when the service would accept it, 2 when not.",
        "c3 check model.onnx --input-shape 1,28,28",
    )  # fmt: skip
    check.add_argument("model", type=Path, help=".onnx file")
    check.add_argument("--input-shape", type=_ints, help="C,H,W (default: from the graph)")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    return parser


def _threads_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads (default: the cores not already busy, by the load average)",
    )  # fmt: skip


def _use_threads(args: argparse.Namespace) -> str:
    """Size torch's and BLAS's pools; a line saying how many and why."""
    from models.threads import free_cores, usable_cores, use_threads

    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be at least 1")
    threads = use_threads(args.threads or free_cores())
    how = "as asked" if args.threads else "the cores not already busy"
    return f"{threads} CPU thread(s) of {usable_cores()} ({how})"


class ProgressBars:
    """tqdm bars for the training and sampling phases of a run (AuditHooks.on_progress)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, progress: Any) -> None:
        from tqdm import tqdm

        from models.contracts.artifacts import Phase

        if progress.phase not in (Phase.TRAINING, Phase.SAMPLING):
            return
        bar = self.bars.get(progress.phase)
        if bar is None:
            early = progress.stops_early and progress.phase == Phase.TRAINING
            bar = self.bars[progress.phase] = tqdm(
                total=progress.total_steps,
                desc="training (stops when the targets hold)" if early else progress.phase.value,
                disable=self.quiet,
            )
        bar.update(progress.step - bar.n)
        if progress.phase == Phase.TRAINING:
            bar.set_postfix(
                loss=f"{progress.losses.get('total', float('nan')):.3f}",
                confident=f"{100 * (progress.confident_share or 0):.0f}%",
            )

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


# What a user can get wrong: refused models and configs (ClassifierRejected and JSON errors
# are ValueErrors), files that are missing or unreadable, reference sets that are not .npz.
USER_ERRORS = (ValueError, OSError, zipfile.BadZipFile, EOFError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "invert":
            return _invert(args)
        if args.command == "check":
            return _check(args)
        return _demo(args)
    except ValidationError as error:  # a declaration or config field: name it, no traceback
        print(f"c3: error: {field_errors(error)[0]}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:  # one line, no traceback
        print(f"c3: error: {_user_error(error)}", file=sys.stderr)
        return 2


def _user_error(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
    return str(error) or type(error).__name__


def _check(args: argparse.Namespace) -> int:
    import torch

    from models.check import check_onnx, format_check

    torch.set_num_threads(1)  # as the upload validation runs, so the latency compares
    result = check_onnx(args.model.read_bytes(), args.input_shape)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_check(str(args.model), result))
    return 0 if result.accepted else 2


def _load_reference(path: Path) -> Reference:
    import numpy as np
    import torch

    from models.audit import Reference

    try:
        archive: Any = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError(f"{path}: not an .npz archive of arrays (x, and optionally y)") from None
    if not hasattr(archive, "files"):  # np.load gave a single .npy array
        raise ValueError(f"{path}: a single .npy array, not an .npz archive with 'x' (and 'y')")
    with archive:
        if "x" not in archive:
            raise ValueError(f"{path}: the reference .npz needs an array 'x' of images")
        x = archive["x"]
        y = archive.get("y")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    images = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4:
        raise ValueError(f"{path}: 'x' must be (n, C, H, W) or (n, H, W)")
    if float(images.min()) < 0.0 or float(images.max()) > 1.0:
        raise ValueError(f"{path}: 'x' must hold [0, 1] floats or uint8 pixels")
    labels = None if y is None else torch.from_numpy(np.asarray(y).astype(np.int64)).flatten()
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{path}: 'x' and 'y' differ in length")
    return Reference(images, labels)


def _invert(args: argparse.Namespace) -> int:
    from models.audit import AuditHooks, audit
    from models.contracts.classifier import ClassifierSpec
    from models.contracts.inversion import InversionConfig
    from models.device import pick_device
    from models.images import grid_png, png_bytes
    from models.loading import (
        check_classifier,
        load_classifier,
        probe_input_shape,
        probe_num_classes,
    )

    threads = _use_threads(args)
    data = args.classifier.read_bytes()
    fmt = args.format or ("onnx" if args.classifier.suffix.lower() == ".onnx" else "safetensors")
    reference = _load_reference(args.reference) if args.reference else None
    shape = args.input_shape or probe_input_shape(data, fmt)
    if shape is None and reference is not None:
        shape = tuple(int(d) for d in reference.x.shape[1:])
    if shape is None or len(shape) != 3:
        raise ValueError("give --input-shape C,H,W (it cannot be read from the classifier)")
    arch_config = json.loads(args.config)
    names = args.class_names
    if not names:
        count = probe_num_classes(data, fmt, shape, args.arch, arch_config)
        names = [str(k) for k in range(count)]
    spec = ClassifierSpec.model_validate(
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
        f"({report.feature_dim}-d), {report.forward_latency_ms:.2f} ms per image on {device}, "
        f"{threads}"
    )
    fields = json.loads(args.method_config) | {"method": args.method, "seed": args.seed}
    if args.steps is not None:
        fields["steps"] = args.steps
    config = InversionConfig.model_validate(fields)

    bars = ProgressBars(args.quiet)
    try:
        result = audit(
            classifier,
            config,
            samples_per_class=args.per_class,
            reference=reference,
            sample_dropout=args.dropout,
            hooks=AuditHooks(on_progress=bars, progress_every_s=0.2),
            device=device,
        )
    finally:
        bars.close()

    out: Path = args.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for name, blob in result.artifacts().items():
        if isinstance(blob, Path):
            shutil.copyfile(blob, out / name)
        else:
            (out / name).write_bytes(blob)
    (out / "config.json").write_text(config.model_dump_json(indent=1))
    images = result.images
    for sample in result.samples:  # the exports' layout: samples/000123.png
        (out / f"samples/{sample.index:06d}.png").write_bytes(png_bytes(images[sample.index]))
    (out / "grid.png").write_bytes(grid_png(images, result.targets, per_row=16))
    overall, cost = result.metrics.overall, result.metrics.cost
    print(
        f"{len(result.samples)} samples in {out}: {100 * (overall.confident_share or 0):.1f}% at "
        f"p >= 0.99, {100 * (overall.argmax_accuracy or 0):.1f}% argmax = target, "
        f"training {result.method.trained_seconds:.1f} s, "
        f"sampling {(cost.samples_per_second if cost else None) or 0:,.0f}/s"
        + (
            f", MSP-AUROC {overall.msp_auroc:.3f}, kNN-pixel AUROC {overall.knn_pixel_auroc:.3f}"
            if overall.msp_auroc is not None and overall.knn_pixel_auroc is not None
            else ""
        )
    )
    print(result.verdict.summary)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.audit import AuditHooks, Reference
    from models.classifier import LoadedClassifier
    from models.comparison import format_table, run_method
    from models.contracts.inversion import InversionConfig
    from models.digits import load_digits_data, train_classifier
    from models.images import encode_png, grid_array, hstack_arrays

    print(_use_threads(args), flush=True)
    shape = (1, 28, 28)
    data = load_digits_data(shape)
    with tqdm(
        total=args.epochs, desc="training paper-cnn on digits (28x28)", disable=args.quiet
    ) as bar:
        trained = train_classifier(
            "paper-cnn", data, epochs=args.epochs, seed=args.seed,
            on_epoch=lambda done, _: bar.update(done - bar.n),
        )  # fmt: skip
    print(f"held-out accuracy {100 * trained.accuracy:.1f}% ({trained.seconds:.1f} s)")
    if args.out:  # what a user uploads to the service: ready before the methods run
        args.out.mkdir(parents=True, exist_ok=True)
        _export_demo_files(args.out, trained.model, data.test_x, data.test_y)
        print(
            f"wrote {args.out / 'classifier.safetensors'} (paper-cnn, 1x28x28) and "
            f"{args.out / 'reference.npz'} (held-out digits)",
            flush=True,
        )
    classifier = LoadedClassifier(trained.model, shape, data.class_names)
    reference = Reference(data.test_x, data.test_y, train_x=data.train_x)
    runs = []
    for name in METHODS:
        print(f"running {name} ...", flush=True)
        bars = ProgressBars(args.quiet)
        try:
            runs += run_method(
                classifier,
                InversionConfig(method=name, seed=args.seed, steps=args.steps),
                args.per_class,
                reference=reference,
                timing_repeats=1,
                hooks=AuditHooks(on_progress=bars, progress_every_s=0.2),
            )
        finally:
            bars.close()
    print()
    print(format_table(runs))
    print(
        "\np>=0.99: share of samples the classifier gives p >= 0.99; MSP-AUC: AUROC of telling "
        "counterfeits from held-out digits by max softmax (below 0.5: the classifier is surer "
        "of counterfeits); kNN-*: the same by nearest-neighbour distance (near 1: they differ); "
        "NN-train: mean distance to the nearest training image; div: within-class diversity."
    )
    if args.out:
        real = grid_array(data.test_x, data.test_y, per_row=10, scale=2)
        for run in runs:
            fake = grid_array(run.result.images, run.result.targets, per_row=10, scale=2)
            (args.out / f"{run.label}_vs_real.png").write_bytes(
                encode_png(hstack_arrays([fake, real]))
            )
        print(f"grids of each method beside real digits in {args.out}")
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
