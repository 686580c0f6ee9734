"""What the dashboard and the report say in words: the verdict's sentences and lights
(service.findings), the glossary behind every figure, and the settings as they ran
(service.effective)."""

from __future__ import annotations

import pytest

from models.contracts.artifacts import ClassMetrics, DetectorResult, EvasionTable
from models.contracts.inversion import InversionConfig, LossWeights
from service import effective, glossary, report
from service.findings import findings, side_by_side_sentence
from tests.records import classifier_record, job_record


def evasion(**accepted: float) -> EvasionTable:
    return EvasionTable(
        tpr=0.95, reference_fit=500, reference_eval=500, counterfeits=1000,
        detectors=[DetectorResult(name=name.replace("_", "-"), auroc=0.5, accepted_share=share,
                                  threshold=0.0) for name, share in accepted.items()],
    )  # fmt: skip


FOOLED = ClassMetrics(count=1000, confident_share=0.994, knn_feature_auroc=0.995)


def test_a_fooled_model_reads_as_in_the_issue() -> None:
    found = findings(
        FOOLED, evasion(max_softmax=0.998, energy=0.99, mahalanobis=0.003, knn=0.2), 0.99
    )
    assert found.fooled
    assert found.sentences == (
        "99.4% of 1,000 counterfeits were classified with p ≥ 0.99 although they look nothing "
        "like the real images (a nearest-neighbour check in the model's features tells them "
        "apart with AUROC 0.99).",
        "Max-softmax and energy detectors would accept nearly all of them (99.8%, 99.0%); a "
        "Mahalanobis detector would catch 99.7%; a k-NN feature-distance detector would catch "
        "only 80.0%.",
    )
    assert [(d.name, d.light) for d in found.lights] == [
        ("max-softmax", "red"), ("energy", "red"), ("mahalanobis", "green"), ("knn", "amber"),
    ]  # fmt: skip
    assert found.advice[0].startswith("Retrain with a reject class")
    assert found.advice[1].startswith("Deploy the Mahalanobis detector in front of the model")
    assert "99.7%" in found.advice[1]


def test_a_detector_aware_run_says_which_detectors_it_beat() -> None:
    table = evasion(max_softmax=1.0, energy=1.0, mahalanobis=0.9, knn=0.05)
    found = findings(FOOLED, table, 0.99, detectors=["mahalanobis", "knn"])
    assert found.sentences[2] == (
        "These counterfeits were made to pass the Mahalanobis and k-NN feature-distance "
        "detectors (detector-aware c3) and scored on the half of the reference set the "
        "generator never saw: the Mahalanobis detector would not protect the model from someone "
        "who knows it; the k-NN feature-distance detector withstood the attack."
    )
    assert len(findings(FOOLED, table, 0.99).sentences) == 2  # a plain run says nothing of it
    data_free = findings(FOOLED, table, 0.99, detectors=["mahalanobis"], data_free=True)
    assert data_free.sentences[2] == (
        "These counterfeits were made to pass the Mahalanobis detector without your data "
        "(detector-aware c3, its prior from the classifier alone) and scored on the reference "
        "set: the Mahalanobis detector would not protect the model from someone who has the "
        "model but not your data."
    )


def test_side_by_side_one_sentence_says_what_it_means_for_the_teams_detector() -> None:
    plain = evasion(max_softmax=1.0, mahalanobis=0.02, knn=0.6)

    def said(aimed: list[str], **aware: float) -> str | None:
        return side_by_side_sentence(plain, evasion(max_softmax=1.0, **aware), aimed)

    assert said(["mahalanobis"], mahalanobis=0.88, knn=0.9) == (
        "Your Mahalanobis detector accepted 2.0% of plain counterfeits and 88.0% of "
        "detector-aware ones: someone who knows the detector can get past it."
    )
    aware = evasion(max_softmax=1.0, mahalanobis=0.88, knn=0.9)
    assert side_by_side_sentence(plain, aware, ["mahalanobis"], data_free=True) == (
        "Your Mahalanobis detector accepted 2.0% of plain counterfeits and 88.0% of "
        "detector-aware ones: someone who has your model but not your data can get past it."
    )
    assert said(["mahalanobis"], mahalanobis=0.05, knn=0.9) == (
        "Your Mahalanobis detector accepted 2.0% of plain counterfeits and 5.0% of "
        "detector-aware ones: the detector held even against counterfeits made to pass it."
    )
    assert said(["knn"], mahalanobis=0.0, knn=0.9) == (
        "Your k-NN feature-distance detector accepted 60.0% of plain counterfeits and 90.0% of "
        "detector-aware ones: the detector was weak against plain counterfeits already."
    )
    assert said(["mahalanobis", "knn"], mahalanobis=0.88, knn=0.05) == (
        "Your Mahalanobis detector accepted 2.0% of plain counterfeits and 88.0% of "
        "detector-aware ones, your k-NN feature-distance detector 60.0% and 5.0%: someone who "
        "knows the Mahalanobis detector can get past it; the k-NN feature-distance detector "
        "held even against counterfeits made to pass it."
    )
    assert said(["mahalanobis"], knn=0.5) is None  # the aimed detector is in neither table


