"""What a job will cost, known before it runs: the generator's shape (shared with the engine,
which builds the generator from it), the classifier's measured cost per batch, and the memory
estimate the API checks a job against before accepting it.

The estimate follows what the engine holds at its peak, term by term (`MemoryEstimate`): the
generator with its gradients and Adam state and its activations at the training batch, the
classifier's activations at that batch (measured by the validation and extrapolated), one
class of delivered samples with the float copies the scoring makes and every sample's outputs
and record (the engine measures a class at a time), and the reference set. It is meant
to be conservative (above the measured peak, see tests/models/test_cost.py), not exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, Field

__all__ = [
    "DEFAULT_WIDTH",
    "MAX_UPSAMPLINGS",
    "CostProfile",
    "GeneratorPlan",
    "MemoryEstimate",
    "estimate_job_memory",
    "generator_plan",
]

MIN_BASE_SIDE = 5  # the generator's first feature map is at least this many pixels per side
MAX_UPSAMPLINGS = 4
MAX_WIDTH = 256
MIN_WIDTH = 4
DEFAULT_WIDTH = 16  # the generator's width at 28×28 when nothing sizes it (the paper's recipe)
REFERENCE_PIXELS = 28 * 28  # the generator's `width` is meant for this many pixels per image
FLOAT = 4  # bytes
SAMPLE_RECORD = 1200  # bytes a sample's record (target, verdict, top-5) takes in memory


@dataclass(frozen=True)
class GeneratorPlan:
    """The conditioned generator's layer sizes for one input shape (models.generator)."""

    channels: int  # of the images
    steps: int  # ×2 up-convolutions
    base_h: int
    base_w: int
    widths: tuple[int, ...]  # channels at the base, then after each up-convolution
    inject_at: int  # the up-convolution whose input gets the hot conditioning matrix
    latent_dim: int
    num_classes: int

    def parameter_count(self) -> int:
        w, k = self.widths, self.num_classes
        count = (self.latent_dim + k + 1) * w[0] * self.base_h * self.base_w + 2 * w[0]
        for level in range(self.steps):
            c_in = w[level] + (k if level == self.inject_at else 0)
            count += c_in * w[level + 1] * 16 + 3 * w[level + 1]  # 4x4 kernel, bias, BatchNorm
        return count + w[-1] * self.channels * 9 + self.channels

    def forward_flops(self) -> int:
        """FLOPs of one sample's forward pass (2 per multiply-add, as torch's FlopCounterMode
        counts them): the FC, the up-convolutions (each input pixel meets a 4×4 kernel per
        output channel) and the last 3×3 convolution; the hot matrix's per-label maps, computed
        once per label in a batch, are left out."""
        w, h0, w0 = self.widths, self.base_h, self.base_w
        flops = 2 * (self.latent_dim + self.num_classes) * w[0] * h0 * w0
        pixels = h0 * w0
        for level in range(self.steps):
            flops += 2 * w[level] * pixels * w[level + 1] * 16
            pixels *= 4
        return flops + 2 * pixels * w[-1] * self.channels * 9

    def activation_floats(self) -> int:
        """Floats one sample keeps for the backward pass (each map stored a few times over:
        convolution output, BatchNorm, activation, dropout)."""
        h, w = self.base_h, self.base_w
        floats = 4 * self.widths[0] * h * w
        for level in range(self.steps):
            if level == self.inject_at:
                floats += self.num_classes * h * w  # the hot matrix joins the input
            h, w = 2 * h, 2 * w
            floats += 4 * self.widths[level + 1] * h * w
        return floats + 2 * self.channels * h * w


def upsampling_plan(height: int, width: int) -> tuple[int, int, int]:
    """(number of ×2 up-convolutions, base height, base width) for an output of height×width."""
    shorter = min(height, width)
    steps = 1
    while steps < MAX_UPSAMPLINGS and shorter / 2 ** (steps + 1) >= MIN_BASE_SIDE:
        steps += 1
    scale = 2**steps
    return steps, math.ceil(height / scale), math.ceil(width / scale)


def sized_width(width: int, height: int, out_width: int) -> int:
    """Channels at full resolution for an output of height×width: `width` at 28×28, scaled
    by √(784 / pixels) below it for larger images (at most `width`), so a step's cost grows
    with √pixels rather than with pixels (64×64: 16 → 7 channels, 2.6× fewer FLOPs)."""
    scaled = round(width * math.sqrt(REFERENCE_PIXELS / (height * out_width)))
    return max(min(MIN_WIDTH, width), min(width, scaled))


def generator_plan(
    input_shape: tuple[int, int, int], num_classes: int, latent_dim: int, width: int
) -> GeneratorPlan:
    channels, height, out_width = input_shape
    steps, base_h, base_w = upsampling_plan(height, out_width)
    width = sized_width(width, height, out_width)
    # Widths from the output end: sized to the image at full size, doubling to the base.
    widths = tuple(min(MAX_WIDTH, width * 2 ** (steps - level)) for level in range(steps + 1))
    # The hot matrix joins after the first up-convolution (before it if there is only one).
    return GeneratorPlan(
        channels, steps, base_h, base_w, widths, min(1, steps - 1), latent_dim, num_classes
    )


