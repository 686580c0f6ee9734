"""Inversion methods behind one interface, registered by name.

- `c3`: Confidently Classified Counterfeits (Suhail & Sethi, arXiv:2503.20187): a generator
  conditioned on one-hot labels (vector + hot matrix), trained with
  KL(one-hot ‖ p) + λ_cos · cosine + λ_orth · orthogonality.
- `soft`: the predecessor (arXiv:2407.18002): the same generator conditioned on random soft
  vectors whose argmax is the label, trained with KL(c ‖ p) + CE + λ_cos · cosine.
- `pixel`: direct pixel optimisation from noise, per sample ("fooling images", Nguyen et al.,
  CVPR 2015): Adam on sigmoid-parametrised pixels, ascending log p_y. No generator: every
  sample costs `steps` forward/backward passes.

The base class freezes the classifier; every method owns three seeded `torch.Generator`s
(labels, training noise, sampling noise) that are part of its state, so a run resumed from a
checkpoint continues exactly as an uninterrupted one (on the CPU, same thread count).

Recipes (`config.recipe`) of `c3`: "adaptive" (the default) runs a closed loop per class
(`models.control`): probes, per-class diversity levels and pulls, and a stop when the targets
hold; "paper" is the published fixed recipe (constant weights, fixed steps); "fade" the
previous default (paper weights fading out late in a fixed run). `soft` keeps its fixed
recipe ("adaptive" means "fade" for it: it matches soft targets and never reaches p ≥ 0.99).
Loss terms whose weight is 0 are not computed (same results, less time).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, TypeVar

import torch
from torch.nn import functional as F

from models.classifier import LoadedClassifier
from models.contracts.artifacts import CONFIDENT
from models.contracts.cost import DEFAULT_WIDTH, classifier_sized_width
from models.contracts.inversion import METHODS as METHOD_NAMES
from models.contracts.inversion import InversionConfig
from models.control import (
    FOCUS_SLACK,
    ClassController,
    ControlSettings,
    ProbeReport,
    probe_seed,
    quantise,
)
from models.device import to_channels_last
from models.feature_prior import FeaturePrior
from models.generator import ConditionedGenerator
from models.losses import (
    cosine_similarity_loss,
    cross_entropy_loss,
    kl_divergence_loss,
    mode_seeking_loss,
    orthogonality_loss,
    per_group_diversity,
    total_variation_loss,
)

__all__ = [
    "METHODS",
    "C3Method",
    "InversionMethod",
    "PixelMethod",
    "SoftMethod",
    "build_method",
    "build_method_from_state",
    "get_method",
    "list_methods",
    "register_method",
]

logger = logging.getLogger(__name__)

STATE_VERSION = 3  # 2: the config of models.contracts; 3: the recipe and the controller

M = TypeVar("M", bound="type[InversionMethod]")
METHODS: dict[str, type[InversionMethod]] = {}


def register_method(cls: M) -> M:
    """Class decorator: register an `InversionMethod` subclass under its `name`, one of the
    names the contracts declare (so the API, which cannot import this module, knows them)."""
    name = cls.name
    if name not in METHOD_NAMES:
        raise ValueError(f"method {name!r} is not declared in models.contracts.inversion")
    if name in METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    METHODS[name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type[InversionMethod]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown method {name!r}: registered are {', '.join(list_methods())}"
        ) from None


def build_method(
    classifier: LoadedClassifier,
    config: InversionConfig,
    device: torch.device | str | None = None,
) -> InversionMethod:
    """The method `config.method` for `classifier`, on `device` (default: the classifier's)."""
    return get_method(config.method)(classifier, config, device)


def build_method_from_state(
    classifier: LoadedClassifier,
    state: dict[str, Any],
    device: torch.device | str | None = None,
) -> InversionMethod:
    """Rebuild a method from `state_dict()` output (its config travels inside)."""
    config = dict(state["config"])
    if state.get("version") == 2 and "recipe" not in config:
        config["recipe"] = "fade"  # version-2 checkpoints ran the fixed recipe of their day
        state = {**state, "version": STATE_VERSION, "config": config}
    method = build_method(classifier, InversionConfig.model_validate(config), device)
    method.load_state_dict(state)
    return method


class InversionMethod(abc.ABC):
    """Turns a frozen classifier into images it assigns to wanted labels.

    `step(labels)` makes one optimisation step and returns every named loss term plus
    "total"; `sample(labels)` returns [0, 1] images (n, C, H, W); `state_dict()` /
    `load_state_dict()` carry weights, optimizer, RNGs, config and step.
    """

    name: ClassVar[str]
    needs_training: ClassVar[bool] = True  # False: `sample` does all the work (pixel)
    supports_adaptive: ClassVar[bool] = False  # True: recipe "adaptive" runs the controller

    def __init__(
        self,
        classifier: LoadedClassifier,
        config: InversionConfig,
        device: torch.device | str | None = None,
    ) -> None:
        if config.method != self.name:
            raise ValueError(f"config is for method {config.method!r}, not {self.name!r}")
        self.device = torch.device(device) if device is not None else classifier.device
        classifier.eval()
        classifier.requires_grad_(False)
        self.classifier = classifier.to(self.device)
        self.config = config
        self.weights = config.loss_weights
        self.num_classes = classifier.num_classes
        self.input_shape = classifier.input_shape
        self.controller: ClassController | None = None
        if config.adaptive and self.supports_adaptive:
            self.controller = ClassController(self.num_classes, ControlSettings.from_config(config))
        self.step_count = 0
        self.trained_seconds = 0.0  # wall time spent in `step`, over every resumed run
        self.last_confident_share = float("nan")
        self.last_min_confidence = float("nan")
        self.trained_classes = torch.arange(self.num_classes)  # the pool of the last batch
        self.prior: FeaturePrior | None = None  # detector-aware c3: see `use_prior`
        self.label_rng = torch.Generator().manual_seed(config.seed)
        self.train_rng = torch.Generator(device=self.device).manual_seed(config.seed + 1)
        self.sample_rng = torch.Generator(device=self.device).manual_seed(config.seed + 2)

    def use_prior(self, prior: FeaturePrior) -> None:
        """Detector-aware c3: the real feature statistics its prior terms pull towards. Not
        part of the state: a resumed run rebuilds it from the same reference half."""
        self.prior = prior

    def _prior_weights(self) -> dict[str, float]:
        """The prior terms this run computes: weighted, and possible for this prior."""
        if self.prior is None:
            return {}
        w = self.weights.model_dump()
        return {term: w[term] for term in self.prior.terms if w[term] != 0.0}

    def _with_prior(
        self,
        total: torch.Tensor,
        named: dict[str, float],
        features: torch.Tensor,
        labels: torch.Tensor,
        batch_norm_losses: list[torch.Tensor],
        weights: dict[str, float],
        confidence: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """`total` plus the weighted prior terms (detector-aware c3); `named` gets each term's
        mean over the batch (how far outside the counterfeits are), the total only the part of
        each sample that its confidence p_y (n,) above the threshold lets through."""
        prior = self.prior
        if prior is None or not weights:
            return total, named
        # a sample is pulled only by its margin above the confidence threshold τ: full weight at
        # p_y = 1, none at τ or below, so the prior never costs a sample its confidence
        tau = self.config.confidence_threshold
        gate = ((confidence.detach() - tau) / (1.0 - tau)).clamp(0.0, 1.0)
        if self.controller is not None:  # each class's prior gain (`ClassController._adapt_prior`)
            gate = gate * self.controller.prior_gain.to(gate.device, gate.dtype)[labels]
        per_sample: dict[str, Callable[[], torch.Tensor]] = {
            "mahalanobis": lambda: prior.mahalanobis(features, labels),
            "knn": lambda: prior.knn(features),
            "batch_stats": lambda: torch.stack(batch_norm_losses).mean().expand(len(gate)),
        }
        for term, weight in weights.items():
            value = per_sample[term]()  # (n,)
            total = total + weight * (gate * value).mean()
            named[term] = float(value.detach().mean())
        named["total"] = float(total.detach())
        return total, named

    # -- the closed loop (recipe "adaptive") -------------------------------------------------
    @property
    def finished(self) -> bool:
        """The controller saw every target met on its probes: training may stop."""
        return self.controller is not None and self.controller.finished

    @property
    def last_probe(self) -> ProbeReport | None:
        return None if self.controller is None else self.controller.last_report

    # -- labels -------------------------------------------------------------------------
    def draw_labels(self, classes: Sequence[int] | None = None) -> torch.Tensor:
        """A training batch of labels, balanced over `classes` (default: all), seeded.

        Each class appears ⌊N/K⌋ or ⌈N/K⌉ times, so the per-class diversity terms always
        have pairs to work on.
        """
        pool = torch.arange(self.num_classes) if classes is None else torch.as_tensor(classes)
        pool = pool.long().flatten()
        if pool.numel() == 0:
            raise ValueError("classes must not be empty")
        if int(pool.min()) < 0 or int(pool.max()) >= self.num_classes:
            raise ValueError(f"classes must be in 0..{self.num_classes - 1}")
        self.trained_classes = torch.unique(pool)  # sorted, once each: what probes cover
        n = self.config.batch_size
        if self.controller is not None:  # weighted towards lagging classes, ≥ 2 per class
            return self.controller.draw_labels(self.trained_classes, n, self.label_rng).to(
                self.device
            )
        repeats = -(-n // pool.numel())
        order = torch.cat(
            [pool[torch.randperm(pool.numel(), generator=self.label_rng)] for _ in range(repeats)]
        )[:n]
        return order[torch.randperm(n, generator=self.label_rng)].to(self.device)

    # -- the interface --------------------------------------------------------------------
    @abc.abstractmethod
    def step(self, labels: torch.Tensor) -> dict[str, float]:
        """One optimisation step on a batch of labels (n,); returns named losses and "total"."""

    @abc.abstractmethod
    def sample(
        self, labels: torch.Tensor, *, dropout: bool = False, seed: int | None = None
    ) -> torch.Tensor:
        """Images (n, C, H, W) in [0, 1] meant to be classified as `labels` (n,).

        `seed` draws from a fresh generator (reproducible); None continues the method's own
        sampling RNG (part of the state). `dropout` keeps generator dropout on for variety.
        """

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "method": self.name,
            "config": self.config.model_dump(mode="json"),
            "step": self.step_count,
            "trained_seconds": self.trained_seconds,
            "rng": {
                "label": self.label_rng.get_state(),
                "train": self.train_rng.get_state(),
                "sample": self.sample_rng.get_state(),
            },
            "modules": self._modules_state(),
            "control": None if self.controller is None else self.controller.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {state.get('version')!r}")
        if state.get("method") != self.name:
            raise ValueError(f"state is for method {state.get('method')!r}, not {self.name!r}")
        if InversionConfig.model_validate(state["config"]) != self.config:
            raise ValueError("state was saved with another config: rebuild the method from it")
        self.step_count = int(state["step"])
        self.trained_seconds = float(state["trained_seconds"])
        self.label_rng.set_state(state["rng"]["label"])
        self.train_rng.set_state(state["rng"]["train"])
        self.sample_rng.set_state(state["rng"]["sample"])
        self._load_modules_state(state["modules"])
        if self.controller is not None:
            if state.get("control") is None:
                raise ValueError("the state has no controller state for the adaptive recipe")
            self.controller.load_state_dict(state["control"])

    @abc.abstractmethod
    def _modules_state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _load_modules_state(self, state: dict[str, Any]) -> None: ...

    # -- shared helpers -------------------------------------------------------------------
    def diversity_scale(self) -> float:
        """Factor on the diversity weights at the current step (`config.diversity_fade`).

        Recipe "fade" (and soft's "adaptive"): 1 until the first fraction of `config.steps`,
        then linearly down to 0 at the second: the last steps then refine confidence alone.
        With constant weights (recipe "paper") the diversity terms keep pulling a tail of
        samples below p = 0.99 (measured in bench/inversion.py). The adaptive recipe scales
        per class instead (`models.control`), so this is 1 there.
        """
        if self.config.recipe == "paper" or self.controller is not None:
            return 1.0
        start, end = self.config.diversity_fade
        if start >= 1.0 or self.config.steps == 0:
            return 1.0
        progress = self.step_count / self.config.steps
        if progress <= start:
            return 1.0
        if progress >= end:
            return 0.0
        return (end - progress) / (end - start)

    def _sampling_rng(self, seed: int | None) -> torch.Generator:
        if seed is None:
            return self.sample_rng
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def _check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels).long().flatten().to(self.device)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}")
        return labels

    def _loss_terms(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor,
        latents: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted total and every computed term for images (n, C, H, W) aimed at target (n, K).

        `latents` (n, d): the generator's z, for the mode-seeking term (left out without
        them). Terms whose effective weight is 0 are not computed and not reported: the
        total and its gradients are bit-identical to adding 0 · term.
        """
        prior = self._prior_weights()
        watch: AbstractContextManager[list[torch.Tensor]] = (
            self.prior.batch_stats("batch_stats" in prior) if self.prior else nullcontext([])
        )
        with watch as batch_norm_losses:
            logits, features = self.classifier.forward_with_features(images)
        with torch.no_grad():
            p_target = F.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)  # (n,)
            self.last_confident_share = (p_target >= CONFIDENT).float().mean().item()
            self.last_min_confidence = p_target.min().item() if p_target.numel() else 1.0
        if self.controller is not None:
            self.controller.record(labels, p_target)
            total, named = self._adaptive_loss_terms(
                images, target, labels, latents, logits, features
            )
        else:
            total, named = self._plain_loss_terms(images, target, labels, latents, logits, features)
        return self._with_prior(total, named, features, labels, batch_norm_losses, prior, p_target)

    def _plain_loss_terms(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor,
        latents: torch.Tensor | None,
        logits: torch.Tensor,
        features: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The fixed recipes' loss: every term at its (fading) weight."""
        groups = labels if self.config.per_class_diversity else None
        w = self.weights
        fade = self.diversity_scale()
        weighted: list[tuple[str, float, Callable[[], torch.Tensor]]] = [
            ("kl", w.kl, lambda: kl_divergence_loss(target, logits)),
            ("ce", w.ce, lambda: cross_entropy_loss(logits, labels)),
            ("cosine", fade * w.cosine, lambda: cosine_similarity_loss(features, groups)),
            (
                "orthogonality",
                fade * w.orthogonality,
                lambda: orthogonality_loss(features, groups),
            ),
            ("tv", w.tv, lambda: total_variation_loss(images)),
        ]
        if latents is not None:
            weighted.append(
                (
                    "mode_seeking",
                    fade * w.mode_seeking,
                    lambda: mode_seeking_loss(images, latents, groups),
                )
            )
        if w.spread != 0.0:

            def spread_shortfall() -> torch.Tensor:
                spread_groups = labels if groups is not None else torch.zeros_like(labels)
                terms = per_group_diversity(
                    None, None, None, spread_groups, self.num_classes, spread_images=images
                )
                present = terms["pairs"] > 0
                floor = self.config.diversity_floor
                return (F.relu(floor - terms["spread"]) * present).sum() / present.sum().clamp_min(
                    1
                )

            weighted.append(("spread", fade * w.spread, spread_shortfall))
        total = logits.new_zeros(())
        named: dict[str, float] = {}
        first = True
        for key, weight, term in weighted:
            if weight == 0.0:
                continue
            value = term()
            total = weight * value if first else total + weight * value
            first = False
            named[key] = float(value.detach())
        named["total"] = float(total.detach())
        return total, named

    def _adaptive_loss_terms(
        self,
        images: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor,
        latents: torch.Tensor | None,
        logits: torch.Tensor,
        features: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The adaptive recipe's loss: per-class KL pull and per-class diversity levels.

        L = Σ_i w_i KL_i / Σ_i w_i,  w_i = a_{y_i} / (1 − p_{y_i} + 0.01)  (detached)
            + (1/G) Σ_k [D_k (λ_cos cos_k + λ_orth orth_k + λ_ms ms_k)
                         + λ_spread · max(0, τ_k − spread_k)]          (classes k with pairs)
        a_k is the pull, D_k the feature-diversity level and τ_k the pixel-spread target of
        class k (`models.control`); spread_k is the mean pairwise RMS pixel distance within
        the class. The weight 1 / (1 − p + 0.01) keeps the gradient of −log p_y from
        vanishing as p_y → 1 (it is that of a margin until p_y ≈ 0.99): the tail of samples
        just short of confident is what the targets count.
        """
        if self.controller is None:
            raise RuntimeError("the adaptive loss needs the controller")
        w = self.weights
        pull = self.controller.pull.to(device=logits.device, dtype=logits.dtype)  # (K,)
        level = self.controller.diversity_weight.to(device=logits.device, dtype=logits.dtype)
        log_p = F.log_softmax(logits, dim=1)  # (n, K)
        per_sample = (torch.xlogy(target, target) - target * log_p).sum(dim=1)  # (n,)
        sample_weight = pull[labels]  # (n,)
        with torch.no_grad():  # focus on the samples still short of confident
            p_y = log_p.gather(1, labels[:, None]).squeeze(1).exp()  # (n,)
            sample_weight = sample_weight / (1.0 - p_y + FOCUS_SLACK)
        kl = (sample_weight * per_sample).sum() / sample_weight.sum()
        total = w.kl * kl
        named: dict[str, float] = {"kl": float(kl.detach())}
        if w.ce != 0.0:
            ce = cross_entropy_loss(logits, labels)
            total = total + w.ce * ce
            named["ce"] = float(ce.detach())
        if w.tv != 0.0:
            tv = total_variation_loss(images)
            total = total + w.tv * tv
            named["tv"] = float(tv.detach())
        active = bool((level[labels] > 0).any())
        feature_terms = active and (w.cosine != 0.0 or w.orthogonality != 0.0)
        seeking = active and w.mode_seeking != 0.0 and latents is not None
        spread = w.spread != 0.0
        if feature_terms or seeking or spread:
            terms = per_group_diversity(
                features if feature_terms else None,
                images if seeking else None,
                latents if seeking else None,
                labels,
                self.num_classes,
                spread_images=images if spread else None,
            )
            has_pairs = terms["pairs"] > 0  # (K,)
            groups = has_pairs.sum().clamp_min(1)
            per_class = logits.new_zeros(self.num_classes)
            for key, weight in (
                ("cosine", w.cosine),
                ("orthogonality", w.orthogonality),
                ("mode_seeking", w.mode_seeking),
            ):
                if key in terms and weight != 0.0:
                    per_class = per_class + weight * terms[key]
                    named[key] = float((terms[key] * has_pairs).sum().detach() / groups)
            per_class = level * per_class
            if spread:
                target_spread = self.controller.spread_target.to(logits.device, logits.dtype)
                shortfall = F.relu(target_spread - terms["spread"])  # (K,)
                per_class = per_class + w.spread * shortfall
                named["spread"] = float((terms["spread"] * has_pairs).sum().detach() / groups)
            total = total + (per_class * has_pairs).sum() / groups
        named["total"] = float(total.detach())
        return total, named


def generator_width(classifier: LoadedClassifier, config: InversionConfig) -> int:
    """The generator's 28×28 width when the config leaves it open: sized to the classifier's
    FLOPs under the adaptive recipe, the paper's generator (DEFAULT_WIDTH) otherwise."""
    if not config.adaptive:
        return DEFAULT_WIDTH
    return classifier_sized_width(
        classifier.input_shape,
        classifier.num_classes,
        config.latent_dim,
        classifier.forward_flops(),
    )


class GeneratorMethod(InversionMethod):
    """A conditioned generator trained against the frozen classifier (c3, soft)."""

    def __init__(
        self,
        classifier: LoadedClassifier,
        config: InversionConfig,
        device: torch.device | str | None = None,
    ) -> None:
        if config.width is None:  # resolved once, so the state's config names the width
            config = config.model_copy(update={"width": generator_width(classifier, config)})
        super().__init__(classifier, config, device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = ConditionedGenerator(
                self.input_shape,
                self.num_classes,
                latent_dim=config.latent_dim,
                width=config.width or DEFAULT_WIDTH,
                dropout=config.dropout,
            ).to(self.device)
            to_channels_last(self.generator)
        self.optimizer = torch.optim.Adam(
            self.generator.parameters(), lr=config.lr, betas=config.betas
        )

    @abc.abstractmethod
    def condition(self, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Conditioning vectors (n, K) for labels (n,), whose argmax is the label."""

    def step(self, labels: torch.Tensor) -> dict[str, float]:
        labels = self._check_labels(labels)
        self.generator.train()
        z = torch.randn(
            len(labels), self.config.latent_dim, generator=self.train_rng, device=self.device
        )
        target = self.condition(labels, self.train_rng)  # (n, K)
        images = self.generator(z, target, labels, dropout=True, rng=self.train_rng)  # (n, C, H, W)
        total, named = self._loss_terms(images, target, labels, z)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.step_count += 1
        if self.controller is not None and self.controller.due(self.step_count):
            self.probe()
        return named

    def probe(self) -> ProbeReport:
        """Sample a fresh seeded probe batch per trained class as it is delivered (eval mode,
        dropout off, 8-bit), score it and let the controller adapt (`models.control`)."""
        if self.controller is None:
            raise RuntimeError("probes belong to the adaptive recipe")
        pool = self.trained_classes
        per_class = self.controller.settings.probes_for(len(pool))
        labels = pool.repeat_interleave(per_class).to(self.device)  # (k · per_class,)
        seed = probe_seed(self.config.seed, self.step_count)
        images = quantise(self.sample(labels, seed=seed))
        with torch.no_grad():
            logits, features = self.classifier.forward_with_features(images)  # (n, K), (n, d)
        rejected = (
            None
            if self.prior is None
            else self.prior.rejected(features, labels, self._prior_weights())
        )
        report = self.controller.observe(self.step_count, labels, images, logits, rejected)
        if self.controller.candidate:  # confirm on this very generator with fresh probes
            labels = pool.repeat_interleave(self.controller.settings.confirm_for(len(pool)))
            labels = labels.to(self.device)
            images = quantise(self.sample(labels, seed=seed + 1))
            with torch.no_grad():
                logits = self.classifier(images)
            report = self.controller.confirm(labels, images, logits)
        return report

    def sample(
        self, labels: torch.Tensor, *, dropout: bool = False, seed: int | None = None
    ) -> torch.Tensor:
        labels = self._check_labels(labels)
        rng = self._sampling_rng(seed)
        self.generator.eval()
        chunks = []
        with torch.inference_mode():
            for chunk in labels.split(self.config.sample_batch_size):
                z = torch.randn(
                    len(chunk), self.config.latent_dim, generator=rng, device=self.device
                )
                condition = self.condition(chunk, rng)
                chunks.append(self.generator(z, condition, chunk, dropout=dropout, rng=rng))
        if not chunks:
            return torch.empty(0, *self.input_shape, device=self.device)
        return torch.cat(chunks).clone()  # (n, C, H, W), a normal tensor outside inference mode

    def _modules_state(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def _load_modules_state(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])


@register_method
class C3Method(GeneratorMethod):
    """C3: one-hot conditioning c = onehot(y); KL(c ‖ p) = −log p_y + diversity terms."""

    name = "c3"
    supports_adaptive = True

    def condition(self, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return F.one_hot(labels, self.num_classes).float()  # (n, K)


@register_method
class SoftMethod(GeneratorMethod):
    """Soft-vector conditioning: c = softmax(s · ε), ε ~ N(0, I), largest entry moved to y."""

    name = "soft"

    def condition(self, labels: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        n = len(labels)
        noise = torch.randn(n, self.num_classes, generator=rng, device=self.device)
        probs = F.softmax(self.config.soft_logit_scale * noise, dim=1)  # (n, K)
        top = probs.argmax(dim=1)
        rows = torch.arange(n, device=self.device)
        at_label = probs[rows, labels].clone()
        probs[rows, labels] = probs[rows, top]  # swap the largest entry into the label ...
        probs[rows, top] = at_label  # ... and the label's entry to where the largest was
        return probs


@register_method
class PixelMethod(InversionMethod):
    """Direct pixel optimisation from noise: x = sigmoid(θ), θ₀ ~ N(0, I), Adam on −log p_y.

    `step(labels)` advances one working batch (restarted from noise when the labels change),
    which shows the loss curve; `sample(labels)` optimises fresh noise for every sample,
    `batch_size` at a time, `steps` Adam steps each. Each sample's optimisation is independent
    of the others in its batch (Adam normalises per pixel), so batching only amortises Python
    overhead.
    """

    name = "pixel"
    needs_training = False

    def __init__(
        self,
        classifier: LoadedClassifier,
        config: InversionConfig,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(classifier, config, device)
        self.pixels: torch.Tensor | None = None  # θ of the working batch (n, C, H, W)
        self.pixel_labels: torch.Tensor | None = None
        self.optimizer: torch.optim.Adam | None = None

    def step(self, labels: torch.Tensor) -> dict[str, float]:
        labels = self._check_labels(labels)
        if (
            self.pixels is None
            or self.optimizer is None
            or self.pixel_labels is None
            or not torch.equal(labels, self.pixel_labels)
        ):
            self.pixels, self.optimizer = self._restart(labels)
        named = self._pixel_step(self.pixels, self.optimizer, labels)
        self.step_count += 1
        return named

    def sample(
        self, labels: torch.Tensor, *, dropout: bool = False, seed: int | None = None
    ) -> torch.Tensor:
        labels = self._check_labels(labels)
        rng = self._sampling_rng(seed)
        chunks = []
        for chunk in labels.split(self.config.batch_size):
            theta = torch.randn(len(chunk), *self.input_shape, generator=rng, device=self.device)
            theta.requires_grad_(True)
            optimizer = torch.optim.Adam([theta], lr=self.config.pixel_lr)
            stop_at = self.config.pixel_stop_confidence
            with torch.enable_grad():
                for _ in range(self.config.steps):
                    self._pixel_step(theta, optimizer, chunk)
                    if stop_at > 0 and self.last_min_confidence >= stop_at:
                        break  # p_y of the images before this step; one more step is harmless
            chunks.append(torch.sigmoid(theta.detach()))
        if not chunks:
            return torch.empty(0, *self.input_shape, device=self.device)
        return torch.cat(chunks)

    def _restart(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.optim.Adam]:
        """A fresh working batch from noise for `labels`: (θ, its optimizer)."""
        theta = torch.randn(
            len(labels), *self.input_shape, generator=self.train_rng, device=self.device
        ).requires_grad_(True)
        self.pixel_labels = labels.clone()
        return theta, torch.optim.Adam([theta], lr=self.config.pixel_lr)

    def _pixel_step(
        self, theta: torch.Tensor, optimizer: torch.optim.Optimizer, labels: torch.Tensor
    ) -> dict[str, float]:
        images = torch.sigmoid(theta)  # (n, C, H, W)
        target = F.one_hot(labels, self.num_classes).float()
        total, named = self._loss_terms(images, target, labels)
        optimizer.zero_grad(set_to_none=True)
        # The batch mean scales each sample's gradient by 1/n; Adam undoes that per pixel.
        total.backward()
        optimizer.step()
        return named

    def _modules_state(self) -> dict[str, Any]:
        if self.pixels is None or self.optimizer is None or self.pixel_labels is None:
            return {}
        return {
            "pixels": self.pixels.detach().clone(),
            "labels": self.pixel_labels.clone(),
            "optimizer": self.optimizer.state_dict(),
        }

    def _load_modules_state(self, state: dict[str, Any]) -> None:
        if not state:
            self.pixels = self.pixel_labels = self.optimizer = None
            return
        self.pixels = state["pixels"].to(self.device).clone().requires_grad_(True)
        self.pixel_labels = state["labels"].to(self.device).clone()
        self.optimizer = torch.optim.Adam([self.pixels], lr=self.config.pixel_lr)
        self.optimizer.load_state_dict(state["optimizer"])
