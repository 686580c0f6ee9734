"""Contract of every registered inversion method, checkpoint-resume, generator shapes."""

from __future__ import annotations

import gc
import os
import tempfile
import warnings

import pytest
import torch
from pydantic import ValidationError

from models.audit import AuditHooks, Stopped, audit
from models.classifier import LoadedClassifier
from models.contracts.artifacts import Phase, Progress
from models.contracts.inversion import (
    METHOD_DEFAULTS,
    RECIPE_DEFAULTS,
    InversionConfig,
    InversionParams,
    LossWeights,
)
from models.generator import ConditionedGenerator
from models.methods import METHODS, build_method, build_method_from_state, get_method
from models.training import StepReport, load_state, save_state, train
from tests import factories


def _weights(clf: LoadedClassifier) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in clf.state_dict().items()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_contract(name: str, classifier: LoadedClassifier) -> None:
    before = _weights(classifier)
    method = build_method(classifier, InversionConfig.tiny(name), "cpu")
    assert method.name == name
    assert get_method(name) is type(method)
    assert not any(p.requires_grad for p in classifier.parameters())
    assert not classifier.training

    for _ in range(3):
        losses = method.step(method.draw_labels())
        assert {"kl", "total"} <= set(losses)
        # every term with a non-zero weight is reported; the others are not even computed
        weighted = {k for k, v in method.weights.model_dump().items() if v and k != "mode_seeking"}
        assert weighted <= set(losses)
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses

    labels = torch.tensor([0, 3, 3, 9, 1])
    images = method.sample(labels, seed=7)
    assert images.shape == (5, 1, 28, 28)
    assert images.dtype == torch.float32
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert not images.requires_grad
    assert torch.equal(images, method.sample(labels, seed=7))  # seeded sampling is repeatable
    assert method.sample(labels, dropout=True, seed=1).shape == images.shape

    state = load_state(save_state(method.state_dict()))
    clone = build_method_from_state(classifier, state, "cpu")
    assert clone.step_count == method.step_count == 3
    assert torch.equal(clone.sample(labels, seed=3), method.sample(labels, seed=3))
    assert torch.equal(clone.draw_labels(), method.draw_labels())
    assert clone.step(labels)["total"] == pytest.approx(method.step(labels)["total"], abs=1e-6)

    after = _weights(classifier)
    assert all(torch.equal(before[k], after[k]) for k in before), "classifier weights changed"
    assert not classifier.training


@pytest.mark.parametrize(
    ("name", "recipe"), [("c3", "adaptive"), ("c3", "paper"), ("c3", "fade"), ("pixel", "fade")]
)
def test_resume_from_checkpoint_matches_uninterrupted_run(
    name: str, recipe: str, classifier: LoadedClassifier
) -> None:
    # adaptive: the tiny config probes every 4 steps, so the resumed part crosses a check
    config = InversionConfig.tiny(name, steps=6, recipe=recipe, confidence_threshold=0.999999)
    labels = torch.arange(10)

    straight = build_method(classifier, config, "cpu")
    train(straight, steps=6)
    expected = straight.sample(labels)  # continues the method's own sampling RNG

    checkpoints: dict[int, bytes] = {}
    first = build_method(classifier, config, "cpu")
    stop_after = iter([False, False, False, True])
    result = train(
        first,
        steps=6,
        should_stop=lambda: next(stop_after),
        checkpoint_every=2,
        on_checkpoint=lambda state, step: checkpoints.__setitem__(step, state),
    )
    assert result.stopped_early
    assert result.step == 3
    assert sorted(checkpoints) == [2, 3]

    resumed = build_method_from_state(classifier, load_state(checkpoints[3]), "cpu")
    final = train(resumed, steps=6)
    assert final.step == 6
    assert not final.stopped_early
    assert torch.equal(resumed.sample(labels), expected)


def test_train_reports_progress_and_checkpoints(classifier: LoadedClassifier) -> None:
    method = build_method(classifier, InversionConfig.tiny("c3", steps=5), "cpu")
    reports: list[StepReport] = []
    saved: list[int] = []
    result = train(
        method,
        steps=5,
        classes=[2, 4],
        on_progress=reports.append,
        progress_every_s=0.0,
        checkpoint_every=2,
        on_checkpoint=lambda _state, step: saved.append(step),
    )
    assert [p.step for p in reports] == [1, 2, 3, 4, 5]
    assert all(p.total_steps == 5 and 0.0 <= p.confident_share <= 1.0 for p in reports)
    assert saved == [2, 4, 5]
    assert result.step == 5
    assert not result.stopped_early
    assert set(method.draw_labels([2, 4]).tolist()) == {2, 4}
    assert train(method, steps=5).step == 5  # already done: no more steps


