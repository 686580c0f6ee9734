"""A step computes only what it uses (issue 17): terms of weight 0 are skipped, and skipping
them changes no bit of the trained weights."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from models import methods as methods_module
from models.classifier import LoadedClassifier
from models.contracts.inversion import InversionConfig, LossWeights
from models.losses import (
    cosine_similarity_loss,
    cross_entropy_loss,
    mode_seeking_loss,
    orthogonality_loss,
    total_variation_loss,
)
from models.methods import GeneratorMethod, InversionMethod, build_method
from tests import factories

ZERO = LossWeights(kl=1.0, ce=0.0, cosine=0.0, orthogonality=0.0, tv=0.0, mode_seeking=0.0)
SKIPPED = ("cross_entropy_loss", "total_variation_loss", "mode_seeking_loss",
           "cosine_similarity_loss", "orthogonality_loss")  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """Bit-identical comparisons on one thread (and fast on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def classifier() -> LoadedClassifier:
    """Untrained: what a step computes does not depend on the weights."""
    names = [str(k) for k in range(10)]
    return LoadedClassifier(factories.random_model("paper-cnn"), (1, 28, 28), names)


def _config(recipe: str) -> InversionConfig:
    spread = 1.0 if recipe == "adaptive" else 0.0
    return InversionConfig.tiny(
        "c3", recipe=recipe, loss_weights=ZERO.model_copy(update={"spread": spread})
    )


def _forced_zero_terms(original: Any) -> Any:
    """`_loss_terms` that also computes every weight-0 term and adds it times 0: the run
    the skipping must match bit for bit."""

    def loss_terms(
        self: InversionMethod,
        images: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor,
        latents: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total, named = original(self, images, target, labels, latents)
        logits, features = self.classifier.forward_with_features(images)
        zero = (
            cross_entropy_loss(logits, labels)
            + total_variation_loss(images)
            + cosine_similarity_loss(features, labels)
            + orthogonality_loss(features, labels)
        )
        if latents is not None:
            zero = zero + mode_seeking_loss(images, latents, labels)
        return total + 0.0 * zero, named

    return loss_terms


def _trained_weights(classifier: LoadedClassifier, config: InversionConfig) -> dict[str, Any]:
    method = build_method(classifier, config, "cpu")
    assert isinstance(method, GeneratorMethod)
    for _ in range(6):  # the tiny config probes every 4 steps: the controller adapts once
        method.step(method.draw_labels())
    return {k: v.clone() for k, v in method.generator.state_dict().items()}


@pytest.mark.parametrize("recipe", ["adaptive", "paper"])
def test_weight_zero_terms_are_not_computed(
    recipe: str, classifier: LoadedClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> torch.Tensor:
        raise AssertionError("a term of weight 0 was computed")

    for name in SKIPPED:
        monkeypatch.setattr(methods_module, name, refuse)
    real_diversity = methods_module.per_group_diversity

    def diversity(features: Any, images: Any, latents: Any, *args: Any, **kw: Any) -> Any:
        assert features is None, "feature terms of weight 0 were computed"
        assert images is None, "mode seeking of weight 0 was computed"
        assert latents is None
        return real_diversity(features, images, latents, *args, **kw)

    monkeypatch.setattr(methods_module, "per_group_diversity", diversity)
    method = build_method(classifier, _config(recipe), "cpu")
    named = method.step(method.draw_labels())
    assert set(named) <= {"kl", "spread", "total"}


@pytest.mark.parametrize("recipe", ["adaptive", "paper"])
def test_skipping_weight_zero_terms_gives_bit_identical_weights(
    recipe: str, classifier: LoadedClassifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(recipe)
    skipped = _trained_weights(classifier, config)
    original = InversionMethod._loss_terms
    monkeypatch.setattr(InversionMethod, "_loss_terms", _forced_zero_terms(original))
    computed = _trained_weights(classifier, config)
    assert skipped.keys() == computed.keys()
    assert all(torch.equal(skipped[k], computed[k]) for k in skipped)
    # and the weights did move: the comparison is not between two untrained generators
    fresh = build_method(classifier, config, "cpu")
    assert isinstance(fresh, GeneratorMethod)
    assert not torch.equal(fresh.generator.fc.weight, skipped["fc.weight"])
