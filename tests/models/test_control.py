"""The adaptive recipe's control logic: stopping, collapse signal, adaptation, class sampling,
state and resume, and the verdict built from metrics. Tiny networks, no timing."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
import torch

from models.classifier import LoadedClassifier
from models.contracts.artifacts import InversionMetrics
from models.contracts.inversion import InversionConfig
from models.contracts.verdict import Targets, TrainingOutcome, Verdict, build_verdict
from models.control import (
    CONFIRM_EVIDENCE,
    D_START,
    MANY_CLASSES,
    PASSES_TO_STOP,
    PRIOR_DOWN,
    PRIOR_MAX,
    PRIOR_MIN,
    PRIOR_PATIENCE,
    PRIOR_UP,
    ClassController,
    ControlSettings,
    class_diversity,
    quantise,
)
from models.feature_prior import build_prior
from models.methods import build_method, build_method_from_state
from models.training import StepReport, load_state, save_state, train
from tests import factories

K = 4
PIXELS = (1, 8, 8)


def _confident_logits(labels: torch.Tensor, right: torch.Tensor | None = None) -> torch.Tensor:
    """Logits with p_y ≈ 1 where `right` (default: everywhere), else the mass elsewhere."""
    logits = torch.zeros(len(labels), K)
    right = torch.ones(len(labels), dtype=torch.bool) if right is None else right
    logits[torch.arange(len(labels)), labels] = torch.where(right, 20.0, -20.0)
    return logits


def _diverse(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return torch.rand(len(labels), *PIXELS, generator=torch.Generator().manual_seed(seed))


def _collapsed(labels: torch.Tensor) -> torch.Tensor:
    """One image per class: every probe of a class is the same picture."""
    per_class = torch.rand(K, *PIXELS, generator=torch.Generator().manual_seed(1))
    return per_class[labels]


LABELS = torch.arange(K).repeat_interleave(48)  # 48 probes per class: a window of 2 checks


def test_stops_only_after_targets_are_met_at_consecutive_checks() -> None:
    control = ClassController(K, ControlSettings())
    good = (LABELS, _diverse(LABELS), _confident_logits(LABELS))
    lagging = torch.ones(len(LABELS), dtype=torch.bool)
    lagging[LABELS == 2] = False  # class 2: none confident
    bad = (LABELS, _diverse(LABELS), _confident_logits(LABELS, lagging))

    first = control.observe(50, *good)
    assert not first.targets_met  # one check is not enough
    assert not control.finished
    assert not control.observe(100, *bad).targets_met
    assert control.passes == 0  # a miss resets the count
    assert not control.observe(150, *good).targets_met  # the bad check is still pooled
    report = control.observe(200, *good)
    assert report.targets_met
    assert not control.finished  # a candidate until confirmed on the same generator
    assert control.candidate
    report = control.confirm(LABELS, _diverse(LABELS, seed=5), _confident_logits(LABELS))
    assert report.finished
    assert control.finished
    assert report.passes >= 1
    assert not control.due(300)  # a finished controller probes no more


def test_a_failed_confirmation_keeps_training() -> None:
    control = ClassController(K, ControlSettings())
    good = (LABELS, _diverse(LABELS), _confident_logits(LABELS))
    control.observe(50, *good)
    assert control.observe(100, *good).targets_met
    right = LABELS != 1  # the fresh batch from the same generator: class 1 misses
    report = control.confirm(LABELS, _diverse(LABELS, seed=9), _confident_logits(LABELS, right))
    assert not report.finished
    assert not control.finished
    assert control.passes == 0
    assert not control.candidate


def test_a_collapsed_class_blocks_the_stop_even_when_confident() -> None:
    control = ClassController(K, ControlSettings())
    for step in (50, 100, 150):
        report = control.observe(step, LABELS, _collapsed(LABELS), _confident_logits(LABELS))
        assert not report.targets_met
        assert all(report.collapsed)
    assert not control.finished


def test_collapse_signal_flags_one_image_per_class_not_a_diverse_generator() -> None:
    classes = torch.arange(K)
    same = class_diversity(_collapsed(LABELS), LABELS, classes)
    varied = class_diversity(_diverse(LABELS), LABELS, classes)
    floor = ControlSettings().diversity_floor
    assert torch.all(same < 1e-9)
    assert torch.all(varied > floor)  # uniform noise: RMS ≈ √(1/6) ≈ 0.41
    # quantising to 8 bits changes the signal by far less than the floor
    assert torch.allclose(class_diversity(quantise(_diverse(LABELS)), LABELS, classes), varied,
                          atol=0.01)  # fmt: skip


def test_collapsed_class_gets_more_diversity_lagging_class_more_pull() -> None:
    control = ClassController(K, ControlSettings())
    images = _diverse(LABELS)
    images[LABELS == 0] = images[LABELS == 0][0]  # class 0 collapsed
    right = LABELS != 3  # class 3 not confident, but diverse
    before_d, before_pull = control.diversity_weight.clone(), control.pull.clone()
    before_tau = control.spread_target.clone()
    report = control.observe(50, LABELS, images, _confident_logits(LABELS, right))
    assert report.collapsed == (True, False, False, False)
    assert report.lagging == (False, False, False, True)
    assert control.spread_target[0] > before_tau[0]  # raised while collapsed
    assert control.spread_target[3] < before_tau[3]  # lowered while lagging (and diverse)
    assert control.spread_target[1] == before_tau[1]  # held
    assert control.diversity_weight[3] < before_d[3]
    assert control.diversity_weight[1] == before_d[1] == D_START
    assert control.pull[3] > before_pull[3]
    assert control.pull[1] == before_pull[1] == 1.0
    # pull goes back down once the pooled evidence (2 checks here) shows the class on target
    control.observe(100, LABELS, _diverse(LABELS), _confident_logits(LABELS))
    peak = float(control.pull[3])
    assert peak > report.pull[3]  # the miss is still in the window
    control.observe(150, LABELS, _diverse(LABELS), _confident_logits(LABELS))
    assert control.pull[3] < peak


def test_many_classes_two_per_drawn_class_lagging_favoured_deterministic() -> None:
    control = ClassController(100, ControlSettings())
    control.pull[:10] = 4.0  # classes 0..9 lag
    pool = torch.arange(100)
    counts = torch.zeros(100)
    for seed in range(50):
        labels = control.draw_labels(pool, 64, torch.Generator().manual_seed(seed))
        assert len(labels) == 64
        per_class = torch.bincount(labels, minlength=100)
        assert set(per_class[per_class > 0].tolist()) == {2}  # 32 classes, 2 each
        counts += per_class
    assert counts[:10].mean() > 2 * counts[10:].mean()  # lagging classes drawn more often
    again = control.draw_labels(pool, 64, torch.Generator().manual_seed(3))
    assert torch.equal(again, control.draw_labels(pool, 64, torch.Generator().manual_seed(3)))


def test_steps_record_each_class_need_and_batches_follow_it() -> None:
    control = ClassController(100, ControlSettings())
    labels = torch.arange(100).repeat_interleave(2)  # (200,)
    p_target = torch.where(labels < 10, 0.5, 0.9999)  # classes 0..9 far from confident
    for _ in range(10):
        control.record(labels, p_target)
    assert torch.allclose(control.need[:10], torch.ones(10, dtype=torch.float64))
    assert float(control.need[10:].max()) < 0.05  # the others are near certain
    control.record(torch.tensor([5, 5]), torch.tensor([0.995, 0.995]))  # half-way: need 0.5
    assert float(control.need[5]) == pytest.approx(0.7 + 0.3 * 0.5)
    counts = torch.zeros(100)
    for seed in range(20):
        drawn = control.draw_labels(torch.arange(100), 64, torch.Generator().manual_seed(seed))
        counts += torch.bincount(drawn, minlength=100)
    assert counts[:10].min() >= 30  # the needy classes are in (nearly) every batch ...
    assert counts[:10].mean() > 3 * counts[10:].mean()  # ... the others share what is left
    assert int((counts[10:] > 0).sum()) > 45  # ... and still visits confident classes
    clone = ClassController(100, ControlSettings())
    clone.load_state_dict(load_state(save_state(control.state_dict())))
    assert torch.equal(clone.need, control.need)
    # with few classes every class is in every batch: the need changes nothing (the runs of
    # the 10-class classifiers are the same, bit for bit, as before it)
    few = ClassController(10, ControlSettings())
    before = few.draw_labels(torch.arange(10), 64, torch.Generator().manual_seed(1))
    few.need = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
    after = few.draw_labels(torch.arange(10), 64, torch.Generator().manual_seed(1))
    assert torch.equal(before, after)


def test_few_classes_every_class_at_least_twice_extra_slots_to_lagging() -> None:
    control = ClassController(10, ControlSettings())
    balanced = control.draw_labels(torch.arange(10), 64, torch.Generator().manual_seed(0))
    assert torch.bincount(balanced, minlength=10).tolist().count(6) == 6  # 6 or 7 each
    control.pull[4] = 4.0
    labels = control.draw_labels(torch.arange(10), 64, torch.Generator().manual_seed(0))
    per_class = torch.bincount(labels, minlength=10)
    assert per_class.min() >= 2
    assert per_class[4] == per_class.max()
    assert per_class[4] > 10
    subset = control.draw_labels(torch.tensor([2, 7]), 9, torch.Generator().manual_seed(0))
    assert set(subset.tolist()) == {2, 7}


def test_controller_state_round_trips() -> None:
    control = ClassController(K, ControlSettings())
    control.observe(
        50, LABELS, _collapsed(LABELS), _confident_logits(LABELS), _rejected(LABELS, (0,))
    )
    clone = ClassController(K, ControlSettings())
    clone.load_state_dict(load_state(save_state(control.state_dict())))
    assert torch.equal(clone.diversity_weight, control.diversity_weight)
    assert torch.equal(clone.pull, control.pull)
    assert torch.equal(clone.spread_target, control.spread_target)
    assert torch.equal(clone.prior_gain, control.prior_gain)
    assert (clone.passes, clone.finished, clone.checks) == (0, False, 1)
    assert clone.last_report == control.last_report


def test_train_stops_when_targets_met_twice(classifier: LoadedClassifier) -> None:
    config = InversionConfig.tiny(
        "c3",
        steps=40,
        check_every=3,
        target_confident_share=0.0,
        target_class_confident_share=0.0,
        target_argmax_share=0.0,
        diversity_floor=0.0,
    )  # every check meets these
    method = build_method(classifier, config, "cpu")
    reports: list[StepReport] = []
    result = train(method, steps=40, on_progress=reports.append, progress_every_s=0.0)
    assert result.stop_reason == "targets_met"
    assert result.step == 3 * PASSES_TO_STOP
    assert result.probe is not None
    assert result.probe.finished
    probes = [p.probe for p in reports if p.probe is not None]
    assert next(p.step for p in probes) == 3
    assert probes[-1].classes == tuple(range(10))
    assert len(probes[-1].diversity_weight) == len(probes[-1].pull) == 10


def test_train_spends_the_budget_when_targets_cannot_be_met(classifier: LoadedClassifier) -> None:
    config = InversionConfig.tiny("c3", steps=9, check_every=3, confidence_threshold=0.999999)
    method = build_method(classifier, config, "cpu")
    result = train(method, steps=9)
    assert result.stop_reason == "budget_spent"
    assert result.step == 9
    assert method.controller is not None
    assert method.controller.checks == 3
    fixed = train(build_method(classifier, InversionConfig.tiny("c3", recipe="paper"), "cpu"),
                  steps=4)  # fmt: skip
    assert fixed.stop_reason == "fixed_recipe"
    assert fixed.probe is None


def test_adaptive_resume_from_any_checkpoint_matches_uninterrupted(
    classifier: LoadedClassifier,
) -> None:
    # a batch of 16 cannot hold 10 classes twice: classes are drawn by pull and need
    config = InversionConfig.tiny("c3", steps=9, check_every=2, confidence_threshold=0.999999)
    labels = torch.arange(10)
    straight = build_method(classifier, config, "cpu")
    train(straight, steps=9)
    expected = straight.sample(labels)
    checkpoints: dict[int, bytes] = {}
    first = build_method(classifier, config, "cpu")
    train(
        first,
        steps=9,
        checkpoint_every=1,
        on_checkpoint=lambda state, step: checkpoints.__setitem__(step, state),
    )
    assert first.controller is not None
    assert straight.controller is not None
    assert torch.equal(first.controller.diversity_weight, straight.controller.diversity_weight)
    for step in (1, 4, 7):
        resumed = build_method_from_state(classifier, load_state(checkpoints[step]), "cpu")
        train(resumed, steps=9)
        assert resumed.controller is not None
        assert torch.equal(resumed.controller.pull, straight.controller.pull)
        assert torch.equal(resumed.controller.need, straight.controller.need)
        assert torch.equal(resumed.sample(labels), expected), f"resumed from step {step}"


def test_per_class_sampling_weights_the_kl_of_lagging_classes(
    classifier: LoadedClassifier,
) -> None:
    method = build_method(classifier, InversionConfig.tiny("c3", batch_size=64), "cpu")
    assert method.controller is not None
    method.controller.pull[5] = 4.0
    labels = method.draw_labels()
    assert (labels == 5).sum() > (labels == 4).sum()
    assert torch.bincount(labels, minlength=10).min() >= 2
    losses = method.step(labels)
    assert {"kl", "cosine", "orthogonality", "spread", "total"} <= set(losses)


# -- the verdict ---------------------------------------------------------------------------


def _metrics(confident: dict[str, float], diversity: float = 6.0) -> InversionMetrics:
    return InversionMetrics.model_validate(_metrics_dict(confident, diversity))


def _metrics_dict(confident: dict[str, float], diversity: float = 6.0) -> dict[str, Any]:
    per_class = {
        name: {
            "count": 100,
            "confident_share": share,
            "pixel_diversity": diversity,
            "reference_pixel_diversity": 6.0,
        }
        for name, share in confident.items()
    }
    overall = sum(confident.values()) / len(confident)
    return {
        "overall": {
            "count": 100 * len(confident),
            "confident_share": overall,
            "argmax_accuracy": 1.0,
            "msp_auroc": 0.1,
        },
        "per_class": per_class,
        "confident_threshold": 0.99,
    }


def test_verdict_all_targets_met_lists_nothing_missed() -> None:
    verdict = build_verdict(
        _metrics({str(k): 1.0 for k in range(10)}),
        TrainingOutcome(stop_reason="targets_met", steps=400, step_budget=3000),
    )
    assert verdict.met
    assert verdict.missed == ()
    assert verdict.missed_classes == ()
    assert verdict.suggestions == ()
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict
    assert "All targets met." in verdict.summary


def test_verdict_names_a_lagging_class_with_its_shortfall_and_what_to_try() -> None:
    shares = {str(k): 1.0 for k in range(10)} | {"7": 0.90}
    verdict = build_verdict(
        _metrics(shares), TrainingOutcome(stop_reason="budget_spent", steps=3000, step_budget=3000)
    )
    assert not verdict.met
    assert [c.name for c in verdict.missed] == ["class_confident_share"]
    (item,) = verdict.missed_classes
    assert item.class_name == "7"
    assert item.shortfall == pytest.approx(0.07)
    assert any("step budget to 6000" in s for s in verdict.suggestions)
    text = verdict.summary
    assert "Classes under share at p >= 0.99 in the worst class: 7 90.0% (7.0% short)" in text
    assert "budget of 3000 steps" in text


def test_verdict_collapse_and_missing_reference() -> None:
    collapsed = build_verdict(_metrics({"a": 1.0, "b": 1.0}, diversity=2.0))
    assert {c.name for c in collapsed.missed} == {"min_diversity_ratio", "mean_diversity_ratio"}
    assert {c.class_name for c in collapsed.missed_classes} == {"a", "b"}
    assert any("diversity_floor" in s for s in collapsed.suggestions)
    # a ratio reads as a number, not a percentage
    assert re.search(r"real images': a \d\.\d\d \(\d\.\d\d short\)", collapsed.summary)
    fixed = build_verdict(
        _metrics({"a": 1.0, "b": 1.0}, diversity=2.0),
        TrainingOutcome(stop_reason="fixed_recipe", steps=500, step_budget=500, recipe="paper"),
    )
    assert any("recipe 'adaptive'" in s for s in fixed.suggestions)
    metrics = _metrics_dict({"a": 1.0, "b": 1.0})
    for m in metrics["per_class"].values():
        m["reference_pixel_diversity"] = None
    metrics["overall"]["msp_auroc"] = None
    unmeasured = build_verdict(InversionMetrics.model_validate(metrics))
    assert unmeasured.met
    assert {c.name for c in unmeasured.not_measured} == {
        "min_diversity_ratio",
        "mean_diversity_ratio",
        "msp_auroc",
    }
    assert Targets.model_validate(Targets().model_dump()) == Targets()


def _rejected(labels: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Every probe of `classes` rejected by an aimed detector, the others accepted."""
    return torch.isin(labels, torch.tensor(classes))


