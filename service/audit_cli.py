"""`c3 audit`: one command from a model file to a verdict, against a running service.

Upload the classifier (and a reference set), wait for the validation, start the inversion,
follow it with a progress bar, download the report and the samples, print a short summary,
and exit with THRESHOLD_FAILED when the model fails a threshold the user set, so that a team
can gate a model in its CI. It goes through the Python client (service.client): no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from models.contracts.artifacts import CONFIDENT, ClassMetrics
from models.contracts.errors import field_errors
from models.contracts.inversion import METHODS
from service.client import C3Error, Client, InvalidInputError, JobEvent, UnauthorizedError
from service.records import ProgressEvent
from service.schemas import ClassifierCreate, InversionPublic
from service.settings import ClientSettings

__all__ = ["EXIT_CODES", "add_parser", "run"]

PASSED, FAILED, USAGE, THRESHOLD_FAILED = 0, 1, 2, 3
EXIT_CODES = f"""exit status:
  {PASSED}  the audit ran and the model met every threshold given
  {FAILED}  the audit could not run: service unreachable, key refused, input refused, job failed
  {USAGE}  wrong options
  {THRESHOLD_FAILED}  the model failed a threshold"""


@dataclass(frozen=True)
class Threshold:
    option: str  # without the dashes
    metric: str  # a ClassMetrics field, overall
    upper: bool  # the figure may be at most the limit (else at least)
    meaning: str


THRESHOLDS = (
    Threshold("max_confident_share", "confident_share", True,
              f"share of counterfeits the model classifies with p >= {CONFIDENT}"),
    Threshold("max_mean_confidence", "mean_confidence", True,
              "the model's mean confidence in its counterfeits' target class"),
    Threshold("min_msp_auroc", "msp_auroc", False,
              "AUROC of telling counterfeits from real images by max softmax (needs --reference)"),
)  # fmt: skip

FORM_HELP = {
    "name": "name of the classifier on the service (default: the file's name)",
    "format": "`safetensors` or `onnx` (default: by the file's suffix)",
    "description": "free text shown with the classifier",
    "tags": "comma-separated tags",
}
"""Help for the upload's fields that the form model leaves undescribed or defaults here."""
REQUIRED = ("input_shape", "class_names")


