"""What a job costs, known before it runs: the generator plan the engine builds from, the
classifier's measured cost and its extrapolation, and the estimate against a real run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from models.classifier import LoadedClassifier
from models.contracts.cost import CostProfile, estimate_job_memory, generator_plan
from models.generator import ConditionedGenerator
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
