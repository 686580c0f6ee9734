"""What a job costs, known before it runs: the generator plan the engine builds from, the
classifier's measured cost and its extrapolation, and the estimate against a real run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models.classifier import LoadedClassifier
from models.contracts.cost import (
    DEFAULT_WIDTH,
    CostProfile,
    classifier_sized_width,
    estimate_job_memory,
    generator_plan,
)
from models.contracts.inversion import InversionConfig
from models.generator import ConditionedGenerator
from models.methods import build_method, build_method_from_state
from models.profiling import measure_cost
from tests import factories


@pytest.mark.parametrize(
    ("shape", "classes"), [((1, 28, 28), 10), ((3, 32, 40), 5), ((1, 8, 8), 100), ((3, 64, 64), 7)]
)
def test_the_plan_is_the_generator_the_engine_builds(
    shape: tuple[int, int, int], classes: int
) -> None:
    plan = generator_plan(shape, classes, latent_dim=100, width=16)
    generator = ConditionedGenerator(shape, classes, latent_dim=100, width=16)
    assert plan.parameter_count() == sum(p.numel() for p in generator.parameters())
    generator.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():  # one label: its hot-matrix map is the only part left out
        generator(torch.zeros(2, 100), torch.zeros(2, classes), torch.zeros(2, dtype=torch.long))
    counted = counter.get_total_flops() / 2
    assert plan.forward_flops() <= counted <= 1.02 * plan.forward_flops()


def test_the_generator_costs_no_more_than_the_classifier_down_to_half_its_width() -> None:
    shape, full = (1, 28, 28), generator_plan((1, 28, 28), 10, 100, DEFAULT_WIDTH)
    cheap = classifier_sized_width(shape, 10, 100, classifier_flops=500_000)  # an MLP
    costly = classifier_sized_width(shape, 10, 100, classifier_flops=10 * full.forward_flops())
    between = classifier_sized_width(shape, 10, 100, classifier_flops=4_000_000)
    assert (cheap, costly) == (DEFAULT_WIDTH // 2, DEFAULT_WIDTH)
    assert cheap < between < costly
    assert generator_plan(shape, 10, 100, between).forward_flops() <= 4_000_000
    assert generator_plan(shape, 10, 100, between + 1).forward_flops() > 4_000_000


def test_adaptive_c3_sizes_its_generator_to_the_classifier_and_keeps_a_given_width() -> None:
    mlp = factories.loaded("mlp", (1, 28, 28))  # cheap: the generator would be 90% of a step
    sized = build_method(mlp, InversionConfig(latent_dim=8))
    assert sized.config.width == DEFAULT_WIDTH // 2  # resolved into the config (and the state)
    assert sized.generator.widths[-1] == DEFAULT_WIDTH // 2
    paper = build_method(mlp, InversionConfig(latent_dim=8, recipe="paper"))
    assert paper.config.width == DEFAULT_WIDTH  # the paper's generator, as published
    given = build_method(mlp, InversionConfig(latent_dim=8, width=12))
    assert given.config.width == 12
    resumed = build_method_from_state(mlp, sized.state_dict())
    assert resumed.generator.widths == sized.generator.widths


def test_extrapolation_follows_the_measured_growth() -> None:
    linear = CostProfile(batch_sizes=[4, 8, 16], activation_bytes=[400, 800, 1600], seconds=[1] * 3)
    assert linear.bytes_at(64) == pytest.approx(6400)
    cubic = CostProfile(batch_sizes=[8, 16], activation_bytes=[8**3, 16**3], seconds=[1, 1])
    assert cubic.bytes_at(64) == pytest.approx(64**3)
    sublinear = CostProfile(batch_sizes=[8, 16], activation_bytes=[900, 1000], seconds=[1, 1])
    assert sublinear.bytes_at(32) == pytest.approx(2000)  # never less than linear
    assert linear.bytes_at(2) == pytest.approx(400)  # below the measured range: the smallest


class PadsByTheBatch(nn.Module):
    """A classifier whose memory grows with the batch cubed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(x, (0, 40 * x.shape[0], 0, 40 * x.shape[0]))
        return self.fc(x.flatten(1)) + padded.mean(dim=(1, 2, 3))[:, None]


def test_measured_cost_sees_growth_beyond_the_batch() -> None:
    names = [str(k) for k in range(10)]
    ordinary = measure_cost(factories.loaded("mlp", (1, 8, 8)))
    padded = measure_cost(LoadedClassifier(PadsByTheBatch(), (1, 8, 8), names))
    assert ordinary.batch_sizes == padded.batch_sizes == [1, 2, 4, 8, 16]
    assert ordinary.bytes_at(64) < 4 * ordinary.activation_bytes[-1] * 1.01  # linear
    assert padded.bytes_at(64) > 30 * padded.activation_bytes[-1]  # about cubic
    assert ordinary.feature_dim > 1
    small = measure_cost(
        LoadedClassifier(PadsByTheBatch(), (1, 8, 8), names), budget_bytes=20 * 2**20
    )
    assert small.batch_sizes[-1] < 16  # stopped before the pass that would pass the budget


AUDIT = """
import json, resource, torch
from models.audit import Reference, audit
from models.classifier import LoadedClassifier
from models.contracts.inversion import InversionConfig
from models.profiling import measure_cost
from tests import factories
torch.set_num_threads(1)
data = factories.digits((1, 28, 28))
classifier = LoadedClassifier(factories.trained_model("paper-cnn", epochs=1), (1, 28, 28),
                              data.class_names)
profile = measure_cost(classifier)
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
audit(classifier, InversionConfig(steps=20), samples_per_class=300,
      reference=Reference(data.test_x, data.test_y))
print(json.dumps({"peak": status("VmHWM") - before, "profile": profile.model_dump(),
                  "reference": len(data.test_y),
                  "parameters": sum(p.numel() for p in classifier.parameters())}))
"""


def test_the_estimate_is_above_a_real_runs_peak() -> None:
    run = subprocess.run(
        [sys.executable, "-c", AUDIT], capture_output=True, text=True, check=True, timeout=300
    )
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    estimate = estimate_job_memory(
        (1, 28, 28),
        10,
        batch_size=64,
        latent_dim=100,
        width=16,
        sample_batch_size=500,
        trains_generator=True,
        profile=CostProfile.model_validate(measured["profile"]),
        classifier_parameters=measured["parameters"],
        samples=3000,
        samples_per_class=300,
        reference_images=measured["reference"],
    )
    assert estimate.total >= measured["peak"], (estimate.describe(), measured["peak"])
    assert estimate.total < 20 * measured["peak"]  # conservative, not absurd