def test_lights_change_at_their_thresholds() -> None:
    found = findings(FOOLED, evasion(a=0.1, b=0.1001, c=0.5, d=0.5001), 0.99)
    assert [d.light for d in found.lights] == ["green", "amber", "amber", "red"]


def test_no_detector_good_enough_and_no_reference() -> None:
    weak = findings(FOOLED, evasion(max_softmax=0.8, knn=0.4), 0.99)
    assert "No detector tested rejects 90% of them" in weak.advice[1]
    assert weak.sentences[1].startswith("A max-softmax detector would accept most of them (80.0%)")
    blind = findings(ClassMetrics(count=10, confident_share=1.0), None, 0.99)
    assert blind.lights == ()
    assert len(blind.sentences) == 1
    assert "was not measured" in blind.sentences[0]
    assert "reference set of real images" in blind.advice[1]


def test_a_model_that_held_up_is_not_called_fooled() -> None:
    held = findings(
        ClassMetrics(count=200, confident_share=0.12, knn_feature_auroc=0.99),
        evasion(knn=0.01),
        0.99,
        method="soft",
    )
    assert not held.fooled
    assert held.sentences[0] == "12.0% of 200 counterfeits were classified with p ≥ 0.99."
    assert "confidence held up" in held.advice[0]
    assert "soft conditioning" in held.advice[0]
    assert not any("Retrain" in a for a in held.advice)


def test_close_to_real_data_is_said() -> None:
    near = findings(ClassMetrics(count=10, confident_share=0.9, knn_feature_auroc=0.6), None, 0.99)
    assert "many are close to real images" in near.sentences[0]


def test_every_figure_the_pages_show_is_explained() -> None:
    shown = {k for members in report.GROUPS.values() for k in members}
    shown |= set(ClassMetrics.model_fields)
    shown |= {f"detector.{d}" for d in ("max-softmax", "energy", "mahalanobis", "knn")}
    shown |= {f"evasion.{c}" for c in ("accepted", "auroc", "threshold")}
    missing = sorted(k for k in shown if not glossary.meaning(k))
    assert not missing, missing


@pytest.mark.parametrize(
    ("method", "recipe", "steps", "batch"),
    [("c3", "adaptive", 3000, 64), ("c3", "paper", 500, 64), ("soft", "adaptive", 500, 64),
     ("pixel", "paper", 200, 250)],
)  # fmt: skip
def test_form_defaults_are_the_ones_that_run(
    method: str, recipe: str, steps: int, batch: int
) -> None:
    shown = effective.defaults_table()[method][recipe]
    config = InversionConfig.model_validate({"method": method, "recipe": recipe})
    assert (shown["steps"], shown["batch_size"]) == (config.steps, config.batch_size)
    assert (shown["steps"], shown["batch_size"]) == (steps, batch)
    assert shown["stops_early"] == (method == "c3" and recipe == "adaptive")


def test_settings_as_they_ran() -> None:
    classifier = classifier_record()
    job = job_record(classifier, method="soft", steps=None, seed=1_013_228_889)
    settings = effective.job_settings(job)
    assert settings["steps"] == "500 (default)"
    assert settings["batch size"] == "64 (default)"
    assert settings["seed"] == "1013228889"
    assert settings["loss weights"] == "kl 1, ce 1, cosine 0.1 (default)"  # orthogonality is 0
    assert "recipe" not in settings  # soft has one recipe
    job.params.loss_weights = LossWeights(tv=0.5)
    assert effective.job_settings(job)["loss weights"] == "kl 1, ce 1, cosine 0.1, tv 0.5"
    pixel = job_record(classifier, method="pixel", steps=50)
    assert effective.job_settings(pixel)["steps"] == "50 per sample"
    assert effective.job_settings(pixel)["batch size"] == "250 (default)"