def test_config_json_round_trip_and_strictness() -> None:
    config = InversionConfig(method="soft", loss_weights=LossWeights(cosine=0.3), betas=(0.9, 0.99))
    assert InversionConfig.model_validate_json(config.model_dump_json()) == config
    assert InversionConfig.model_validate({}) == InversionConfig()
    with pytest.raises(ValidationError, match="stepz"):
        InversionConfig.model_validate({"stepz": 3})
    with pytest.raises(ValidationError, match="cosin"):
        InversionConfig.model_validate({"loss_weights": {"cosin": 1.0}})
    with pytest.raises(ValidationError, match="steps"):
        InversionConfig.model_validate({"steps": -1})
    with pytest.raises(ValidationError, match="method"):
        InversionConfig.model_validate({"method": "nope"})
    with pytest.raises(ValidationError, match="diversity_fade"):
        InversionConfig(diversity_fade=(0.6, 0.4))


@pytest.mark.parametrize("method", sorted(METHOD_DEFAULTS))
def test_each_method_fills_its_own_defaults(method: str) -> None:
    defaults = METHOD_DEFAULTS[method]
    # c3's fixed recipes keep the method's defaults; its default recipe has its own (below)
    config = InversionConfig.model_validate({"method": method, "recipe": "paper"})
    assert (config.steps, config.batch_size) == (defaults.steps, defaults.batch_size)
    assert config.loss_weights == defaults.loss_weights
    assert config.lr == 1e-3


def test_recipes_fill_their_budget_rate_and_weights() -> None:
    adaptive = InversionConfig()
    assert adaptive.recipe == "adaptive"
    assert adaptive.adaptive
    expected = RECIPE_DEFAULTS["adaptive"]
    assert (adaptive.steps, adaptive.lr) == (expected.steps, expected.lr)
    assert adaptive.dropout == expected.dropout < 0.5  # the paper's 0.5 in paper/fade and soft
    assert adaptive.loss_weights == expected.loss_weights
    assert adaptive.loss_weights.spread > 0
    given = InversionConfig.model_validate({"loss_weights": {"cosine": 0.5}, "steps": 900})
    assert given.loss_weights.spread == expected.loss_weights.spread  # over the recipe preset
    assert (given.loss_weights.cosine, given.steps) == (0.5, 900)
    fade = InversionConfig(recipe="fade")
    assert (fade.steps, fade.lr, fade.loss_weights.spread, fade.dropout) == (500, 1e-3, 0.0, 0.5)
    soft = InversionConfig(method="soft")  # soft keeps its fixed recipe
    assert (soft.steps, soft.lr, soft.adaptive, soft.dropout) == (500, 1e-3, False, 0.5)
    assert InversionConfig(dropout=0.4).dropout == 0.4
    with pytest.raises(ValidationError, match="recipe"):
        InversionConfig.model_validate({"recipe": "magic"})
    with pytest.raises(ValidationError, match="diversity_floor"):
        InversionConfig.model_validate({"diversity_floor": 2.0})
    assert InversionConfig.model_validate(adaptive.model_dump(mode="json")) == adaptive


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("c3", {"steps": 40, "batch_size": 32}, {"steps": 40, "batch_size": 32}),
        ("pixel", {"steps": 40, "batch_size": 32}, {"steps": 40, "batch_size": 32}),
        ("pixel", {}, {"steps": 200, "batch_size": 250}),
        ("soft", {"seed": 3}, {"seed": 3, "steps": 500}),
    ],
)
def test_job_parameters_become_the_engine_config(
    method: str, params: dict[str, int], expected: dict[str, int]
) -> None:
    config = InversionParams.model_validate(params).config(method)  # type: ignore[arg-type]
    assert config.method == method
    for name, value in expected.items():
        assert getattr(config, name) == value