def test_prior_gain_rises_while_rejected_and_confident_falls_while_lagging() -> None:
    control = ClassController(K, ControlSettings())
    right = LABELS != 3  # class 3 lags in confidence
    report = control.observe(
        50, LABELS, _diverse(LABELS), _confident_logits(LABELS, right), _rejected(LABELS, (1, 3))
    )
    assert report.prior_rejected == (0.0, 1.0, 0.0, 1.0)
    gain = report.prior_gain
    assert gain[0] == gain[2] == 1.0  # inside: held
    assert gain[1] == pytest.approx(PRIOR_UP)  # rejected and confident: more pull
    assert gain[3] == PRIOR_MIN == 1.0  # lagging: never under the job's own weight
    for step in range(100, 1100, 50):  # bounded
        control.observe(
            step,
            LABELS,
            _diverse(LABELS),
            _confident_logits(LABELS, right),
            _rejected(LABELS, (1, 3)),
        )
    assert float(control.prior_gain[1]) == PRIOR_MAX
    assert float(control.prior_gain[3]) == PRIOR_MIN
    lags = LABELS != 1  # now class 1 lags: its gain falls, confidence first
    control.observe(
        1100, LABELS, _diverse(LABELS), _confident_logits(LABELS, lags), _rejected(LABELS, (1,))
    )
    assert float(control.prior_gain[1]) == pytest.approx(PRIOR_MAX * PRIOR_DOWN)
    plain = ClassController(K, ControlSettings()).observe(
        50, LABELS, _diverse(LABELS), _confident_logits(LABELS)
    )
    assert plain.prior_gain == ()
    assert plain.prior_rejected == ()


