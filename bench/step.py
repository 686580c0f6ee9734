"""What one training step of c3 costs, and how close it runs to the machine's matmul roof.

    .venv/bin/python bench/step.py                                # paper-cnn and pairs-100
    .venv/bin/python bench/step.py --members cnn-64,vit --threads 2 --batch 128

For each zoo member (bench/zoo_members.py, trained once and cached) it builds default c3
(the adaptive recipe) and prints the FLOPs of one step (forward and backward, counted by
torch's FlopCounterMode: matrix products and convolutions), split between the generator and
the classifier, the step's median wall time and its achieved rate as a fraction of the roof:
the rate of a large single-precision matrix product (`ROOF_SIDE`², the best of a few) on
the same threads, measured back to back with the steps, so a busy machine slows both. The
goal of issue 17 is ≥ 0.6 of the roof. Probes (the adaptive recipe's checks) are left out:
they cost what sampling costs, not a step.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from models.contracts.inversion import InversionConfig  # noqa: E402
from models.methods import GeneratorMethod, build_method  # noqa: E402

ROOF_SIDE = 1536
GOAL = 0.6


def matmul_roof(repeats: int = 5) -> float:
    """FLOP/s of a large float32 matrix product on the current threads (best of `repeats`)."""
    a, b = torch.randn(ROOF_SIDE, ROOF_SIDE), torch.randn(ROOF_SIDE, ROOF_SIDE)
    a @ b  # warm-up: thread pool and packing buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * ROOF_SIDE**3 / best


def step_flops(method: GeneratorMethod) -> tuple[int, int]:
    """(generator FLOPs, classifier FLOPs) of one step, forward and backward. Runs one step on
    a copy of the method's state, which is restored after."""
    state = method.state_dict()
    counter = FlopCounterMode(display=False)
    with counter:
        method.step(method.draw_labels())
    method.load_state_dict(state)
    by_module = counter.get_flop_counts()
    total = counter.get_total_flops()
    generator = sum(by_module.get(type(method.generator).__name__, {}).values())
    return generator, total - generator


def time_steps(method: GeneratorMethod, steps: int, warmup: int = 5) -> float:
    """Median seconds of one step (labels drawn outside the timing)."""
    times = []
    for index in range(warmup + steps):
        labels = method.draw_labels()
        start = time.perf_counter()
        method.step(labels)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from bench.zoo_members import MEMBERS, prepare

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", default="paper-cnn,pairs-100")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per member")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe("bench/step.py", args.threads), flush=True)
    print(
        f"\n{'member':<16}{'shape':>10}{'K':>4}{'gen GFLOP':>10}{'clf GFLOP':>10}"
        f"{'ms/step':>9}{'GFLOP/s':>9}{'roof':>7}{'share':>7}"
    )
    for name in args.members.split(","):
        prepared = prepare(MEMBERS[name])
        config = InversionConfig(method="c3", batch_size=args.batch, check_every=10**5)
        method = build_method(prepared.classifier, config, "cpu")
        if not isinstance(method, GeneratorMethod):
            raise SystemExit("c3 trains a generator")
        generator, classifier = step_flops(method)
        roof_before = matmul_roof()
        seconds = time_steps(method, args.steps)
        roof = max(roof_before, matmul_roof())
        rate = (generator + classifier) / seconds
        shape = "x".join(map(str, prepared.member.shape))
        print(
            f"{name:<16}{shape:>10}{method.num_classes:>4}{generator / 1e9:>10.3f}"
            f"{classifier / 1e9:>10.3f}{1e3 * seconds:>9.1f}{rate / 1e9:>9.1f}"
            f"{roof / 1e9:>7.1f}{rate / roof:>7.2f}",
            flush=True,
        )
    load = " / ".join(f"{v:.2f}" for v in __import__("os").getloadavg())
    print(f"\nload average {load} at end; goal: share of the roof >= {GOAL}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
