"""The scaling law of training: a c3 step's cost against input size, classes and batch.

    .venv/bin/python bench/scaling.py               # the README's table, one thread
    .venv/bin/python bench/scaling.py --steps 10    # quicker, noisier

A job's training time is (steps) × (time of a step) + probes; this measures the second factor
on the paper's CNN (`paper-cnn`, untrained: a step's cost does not depend on the weights)
sized to each input, with default c3 (the adaptive recipe, probes left out). Each row: the
FLOPs of a step (forward and backward, torch's FlopCounterMode) split between the generator
and the classifier, the median step time, the rate achieved and, as a check of the service's
memory estimate (`models.contracts.cost.estimate_job_memory`, which refuses jobs over
C3_JOB_MEMORY_MB), the memory a step holds: its peak of new tensors (counted as torch creates
and frees them) plus the weights, gradients and Adam state, beside the estimate's generator
and classifier terms for the same job.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.step import matmul_roof, step_flops, time_steps  # noqa: E402
from models.architectures import build_architecture  # noqa: E402
from models.classifier import LoadedClassifier  # noqa: E402
from models.contracts.cost import DEFAULT_WIDTH, estimate_job_memory  # noqa: E402
from models.contracts.inversion import InversionConfig  # noqa: E402
from models.methods import GeneratorMethod, build_method  # noqa: E402
from models.profiling import _LiveBytes, measure_cost  # noqa: E402

Shape = tuple[int, int, int]
GRID: list[tuple[str, Shape, int, int]] = [  # (what varies, input shape, classes, batch)
    ("input", (1, 28, 28), 10, 64),
    ("input", (3, 32, 32), 10, 64),
    ("input", (1, 28, 56), 10, 64),
    ("input", (1, 64, 64), 10, 64),
    ("input", (3, 64, 64), 10, 64),
    ("input", (3, 128, 128), 10, 64),
    ("classes", (1, 28, 28), 100, 64),
    ("classes", (1, 28, 28), 1000, 64),
    ("batch", (1, 28, 28), 10, 32),
    ("batch", (1, 28, 28), 10, 128),
    ("batch", (1, 28, 28), 10, 256),
]
MB = 2**20


def step_memory(method: GeneratorMethod) -> int:
    """Bytes a step holds at its peak: the new tensors it creates (autograd's saved
    activations, gradients, temporaries) plus the generator's weights, gradients and Adam's
    two moments and the classifier's weights."""
    counter = _LiveBytes()
    with counter:
        method.step(method.draw_labels())
    generator = sum(p.numel() for p in method.generator.parameters())
    classifier = sum(p.numel() for p in method.classifier.parameters())
    return counter.peak + 4 * (4 * generator + classifier)


def row(shape: Shape, classes: int, batch: int, steps: int) -> dict[str, float]:
    names = [str(k) for k in range(classes)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_architecture("paper-cnn", shape, classes)
    classifier = LoadedClassifier(model, shape, names)
    # the paper's generator width: the law's generator term (adaptive c3 may size it down)
    config = InversionConfig(batch_size=batch, check_every=10**5, width=DEFAULT_WIDTH)
    method = build_method(classifier, config, "cpu")
    if not isinstance(method, GeneratorMethod):
        raise SystemExit("c3 trains a generator")
    generator_flops, classifier_flops = step_flops(method)
    memory = step_memory(method)
    roof = matmul_roof()
    seconds = time_steps(method, steps)
    roof = max(roof, matmul_roof())  # back to back with the steps: a busy machine slows both
    estimate = estimate_job_memory(
        shape,
        classes,
        batch_size=batch,
        latent_dim=config.latent_dim,
        width=DEFAULT_WIDTH,
        sample_batch_size=config.sample_batch_size,
        trains_generator=True,
        profile=measure_cost(classifier, (batch // 4, batch // 2, batch)),
        classifier_parameters=sum(p.numel() for p in classifier.parameters()),
        samples=0,
        samples_per_class=0,
        reference_images=0,
    )
    return {
        "generator_flops": generator_flops,
        "classifier_flops": classifier_flops,
        "seconds": seconds,
        "roof": roof,
        "memory": memory,
        "estimate": estimate.generator + estimate.classifier,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe("bench/scaling.py", args.threads), flush=True)
    print("\nshare of roof: the step's FLOP/s over a large sgemm's, measured around each row\n")
    print(
        "| varies | input | classes | batch | generator MFLOP/sample | classifier MFLOP/sample "
        "| ms/step | µs/sample | roof GFLOP/s | share of roof | step memory MB | estimate MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for varies, shape, classes, batch in GRID:
        r = row(shape, classes, batch, args.steps)
        rate = (r["generator_flops"] + r["classifier_flops"]) / r["seconds"]
        roof = r["roof"]
        generator = r["generator_flops"] / batch / 1e6  # MFLOP per sample
        classifier = r["classifier_flops"] / batch / 1e6
        print(
            f"| {varies} | {'×'.join(map(str, shape))} | {classes} | {batch} "
            f"| {generator:.1f} | {classifier:.1f}"
            f" | {1e3 * r['seconds']:.0f} | {1e6 * r['seconds'] / batch:.0f} | {roof / 1e9:.0f}"
            f" | {rate / roof:.2f}"
            f" | {r['memory'] / MB:.0f} | {r['estimate'] / MB:.0f} |",
            flush=True,
        )
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nload average {load} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