def test_the_prior_holds_back_the_stop_until_inside_at_its_maximum_or_out_of_patience() -> None:
    def met_at(rejected: tuple[int, ...], stuck: bool = False) -> list[bool]:
        control = ClassController(K, ControlSettings())
        met = []
        for i in range(12):
            report = control.observe(
                50 * (i + 1),
                LABELS,
                _diverse(LABELS),
                _confident_logits(LABELS),
                _rejected(LABELS, rejected),
            )
            met.append(report.targets_met)
            if stuck:  # as if the class's gain never got anywhere
                control.prior_gain[:] = 1.0
        return met

    assert met_at(())[1]  # every class inside: the confidence targets decide, as before
    held = met_at((2,))  # class 2 stays rejected: its gain climbs to the maximum first
    first = held.index(True)
    at_max = math.ceil(math.log(PRIOR_MAX) / math.log(PRIOR_UP)) - 1  # the check's index
    assert first == min(at_max, 1 + PRIOR_PATIENCE)  # targets hold from index 1
    assert all(held[first:])
    waited = met_at((2,), stuck=True)  # never inside, never at the maximum: patience ends it
    assert waited.index(True) == 1 + PRIOR_PATIENCE


def test_the_prior_gain_scales_each_class_pull(
    classifier: LoadedClassifier,
) -> None:
    data = factories.digits((1, 28, 28))
    config = InversionConfig.tiny("c3", detectors=["knn"])
    method = build_method(classifier, config, "cpu")
    method.use_prior(build_prior(classifier, data.test_x[:200], data.test_y[:200]))
    assert method.controller is not None
    features = torch.randn(4, 128) * 10  # far outside: every hinge positive
    labels = torch.tensor([0, 1, 2, 3])
    confident = torch.ones(4)

    def pull() -> float:
        out, _ = method._with_prior(
            torch.zeros(()), {}, features, labels, [], {"knn": 1.0}, confident
        )
        return float(out)

    before = pull()
    method.controller.prior_gain[2] = 3.0
    hinge = method.prior.knn(features)  # type: ignore[union-attr]
    assert pull() == pytest.approx(before + 2.0 * float(hinge[2]) / 4, rel=1e-5)
    rejected = method.prior.rejected(features, labels, ["knn"])  # type: ignore[union-attr]
    assert rejected is not None
    assert bool(rejected.all())
    assert method.prior.rejected(features, labels, ["batch_stats"]) is None  # type: ignore[union-attr]
    report = method.probe()
    assert len(report.prior_gain) == len(report.classes) == 10


