"""The audit's evasion tables (models.audit): a run with a reference set also scores its
counterfeits on the reference set's evaluation half, where plain and detector-aware runs
compare (issue 15)."""

from __future__ import annotations

import json

import pytest
import torch

from models.audit import AuditHooks, AuditResult, Reference, audit
from models.classifier import LoadedClassifier
from models.contracts.artifacts import ArtifactName, AuditFigures, EvasionTable
from models.contracts.inversion import InversionConfig
from models.feature_prior import split_reference
from models.ood import evasion
from models.scoring import classifier_outputs


def run(classifier: LoadedClassifier, reference: Reference | None, **config: object) -> AuditResult:
    return audit(
        classifier,
        InversionConfig.tiny("c3", recipe="paper", **config),
        samples_per_class=3,
        reference=reference,
        device="cpu",
    )


@pytest.fixture(scope="module")
def plain(classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor]) -> AuditResult:
    return run(classifier, Reference(*real))


def test_a_plain_run_is_also_scored_on_the_evaluation_half(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor], plain: AuditResult
) -> None:
    x, y = real
    whole, held_out = plain.figures.ood, plain.figures.held_out_evasion
    assert whole is not None
    assert held_out is not None
    assert whole.reference_fit + whole.reference_eval == len(x)  # the report's table, as before
    assert held_out.reference_fit + held_out.reference_eval == 100  # the evaluation half only
    # the table of the delivered counterfeits against the evaluation half's images alone
    _, half = split_reference(len(x))
    expected = evasion(
        classifier_outputs(classifier, plain.images),
        classifier_outputs(classifier, x[half]),
        y[half],
    )
    assert expected is not None
    assert (held_out.reference_fit, held_out.reference_eval, held_out.counterfeits) == (
        expected.reference_fit,
        expected.reference_eval,
        expected.counterfeits,
    )
    for got, want in zip(held_out.detectors, expected.detectors, strict=True):
        assert got.name == want.name
        # the same real images and counterfeits, scored in other batches: float noise only
        assert got.threshold == pytest.approx(want.threshold, rel=1e-4)
        assert got.accepted_share == pytest.approx(want.accepted_share, abs=1 / 30)  # 1 of 30
        assert got.auroc == pytest.approx(want.auroc, abs=0.01)
    stored = AuditFigures.model_validate(
        json.loads(plain.artifacts()[ArtifactName.REPORT_JSON])  # type: ignore[arg-type]
    )
    assert stored.held_out_evasion == held_out  # in report.json


def test_plain_and_detector_aware_runs_share_the_held_out_detectors(
    classifier: LoadedClassifier, real: tuple[torch.Tensor, torch.Tensor], plain: AuditResult
) -> None:
    aware = run(classifier, Reference(*real), detectors=["mahalanobis", "knn"])
    assert aware.figures.held_out_evasion == aware.figures.ood  # computed once, stored as both
    plain_table, aware_table = plain.figures.held_out_evasion, aware.figures.held_out_evasion
    assert isinstance(plain_table, EvasionTable)
    assert isinstance(aware_table, EvasionTable)

    def thresholds(table: EvasionTable) -> dict[str, float]:
        return {d.name: d.threshold for d in table.detectors}

    # fit and thresholded on the same real images: the same detectors, other counterfeits
    assert thresholds(plain_table) == thresholds(aware_table)
    assert (plain_table.reference_fit, plain_table.reference_eval) == (
        aware_table.reference_fit,
        aware_table.reference_eval,
    )


def test_without_a_reference_set_there_is_no_held_out_table(classifier: LoadedClassifier) -> None:
    figures = run(classifier, None).figures
    assert figures.ood is None
    assert figures.held_out_evasion is None


def test_a_run_with_the_width_left_open_continues_from_its_checkpoint(
    classifier: LoadedClassifier,
) -> None:
    """The worker resumes with the job's config, whose width is open; the state names the
    width the method resolved from the classifier."""
    config = InversionConfig.tiny("c3", steps=6).model_copy(update={"width": None})
    saved: list[bytes] = []
    hooks = AuditHooks(on_checkpoint=lambda state, _step: saved.append(state), checkpoint_every=3)
    first = audit(classifier, config, samples_per_class=2, hooks=hooks, device="cpu")
    assert first.method.config.width is not None
    resumed = audit(classifier, config, samples_per_class=2, state=saved[0], device="cpu")
    assert resumed.method.config.width == first.method.config.width
    with pytest.raises(ValueError, match="another config"):
        audit(classifier, config.model_copy(update={"lr": 0.5}), state=saved[0], device="cpu")