def classifier_sized_width(
    input_shape: tuple[int, int, int],
    num_classes: int,
    latent_dim: int,
    classifier_flops: int,
    width: int = DEFAULT_WIDTH,
) -> int:
    """The generator's 28×28 width for a classifier whose forward pass costs
    `classifier_flops` per sample: the largest in [width / 2, width] whose generator's forward
    pass costs no more than the classifier's.

    Where the classifier is cheap (a small CNN or an MLP on 28×28: 0.5–2.5 MFLOP against the
    generator's 7.4 at width 16) the generator is 80–95% of a step, and half its width (a
    quarter of its FLOPs) met every target on the zoo in as many steps (docs/engine.md, row
    21); where the classifier costs more, the generator is a small share of the step and
    keeps its capacity."""
    low = max(MIN_WIDTH, math.ceil(width / 2))
    for candidate in range(width, low, -1):
        plan = generator_plan(input_shape, num_classes, latent_dim, candidate)
        if plan.forward_flops() <= classifier_flops:
            return candidate
    return low


class CostProfile(BaseModel):
    """One forward and backward pass of a classifier, measured by the validation at growing
    batch sizes: its peak memory and its time. Superlinear growth (a graph that pads by the
    batch) shows in the extrapolation."""

    batch_sizes: list[int] = Field(min_length=1)
    activation_bytes: list[int]
    seconds: list[float]
    feature_dim: int = Field(1, ge=1, description="Size of the features the losses read.")

    def bytes_at(self, batch: int) -> float:
        """Activation bytes at `batch`, extrapolated from the last two measurements along the
        power law they follow (never less than linear)."""
        sizes, values = self.batch_sizes, self.activation_bytes
        if len(sizes) == 1 or batch <= sizes[0]:
            return values[-1] * batch / sizes[-1] if batch > sizes[-1] else float(values[0])
        (b1, m1), (b2, m2) = (sizes[-2], values[-2]), (sizes[-1], values[-1])
        exponent = 1.0
        if m1 > 0 and m2 > m1 and b2 > b1:
            exponent = max(1.0, math.log(m2 / m1) / math.log(b2 / b1))
        return m2 * (batch / b2) ** exponent

    def seconds_per_sample(self) -> float:
        return self.seconds[-1] / self.batch_sizes[-1]


RUNTIME = 128 * 2**20
"""What the engine's runtime holds whatever the job: allocator arenas, kernel workspaces and
caches (measured: 40-60 MB on this CPU build)."""


class MemoryEstimate(BaseModel):
    """Peak memory of a job, by what holds it (bytes)."""

    generator: int
    classifier: int
    samples: int
    reference: int
    runtime: int = RUNTIME

    @property
    def total(self) -> int:
        return self.generator + self.classifier + self.samples + self.reference + self.runtime

    def describe(self) -> str:
        parts = {
            "generator": self.generator,
            "classifier activations": self.classifier,
            "samples": self.samples,
            "reference set": self.reference,
            "runtime": self.runtime,
        }
        shown = ", ".join(f"{name} {_mb(value)}" for name, value in parts.items() if value)
        return f"{_mb(self.total)} ({shown})"


def _mb(value: int) -> str:
    return f"{value / 2**20:,.0f} MB"


def estimate_job_memory(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    batch_size: int,
    latent_dim: int,
    width: int,
    sample_batch_size: int,
    trains_generator: bool,
    profile: CostProfile | None,
    classifier_parameters: int,
    samples: int,
    samples_per_class: int,
    reference_images: int,
) -> MemoryEstimate:
    """The peak memory of a job as the engine runs it today (see the module docstring)."""
    pixels = math.prod(input_shape)
    generator = 0
    if trains_generator:
        plan = generator_plan(input_shape, num_classes, latent_dim, width)
        # weights, gradients and Adam's two moments; then the larger of training (activations
        # and their gradients) and sampling (a forward pass, half its maps alive at a time)
        work = max(2 * batch_size, sample_batch_size // 2) * plan.activation_floats()
        generator = FLOAT * (4 * plan.parameter_count() + work)
    else:  # pixel optimisation: the optimised images with their Adam state and gradients
        generator = FLOAT * 4 * batch_size * pixels
    measured = profile.bytes_at(batch_size) if profile is not None else FLOAT * 16 * pixels
    # the pass's peak (training, and scoring, which uses the same batch size), the weights
    classifier = int(measured) + FLOAT * classifier_parameters
    features = (num_classes + (profile.feature_dim if profile else 1)) * FLOAT
    # one class of images at a time (delivered uint8, the float copy scored, the float64 copy
    # the nearest-neighbour figures use); for every sample its outputs (logits, features, in
    # float and, for the distances, float64) and its record
    sample_bytes = samples_per_class * pixels * (1 + FLOAT + 2 * FLOAT) + samples * (
        3 * features + SAMPLE_RECORD
    )
    reference = reference_images * (pixels * 3 * FLOAT + features)
    return MemoryEstimate(
        generator=generator, classifier=classifier, samples=sample_bytes, reference=reference
    )