def test_a_stop_is_confirmed_on_more_fresh_probes_than_a_check_draws() -> None:
    settings = ControlSettings()
    assert settings.confirm_for(10) == CONFIRM_EVIDENCE > settings.probes_for(10)
    assert settings.confirm_for(100) == CONFIRM_EVIDENCE > settings.probes_for(100)
    assert ControlSettings(probe_per_class=200).confirm_for(10) == 200
    control = ClassController(K, ControlSettings())
    good = (LABELS, _diverse(LABELS), _confident_logits(LABELS))
    control.observe(50, *good)
    assert control.observe(100, *good).targets_met
    fresh = torch.arange(K).repeat_interleave(CONFIRM_EVIDENCE)
    right = torch.ones(len(fresh), dtype=torch.bool)
    right[(fresh == 1).nonzero()[:2]] = False  # 2 misses in 48 + 96: over 1%
    report = control.confirm(fresh, _diverse(fresh, seed=3), _confident_logits(fresh, right))
    assert not report.finished


def test_the_method_confirms_with_the_larger_fresh_batch(classifier: LoadedClassifier) -> None:
    method = build_method(classifier, InversionConfig.tiny("c3", check_every=1), "cpu")
    assert method.controller is not None
    seen: list[int] = []
    confirm = method.controller.confirm

    def spy(labels: torch.Tensor, images: torch.Tensor, logits: torch.Tensor) -> Any:
        seen.append(len(labels))
        return confirm(labels, images, logits)

    method.controller.confirm = spy  # type: ignore[method-assign]
    method.controller.candidate = True
    method.controller.observe = lambda *a, **k: method.controller.last_report  # type: ignore
    with pytest.raises(RuntimeError):  # no check yet: nothing to confirm, but the size is set
        method.probe()
    assert seen == [10 * CONFIRM_EVIDENCE]


def test_among_many_classes_the_confirmation_tolerates_one_more_stray_miss() -> None:
    many = 40
    labels = torch.arange(many).repeat_interleave(48)
    fresh = torch.arange(many).repeat_interleave(CONFIRM_EVIDENCE)

    def confirmed(misses: int) -> bool:
        control = ClassController(many, ControlSettings())
        logits = torch.full((len(labels), many), -20.0)
        logits[torch.arange(len(labels)), labels] = 20.0
        control.observe(50, labels, torch.rand(len(labels), *PIXELS), logits)
        assert control.observe(100, labels, torch.rand(len(labels), *PIXELS), logits).targets_met
        fresh_logits = torch.full((len(fresh), many), -20.0)
        right = torch.ones(len(fresh), dtype=torch.bool)
        right[(fresh == 7).nonzero()[:misses]] = False
        fresh_logits[torch.arange(len(fresh)), fresh] = torch.where(right, 20.0, -20.0)
        report = control.confirm(fresh, torch.rand(len(fresh), *PIXELS), fresh_logits)
        return report.finished

    assert many > MANY_CLASSES
    assert confirmed(2)  # 2 misses in 48 + 96: one more than 1% of them, tolerated here
    assert not confirmed(3)
