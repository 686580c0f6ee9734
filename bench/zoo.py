"""The classifier zoo benchmark: every member × method against issue 10's targets.

    .venv/bin/python bench/zoo.py                              # all members, c3 (adaptive)
    .venv/bin/python bench/zoo.py --methods c3,paper --members vit,resnet --json out.json
    .venv/bin/python bench/zoo.py --from-json a.json,b.json    # one table from earlier runs

Members (bench/zoo_members.py) are trained once and cached. Each method runs through the
engine's entry point `models.audit.audit`, as a worker job does, with default settings and no
per-member tuning: 100 samples per class drawn in eval mode, delivered as 8-bit pixels and
scored by `compute_metrics` against the member's held-out split. The targets
(issue 10, point 3) are evaluated by `models.contracts.verdict`, the same code that gives
jobs their verdict; the zoo adds the time targets: median training time ≤ 60 s, none > 180 s.

Methods: c3 (the default: adaptive recipe), paper (c3, the paper's fixed recipe), fade (c3,
the previous default), soft, pixel; `name:{"json": "overrides"}` passes InversionConfig fields.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.zoo_members import MEMBERS, Prepared, prepare  # noqa: E402
from models.audit import AuditHooks, Reference, audit  # noqa: E402
from models.contracts.artifacts import Progress  # noqa: E402
from models.contracts.inversion import InversionConfig  # noqa: E402

MEDIAN_SECONDS, MAX_SECONDS = 60.0, 180.0
METHODS: dict[str, dict[str, Any]] = {
    "c3": {"method": "c3"},
    "paper": {"method": "c3", "recipe": "paper"},
    "fade": {"method": "c3", "recipe": "fade"},
    "soft": {"method": "soft"},
    "pixel": {"method": "pixel"},
}
FLAGS = (  # short column names of the targets, in Verdict.checks order
    ("confident_share", "conf"),
    ("class_confident_share", "class"),
    ("argmax_share", "argmax"),
    ("min_diversity_ratio", "divmin"),
    ("mean_diversity_ratio", "divmean"),
    ("msp_auroc", "msp"),
)


def parse_choices(text: str, table: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """`name` or `name:{"json": "overrides"}`, comma-separated, each of `table` → (label,
    InversionConfig fields)."""
    choices = []
    for item in (c for c in re.split(r",(?![^{]*})", text) if c):
        name, _, overrides = item.partition(":")
        if name not in table:
            raise SystemExit(f"unknown choice {name!r}: use {', '.join(table)}")
        choices.append((item, {**table[name], **(json.loads(overrides) if overrides else {})}))
    return choices


def run_one(prepared: Prepared, label: str, fields: dict[str, Any], args: Any) -> dict[str, Any]:
    """One audit through the engine's entry point (`models.audit.audit`, as the worker runs
    it): train, sample, deliver 8-bit, score against the held-out split; one result row."""
    classifier, data = prepared.classifier, prepared.data
    config = InversionConfig.model_validate({**fields, "seed": args.seed})
    torch.manual_seed(args.seed)
    seen: set[int] = set()

    def show(progress: Progress) -> None:
        probe = progress.probe
        if not args.verbose or probe is None or probe.step in seen:
            return
        seen.add(probe.step)
        print(
            f"    {prepared.member.name} step {probe.step}: confident "
            f"{100 * probe.overall_confident:.1f}%, worst class {100 * min(probe.confident):.0f}%"
            f", lagging {sum(probe.lagging)}, collapsed {sum(probe.collapsed)}, diversity "
            f"{min(probe.diversity):.3f}..{max(probe.diversity):.3f}, D "
            f"{min(probe.diversity_weight):.2f}..{max(probe.diversity_weight):.2f}, tau "
            f"{min(probe.spread_target):.2f}..{max(probe.spread_target):.2f}, pull max "
            f"{max(probe.pull):.2f}, passes {probe.passes}"
            + (
                f", prior rejected {min(probe.prior_rejected):.2f}..{max(probe.prior_rejected):.2f}"
                f" gain {min(probe.prior_gain):.2f}..{max(probe.prior_gain):.2f}"
                if probe.prior_gain
                else ""
            ),
            flush=True,
        )

    result = audit(
        classifier,
        config,
        samples_per_class=args.per_class,
        reference=Reference(data.test_x, data.test_y),
        sample_seed=args.seed,
        hooks=AuditHooks(on_progress=show, progress_every_s=0.0),
        device="cpu",
    )
    method = result.method
    classes = classifier.num_classes
    metrics_dict = result.metrics.model_dump(mode="json")
    probe = method.last_probe
    verdict = result.verdict  # the issue-10 targets: the config's defaults
    checks = {c.name: c for c in verdict.checks}
    per_class = metrics_dict["per_class"]
    worst_name = min(per_class, key=lambda n: per_class[n]["confident_share"])
    return {
        "member": prepared.member.name,
        "method": label,
        "accuracy": prepared.accuracy,
        "route": prepared.route,
        "steps": method.step_count,
        "stop_reason": None if result.training is None else result.training.stop_reason,
        "train_seconds": method.trained_seconds,
        "steps_per_second": method.step_count / method.trained_seconds
        if method.trained_seconds
        else None,
        "confident": checks["confident_share"].value,
        "worst_class": checks["class_confident_share"].value,
        "worst_class_name": worst_name,
        "argmax": checks["argmax_share"].value,
        "msp_auroc": checks["msp_auroc"].value,
        "min_ratio": checks["min_diversity_ratio"].value,
        "mean_ratio": checks["mean_diversity_ratio"].value,
        "collapsed": len(metrics_dict["collapsed_classes"]),
        "classes": classes,
        "pass": {name: checks[name].met for name, _ in FLAGS},
        "met": verdict.met,
        "verdict": verdict.model_dump(mode="json"),
        "probe": None if probe is None else probe.to_dict(),
        "per_class": {
            n: {
                "confident_share": m["confident_share"],
                "pixel_diversity": m["pixel_diversity"],
                "reference_pixel_diversity": m["reference_pixel_diversity"],
            }
            for n, m in per_class.items()
        },
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


HEADER = (
    f"{'member':<16}{'acc':>6} {'method':<10}{'steps':>6}{'train s':>8}{'p>=.99':>8}"
    f"{'worst':>7}{'argmax':>8}{'MSP':>6}{'div min':>8}{'mean':>6}{'coll':>5}  "
    + " ".join(short for _, short in FLAGS)
)


def format_row(row: dict[str, Any]) -> str:
    shown = {True: "PASS", False: "FAIL", None: "—"}
    flags = " ".join(f"{shown[row['pass'][name]]:>{len(short)}}" for name, short in FLAGS)
    return (
        f"{row['member']:<16}{100 * row['accuracy']:>5.1f}% {row['method'][:10]:<10}"
        f"{row['steps']:>6}{row['train_seconds']:>8.1f}{_pct(row['confident']):>8}"
        f"{_pct(row['worst_class']):>7}{_pct(row['argmax']):>8}{_num(row['msp_auroc'], '.2f'):>6}"
        f"{_num(row['min_ratio'], '.2f'):>7}x{_num(row['mean_ratio'], '.2f'):>5}x"
        f"{row['collapsed']:>5}  {flags}"
    )


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        times = [r["train_seconds"] for r in mine]
        median, longest = statistics.median(times), max(times)
        met = [r["member"] for r in mine if r["met"]]
        missed = [r for r in mine if not r["met"]]
        lines.append(
            f"{method}: {len(met)}/{len(mine)} members meet every quality target; training time "
            f"median {median:.1f} s ({'PASS' if median <= MEDIAN_SECONDS else 'FAIL'} <= 60), "
            f"max {longest:.1f} s ({'PASS' if longest <= MAX_SECONDS else 'FAIL'} <= 180)"
        )
        for row in missed:
            what = ", ".join(short for name, short in FLAGS if row["pass"][name] is False)
            lines.append(f"    {row['member']}: misses {what}")
    return lines


def collapse_signal_check(rows: list[dict[str, Any]], floor: float) -> list[str]:
    """How well the data-free signal (RMS pixel spread < COLLAPSE_SHARE × floor) predicts the
    audit's "collapsed" (< 0.5× the real images' diversity), over every member, method and
    class of these rows, measured on the delivered samples."""
    from models.control import COLLAPSE_SHARE

    threshold = COLLAPSE_SHARE * floor
    tally = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    collapsed_rms, varied_rms = [], []
    for row in rows:
        c, h, w = MEMBERS[row["member"]].shape
        root = (c * h * w) ** 0.5
        for m in row["per_class"].values():
            fake, real = m["pixel_diversity"], m["reference_pixel_diversity"]
            if fake is None or not real:
                continue
            rms, truth = fake / root, fake < 0.5 * real
            (collapsed_rms if truth else varied_rms).append(rms)
            tally[(rms < threshold, truth)] += 1
    if not collapsed_rms and not varied_rms:
        return []
    return [
        f"collapse signal (data-free: RMS spread < {threshold:.3f}) vs the audit's collapsed "
        f"(< 0.5x real), {sum(tally.values())} classes: flagged & collapsed "
        f"{tally[(True, True)]}, flagged & not {tally[(True, False)]}, missed "
        f"{tally[(False, True)]}, clear & not collapsed {tally[(False, False)]}; RMS of "
        f"collapsed classes max {max(collapsed_rms, default=float('nan')):.3f}, of the others "
        f"min {min(varied_rms, default=float('nan')):.3f}"
    ]


def environment(threads: int, per_class: int, load_start: float) -> str:
    return (
        f"# bench/zoo.py: torch {torch.__version__}, {threads} thread(s) on {os.cpu_count()} "
        f"CPUs ({platform.machine()}), load average {load_start:.2f} at start, {per_class} "
        "samples per class, delivered 8-bit samples, held-out split as reference"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", default=",".join(MEMBERS), help="comma-separated names")
    parser.add_argument("--methods", default="c3", help="comma-separated: c3, paper, fade, ...")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--route", choices=("dynamo", "legacy"), default="dynamo",
                        help="which ONNX export the inversion runs on")  # fmt: skip
    parser.add_argument("--json", default=None, help="write every row (and verdicts) here")
    parser.add_argument("--verbose", action="store_true", help="print every probe check")
    parser.add_argument("--from-json", default=None, help="print the table of saved runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    if args.from_json:
        rows, headers = [], []
        for path in args.from_json.split(","):
            saved = json.loads(Path(path).read_text())
            headers.append(saved["environment"] + f"; load average {saved['load_end']:.2f} at end")
            rows += saved["rows"]
        print("\n".join(headers) + "\n")
        print(HEADER)
        print("\n".join(format_row(r) for r in rows))
        print()
        print("\n".join(summarise(rows)))
        print("\n".join(collapse_signal_check(rows, InversionConfig().diversity_floor)))
        return 0
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    env = environment(args.threads, args.per_class, load_start)
    print(env, flush=True)
    methods = parse_choices(args.methods, METHODS)
    rows: list[dict[str, Any]] = []
    members = [m for m in args.members.split(",") if m]
    print("\n## members\n")
    prepared_members = []
    for name in members:
        if name not in MEMBERS:
            raise SystemExit(f"unknown member {name!r}: {', '.join(MEMBERS)}")
        prepared = prepare(MEMBERS[name], seed=args.seed, route=args.route)
        prepared_members.append(prepared)
        exports = "; ".join(f"{k}: {v}" for k, v in prepared.exports.items())
        print(
            f"{name:<16} {prepared.member.description}; {'x'.join(map(str, prepared.member.shape))}"
            f", {len(prepared.data.class_names)} classes; held-out accuracy "
            f"{100 * prepared.accuracy:.1f}% (trained in {prepared.train_seconds:.1f} s"
            f"{', cached' if prepared.cached else ''}); runs on {prepared.route}; {exports}",
            flush=True,
        )
    print("\n" + HEADER, flush=True)
    for prepared in prepared_members:
        for label, fields in methods:
            row = run_one(prepared, label, fields, args)
            rows.append(row)
            print(format_row(row), flush=True)
    load_end = os.getloadavg()[0]
    print(f"\nload average {load_end:.2f} at end\n")
    print("\n".join(summarise(rows)))
    print("\n".join(collapse_signal_check(rows, InversionConfig().diversity_floor)))
    if args.json:
        payload = {"environment": env, "load_end": load_end, "rows": rows}
        Path(args.json).write_text(json.dumps(payload, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
