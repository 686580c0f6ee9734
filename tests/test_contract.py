"""The API does not import the engine, so the few facts it repeats are checked here."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, get_args

import pytest

from models import spec
from models.config import LossWeights
from models.methods import list_methods
from service import schemas
from worker.jobs import JobRun


def test_loss_weight_names_match_the_engine() -> None:
    assert set(schemas.LossWeightsIn.model_fields) == {f.name for f in fields(LossWeights)}


def test_methods_match_the_engine() -> None:
    assert set(get_args(schemas.Method)) == set(list_methods())


def test_shape_and_class_limits_match_the_engine() -> None:
    assert schemas.MAX_CLASSES == spec.MAX_CLASSES
    assert schemas.MAX_CHANNELS == spec.MAX_CHANNELS
    assert (schemas.MIN_SIDE, schemas.MAX_SIDE) == (spec.MIN_SIDE, spec.MAX_SIDE)


def job(method: str, **params: Any) -> dict[str, Any]:
    return {
        "method": method,
        "params": {"seed": 3, "steps": None, "batch_size": None, "loss_weights": None, **params},
    }


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("c3", {"steps": 40, "batch_size": 32}, {"steps": 40, "batch_size": 32}),
        ("pixel", {"steps": 40, "batch_size": 32}, {"pixel_steps": 40, "pixel_batch_size": 32}),
        ("soft", {}, {"seed": 3}),
    ],
)
def test_job_parameters_become_the_engine_config(
    method: str, params: dict[str, Any], expected: dict[str, Any]
) -> None:
    config = JobRun(ctx=None, lease=None, job=job(method, **params)).config()  # type: ignore[arg-type]
    assert config.method == method
    for name, value in expected.items():
        assert getattr(config, name) == value


def test_partial_loss_weights_keep_the_method_preset() -> None:
    config = JobRun(
        ctx=None,
        lease=None,  # type: ignore[arg-type]
        job=job("soft", loss_weights={"cosine": 0.5}),
    ).config()
    assert config.weights == LossWeights(**{**LossWeights.soft().to_dict(), "cosine": 0.5})