def add_parser(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    audit = commands.add_parser(
        "audit",
        help="audit a model file on a C3 service: upload, invert, report, verdict",
        description="One command from a model file to a verdict, against a running C3 service:\n"
        "upload the classifier (and a reference set of real images), wait for its validation,\n"
        "start the inversion and follow it, download the report and the samples into --out,\n"
        "print a short summary, and exit non-zero when the model fails a threshold you set\n"
        "(for a CI gate). The key comes from $C3_API_KEY (none needed by a service on a\n"
        "loopback address without keys).",
        formatter_class=formatter,
        epilog=f"""example:
  export C3_API_KEY=c3k_...   # from `c3 keys create` on the service
  c3 audit model.safetensors --server http://c3.example:8000 --architecture paper-cnn \\
      --input-shape 1,28,28 --class-names 0,1,2,3,4,5,6,7,8,9 --reference heldout.npz \\
      --max-confident-share 0.05 --out audit/

{EXIT_CODES}""",
    )
    audit.add_argument("model", type=Path, metavar="MODEL_FILE", help=".safetensors or .onnx")
    audit.add_argument(
        "--server", help="the service's URL (default: $C3_SERVER, else http://127.0.0.1:8000)"
    )
    audit.add_argument("--reference", type=Path, help="real held-out images (.npz or PNG zip)")
    audit.add_argument("--out", type=Path, default=Path("c3-audit"), help="folder for the files")
    audit.add_argument("--json", action="store_true", help="print the result as JSON")
    audit.add_argument("--quiet", action="store_true", help="no progress bars")
    audit.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait in all")
    declaration = audit.add_argument_group("the classifier (the fields of POST /classifiers)")
    for name, field in ClassifierCreate.model_fields.items():
        declaration.add_argument(
            f"--{name.replace('_', '-')}",
            required=name in REQUIRED,
            help=FORM_HELP.get(name) or (field.description or name).replace("%", "%%"),
        )
    job = audit.add_argument_group("the inversion")
    job.add_argument("--method", choices=METHODS, default="c3", help="inversion method")
    job.add_argument("--samples-per-class", type=int, default=100, help="counterfeits per class")
    job.add_argument("--steps", type=int, help="training steps (default: the method's)")
    job.add_argument("--classes", help="comma-separated class indices (default: all)")
    job.add_argument("--seed", type=int, help="for a repeatable run (default: random)")
    gates = audit.add_argument_group(f"thresholds (exit status {THRESHOLD_FAILED} when failed)")
    for threshold in THRESHOLDS:
        gates.add_argument(
            f"--{threshold.option.replace('_', '-')}", type=float, metavar="LIMIT",
            help=f"{'at most' if threshold.upper else 'at least'}: {threshold.meaning}",
        )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run the audit; the exit status (errors are one line on stderr, never a traceback)."""
    if args.min_msp_auroc is not None and args.reference is None:
        return _fail("--min-msp-auroc needs --reference (real images to compare with)", USAGE)
    if not args.model.is_file():
        return _fail(f"{args.model}: no such file", USAGE)
    settings = ClientSettings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    try:
        with Client(args.server or settings.server, key) as client:
            return _audit(client, args)
    except ValidationError as exc:
        return _fail(str(field_errors(exc)[0]), USAGE)
    except InvalidInputError as exc:
        field = exc.problem.field
        return _fail(f"{field}: {exc.problem.detail}" if field and field != "file" else str(exc))
    except UnauthorizedError as exc:
        return _fail(f"{exc} (the key comes from $C3_API_KEY)")
    except C3Error as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))


def _fail(message: str, status: int = FAILED) -> int:
    print(f"c3 audit: {message}", file=sys.stderr)
    return status


class _Bars:
    """tqdm bars on stderr (none with --quiet or --json): bytes sent, then the job's phases."""

    def __init__(self, hidden: bool) -> None:
        self.hidden = hidden
        self._bar: Any = None
        self._title = ""

    def _show(self, title: str, total: int, unit: str = "it", **options: Any) -> Any:
        from tqdm import tqdm

        if self._title != title:
            self.close()
            self._title = title
            self._bar = tqdm(  # None: shown on a terminal only
                total=total, desc=title, unit=unit, disable=True if self.hidden else None,
                file=sys.stderr, leave=False, **options,
            )  # fmt: skip
        return self._bar

    def upload(self, title: str) -> Any:
        def progress(done: int, total: int) -> None:
            bar = self._show(title, total, "B", unit_scale=True)
            bar.update(done - bar.n)

        return progress

    def job(self, event: JobEvent) -> None:
        if isinstance(event, ProgressEvent):
            bar = self._show(event.phase.value, event.total_steps)
            bar.update(event.step - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _audit(client: Client, args: argparse.Namespace) -> int:
    bars = _Bars(args.quiet or args.json)
    declared = {name: getattr(args, name) for name in ClassifierCreate.model_fields}
    try:
        classifier = client.upload_classifier(
            args.model, wait=args.timeout, on_progress=bars.upload("upload model"), **declared
        )
        dataset = None
        if args.reference is not None:
            dataset = client.upload_dataset(
                args.reference, wait=args.timeout, on_progress=bars.upload("upload reference")
            )
        bars.close()
        if classifier.status != "ready" or (dataset is not None and dataset.status != "ready"):
            return _fail(f"the validation did not finish within {args.timeout:.0f} s")
        started = client.start_inversion(
            classifier.id, method=args.method, dataset_id=dataset.id if dataset else None,
            samples_per_class=args.samples_per_class, steps=args.steps, seed=args.seed,
            classes=[int(c) for c in args.classes.split(",")] if args.classes else None,
        )  # fmt: skip
        job = client.wait_for_inversion(started.id, on_event=bars.job, timeout=args.timeout)
    finally:
        bars.close()
    if job.state != "succeeded":
        why = f": {job.error.detail}" if job.error else ""
        return _fail(f"job {job.id} {job.state}{why}")
    files = _download(client, job, args.out)
    checks = _checks(args, job.metrics)
    failed = [c for c in checks if not c["passed"]]
    status = THRESHOLD_FAILED if failed else PASSED
    result = {
        "verdict": "fail" if failed else "pass",
        "exit_status": status,
        "classifier": {"id": classifier.id, "name": classifier.name},
        "dataset": {"id": dataset.id, "name": dataset.name} if dataset else None,
        "job": {"id": job.id, "method": job.method, "state": job.state,
                "seconds": _seconds(job), "samples": job.sample_count},
        "metrics": job.metrics.model_dump() if job.metrics else None,
        "thresholds": checks,
        "files": {name: str(path) for name, path in files.items()},
    }  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else _summary(result, job))
    return status


def _download(client: Client, job: InversionPublic, out: Path) -> dict[str, Path]:
    wanted: dict[str, tuple[Any, str]] = {
        "report.json": ("report-json", "report.json"),
        "report.html": ("report-html", "report.html"),
        "samples.zip": ("zip", "samples.zip"),
        "grid.png": ("grid", "grid.png"),
    }
    files = {}
    for name, (what, filename) in wanted.items():
        try:
            files[name] = client.download(job.id, what, out / filename)
        except InvalidInputError:  # a grid too large to draw: the zip has every sample
            continue
    return files


def _checks(args: argparse.Namespace, metrics: ClassMetrics | None) -> list[dict[str, Any]]:
    checks = []
    for threshold in THRESHOLDS:
        limit = getattr(args, threshold.option)
        if limit is None:
            continue
        value = getattr(metrics, threshold.metric) if metrics else None
        passed = value is not None and (value <= limit if threshold.upper else value >= limit)
        checks.append(asdict(threshold) | {
            "option": f"--{threshold.option.replace('_', '-')}", "limit": limit, "value": value,
            "passed": passed,
        })  # fmt: skip
    return checks


def _seconds(job: InversionPublic) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return round(job.finished_at - job.started_at, 1)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _summary(result: dict[str, Any], job: InversionPublic) -> str:
    m = job.metrics
    lines = [
        f"classifier {result['classifier']['id']} ({result['classifier']['name']}): ready",
        f"job {job.id} ({job.method}): {job.state} in {result['job']['seconds']} s, "
        f"{job.sample_count} counterfeits",
    ]
    if m is not None:
        auroc = "—" if m.msp_auroc is None else f"{m.msp_auroc:.3f}"
        lines.append(
            f"confident (p >= {CONFIDENT}): {_percent(m.confident_share)}, "
            f"classified as target: {_percent(m.argmax_accuracy)}, "
            f"mean confidence: {m.mean_confidence or 0:.3f}, MSP-AUROC: {auroc}"
        )
    lines.append("files: " + ", ".join(result["files"].values()))
    for check in result["thresholds"]:
        value = "not measured" if check["value"] is None else f"{check['value']:.4f}"
        lines.append(
            f"{'pass' if check['passed'] else 'FAIL'}: {check['option']} {check['limit']}: "
            f"{check['metric']} = {value} ({check['meaning']})"
        )
    lines.append(f"verdict: {result['verdict'].upper()} (exit status {result['exit_status']})")
    return "\n".join(lines)