def test_partial_loss_weights_keep_the_method_preset() -> None:
    stored = InversionParams(loss_weights=LossWeights(cosine=0.5)).model_dump_json()
    params = InversionParams.model_validate_json(stored)  # as the job record keeps it
    assert params.loss_weights is not None
    assert params.loss_weights.model_fields_set == {"cosine"}
    config = params.config("soft")
    soft = METHOD_DEFAULTS["soft"].loss_weights
    assert config.loss_weights == soft.model_copy(update={"cosine": 0.5})
    assert config.loss_weights.ce == 1.0  # soft's preset, not LossWeights' own default


def test_registered_methods_are_the_declared_ones() -> None:
    assert sorted(METHODS) == sorted(METHOD_DEFAULTS)


def test_state_for_another_config_is_refused(classifier: LoadedClassifier) -> None:
    state = build_method(classifier, InversionConfig.tiny("c3"), "cpu").state_dict()
    other = build_method(classifier, InversionConfig.tiny("c3", seed=5), "cpu")
    with pytest.raises(ValueError, match="another config"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="method"):
        build_method(classifier, InversionConfig.tiny("soft"), "cpu").load_state_dict(state)


def test_soft_conditioning_has_argmax_at_label(classifier: LoadedClassifier) -> None:
    method = build_method(classifier, InversionConfig.tiny("soft"), "cpu")
    labels = torch.arange(10).repeat(5)
    condition = method.condition(labels, torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    assert torch.equal(condition.argmax(1), labels)
    assert torch.allclose(condition.sum(1), torch.ones(50))


@pytest.mark.parametrize(
    "shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64), (1, 20, 36), (3, 17, 23), (1, 8, 8)]
)
def test_generator_adapts_to_any_input_shape(shape: tuple[int, int, int]) -> None:
    generator = ConditionedGenerator(shape, num_classes=7, latent_dim=8, width=4)
    labels = torch.tensor([0, 6, 3])
    z = torch.randn(3, 8)
    out = generator(z, torch.nn.functional.one_hot(labels, 7).float(), labels, dropout=True)
    assert out.shape == (3, *shape)
    assert out.min() >= 0
    assert out.max() <= 1


def test_generator_eval_mode_folds_batchnorm_exactly() -> None:
    generator = ConditionedGenerator((3, 20, 36), num_classes=4, latent_dim=8, width=4)
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    condition = torch.nn.functional.one_hot(labels, 4).float()
    with torch.no_grad():
        for _ in range(3):  # non-trivial running statistics
            generator(torch.randn(8, 8), condition, labels, dropout=True)
        generator.eval()
        z = torch.randn(8, 8)
        folded = generator(z, condition, labels)
        for module in generator.modules():  # the unfolded path, BatchNorm in eval mode
            module.training = module is generator
        unfolded = generator(z, condition, labels)
    assert torch.allclose(folded, unfolded, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 20, 36)])
def test_methods_run_on_rgb_and_non_square_classifiers(shape: tuple[int, int, int]) -> None:
    classifier = LoadedClassifier(factories.random_model("paper-cnn", shape), shape, "abcdefghij")
    for name in sorted(METHODS):
        method = build_method(classifier, InversionConfig.tiny(name, steps=2), "cpu")
        train(method, steps=2)
        assert method.sample(torch.tensor([1, 2]), seed=0).shape == (2, *shape)


def test_classifier_stays_frozen_when_asked_to_train(classifier: LoadedClassifier) -> None:
    classifier.train()
    assert not classifier.training
    assert not classifier.model.training


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_run_stopped_while_sampling_leaves_no_archive_open(
    classifier: LoadedClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel between classes ends the audit at once: the half-written samples.npz is closed
    and removed with its folder (no file handle for the garbage collector to complain about)."""
    folders: list[str] = []
    original = tempfile.TemporaryDirectory

    def recorded(*args: object, **kwargs: object) -> tempfile.TemporaryDirectory[str]:
        folder = original(*args, **kwargs)  # type: ignore[call-overload]
        folders.append(folder.name)
        return folder

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recorded)
    sampled: list[int] = []

    def stop_after_a_class(progress: Progress) -> None:
        if progress.phase == Phase.SAMPLING:
            sampled.append(progress.step)

    hooks = AuditHooks(
        on_progress=stop_after_a_class, should_stop=lambda: len(sampled) > 0, progress_every_s=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an archive left open warns when collected
        with pytest.raises(Stopped):
            audit(classifier, InversionConfig.tiny(), samples_per_class=3, hooks=hooks)
        gc.collect()
    assert folders
    assert not any(os.path.exists(f) for f in folders)
