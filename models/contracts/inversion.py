"""How an inversion run is configured: method names, loss weights, the engine's configuration
and the choices a user makes, each defined once.

`InversionParams` is what a user chooses (the API's job body, the job record's `params`, the
options of `c3 invert`); `InversionConfig` is everything the engine needs, with each method's
defaults filled in. `InversionParams.config(method)` is the one mapping between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from models.contracts.classifier import MAX_CLASSES
from models.contracts.verdict import Targets

__all__ = [
    "DETECTORS",
    "DETECTOR_WEIGHTS",
    "METHODS",
    "METHOD_DEFAULTS",
    "RECIPES",
    "RECIPE_DEFAULTS",
    "ClassList",
    "Detector",
    "InversionConfig",
    "InversionParams",
    "LossWeights",
    "MethodDefaults",
    "MethodName",
    "Recipe",
]

MethodName = Literal["c3", "soft", "pixel"]
"""The inversion methods; the engine registers one class under each name."""
METHODS: tuple[MethodName, ...] = get_args(MethodName)

Recipe = Literal["adaptive", "paper", "fade"]
"""How c3 trains its generator (issue 10). "adaptive": a closed loop per class
(models.control) that probes the generator as it delivers, adapts each class's diversity
pressure and pull, and stops when the targets hold or the step budget is spent. "paper": the
published fixed recipe (constant weights, fixed step count). "fade": the previous default
(paper weights fading out between `diversity_fade` of a fixed step count). soft and pixel
keep their fixed recipe whatever this says."""
RECIPES: tuple[Recipe, ...] = get_args(Recipe)

Detector = Literal["mahalanobis", "knn"]
"""The report's feature-space detectors that detector-aware c3 can aim at (issue 15)."""
DETECTORS: tuple[Detector, ...] = get_args(Detector)

PriorSource = Literal["reference", "classifier"]
"""Where detector-aware c3's prior comes from: half of the job's reference set (its real
features), or the classifier alone (BatchNorm running statistics), as an attacker without the
team's data would have it; the reference set then only scores."""

DETECTOR_WEIGHTS: dict[str, dict[str, float]] = {
    # each detector named in `detectors` turns on its prior's terms at these weights (unless
    # the request sets them); batch_stats acts only on classifiers with BatchNorm layers.
    # Gentle on purpose: on gelu-bn-cnn confidence fell to 15% at 1.0, 94% at 0.1, 98.8% at
    # 0.02 and held (99.6%) at 0.01, with Mahalanobis and k-NN still accepting ≥ 88%.
    "mahalanobis": {"mahalanobis": 0.01, "batch_stats": 0.01},
    "knn": {"knn": 0.01, "batch_stats": 0.01},
}

MAX_STEPS = 100_000
MAX_BATCH = 4096
MAX_SEED = 2**31 - 1

Weight = Annotated[float, Field(ge=0.0, le=100.0)]


def _unique(classes: list[int]) -> list[int]:
    if len(set(classes)) != len(classes):
        raise ValueError("class indices must be unique")
    return classes


ClassList = Annotated[
    list[Annotated[int, Field(ge=0)]],
    Field(min_length=1, max_length=MAX_CLASSES),
    AfterValidator(_unique),
]
"""Class indices: at least one, each once (a repeated class would multiply the work)."""


class LossWeights(BaseModel):
    """Weights of the loss terms, named as in Suhail & Sethi (arXiv:2503.20187, Sec. 3.2).

    The methods differ in conditioning; their loss mixes are presets of this one model
    (`METHOD_DEFAULTS`). Given in a request, only the weights actually sent replace the
    method's preset; the others keep it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kl: Weight = Field(1.0, description="KL(c ‖ p); = cross-entropy −log p_y for one-hot c")
    ce: Weight = Field(0.0, description="cross-entropy with the label y (soft conditioning)")
    cosine: Weight = Field(0.1, description="mean pairwise feature cosine (diversity)")
    orthogonality: Weight = Field(0.1, description="‖F̂F̂ᵀ − I‖²_F / N² (diversity)")
    tv: Weight = Field(0.0, description="total-variation image prior (off by default)")
    mode_seeking: Weight = Field(
        0.0, description="1 / (image distance / latent distance), MSGAN: against collapse"
    )
    spread: Weight = Field(
        0.0,
        description="max(0, τ − within-class RMS pixel spread) per class, against collapse; "
        "τ is the adaptive controller's per-class target, else `diversity_floor`",
    )
    mahalanobis: Weight = Field(
        0.0,
        description="detector-aware: hinge on the Mahalanobis distance of a counterfeit's "
        "features to its class's real mean, beyond the radius most real inputs keep",
    )
    knn: Weight = Field(
        0.0,
        description="detector-aware: hinge on the distance to the k-th nearest real feature, "
        "beyond the distance most real inputs keep",
    )
    batch_stats: Weight = Field(
        0.0,
        description="detector-aware without real data: the batch's statistics at each "
        "BatchNorm input against the layer's running ones (DeepInversion)",
    )

    def over(self, preset: LossWeights) -> LossWeights:
        """`preset` with the weights that were given here (set explicitly) replaced."""
        return preset.model_copy(update=self.model_dump(include=self.model_fields_set))


@dataclass(frozen=True)
class MethodDefaults:
    steps: int  # training budget: generator steps, or optimisation steps per sample (pixel)
    batch_size: int  # generator batch, or samples optimised together (pixel)
    loss_weights: LossWeights


@dataclass(frozen=True)
class RecipeDefaults:
    steps: int  # c3's step budget (adaptive: it stops earlier when the targets hold)
    lr: float  # Adam learning rate of the generator
    loss_weights: LossWeights  # c3's preset under this recipe
    dropout: float = 0.5  # the generator's channel dropout while it trains


RECIPE_DEFAULTS: dict[str, RecipeDefaults] = {
    # The paper's terms plus a pixel-spread hinge, all scaled and targeted per class.
    # Dropout 0.1, not the paper's 0.5: training then sees nearly the generator that delivers
    # (pairs-100 stops at 1,600 steps instead of 2,150, the zoo's median falls 57.7 → 40.1 s;
    # docs/engine.md, rows 25–27), and the spread hinge, not dropout, keeps classes varied.
    "adaptive": RecipeDefaults(3000, 2e-3, LossWeights(spread=1.0), dropout=0.1),
    # KL(one-hot ‖ p) + 0.1 cosine + 0.1 orthogonality, constant, 500 steps.
    "paper": RecipeDefaults(500, 1e-3, LossWeights()),
    # The same weights fading out between `diversity_fade` of 500 steps (before issue 10).
    "fade": RecipeDefaults(500, 1e-3, LossWeights()),
}

METHOD_DEFAULTS: dict[str, MethodDefaults] = {
    # C3: KL(one-hot ‖ p) + 0.1 cosine + 0.1 orthogonality.
    "c3": MethodDefaults(500, 64, LossWeights()),
    # The predecessor (arXiv:2407.18002): KL(soft c ‖ p) + CE + cosine.
    "soft": MethodDefaults(500, 64, LossWeights(kl=1.0, ce=1.0, cosine=0.1, orthogonality=0.0)),
    # Fooling images: gradient ascent on log p_y alone, 200 Adam steps per sample.
    "pixel": MethodDefaults(200, 250, LossWeights(kl=1.0, ce=0.0, cosine=0.0, orthogonality=0.0)),
}


class InversionConfig(BaseModel):
    """One inversion run. Defaults are the known-good C3 settings (method.md); `steps`,
    `batch_size` and `loss_weights` left out take the method's defaults (METHOD_DEFAULTS)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: MethodName = "c3"
    steps: int = Field(500, ge=0, le=MAX_STEPS)  # see MethodDefaults / RecipeDefaults.steps
    batch_size: int = Field(64, ge=2, le=MAX_BATCH)  # see MethodDefaults.batch_size
    loss_weights: LossWeights = LossWeights()
    lr: float = Field(1e-3, ge=1e-7, le=10.0)  # Adam learning rate (RecipeDefaults.lr)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (GAN-style)
    latent_dim: int = Field(100, ge=1, le=1024)  # size of z ~ N(0, I)
    width: int | None = Field(None, ge=4, le=256)  # generator channels at 28×28 (scaled down
    # for larger images); None: sized to the classifier's FLOPs under the adaptive recipe
    # (`models.contracts.cost.classifier_sized_width`), else DEFAULT_WIDTH
    dropout: float = Field(0.5, ge=0.0, le=0.95)  # channel dropout after every up-convolution
    # while training (RecipeDefaults.dropout)
    per_class_diversity: bool = True  # diversity terms over same-label pairs only
    diversity_fade: tuple[float, float] = (0.4, 0.6)  # diversity weights fade out between
    # these fractions of `steps`, so the last steps refine confidence; (1, 1): never fade
    soft_logit_scale: float = Field(1.0, ge=0.0, le=100.0)  # soft: c = softmax(scale · ε)
    pixel_lr: float = Field(0.1, ge=1e-7, le=100.0)  # pixel: Adam learning rate on the logits
    pixel_stop_confidence: float = Field(0.0, ge=0.0, le=1.0)  # pixel: stop a batch once all
    # its p_y reach this (0: always `steps`, the fixed budget of the fooling-images baseline)
    sample_batch_size: int = Field(500, ge=1, le=65_536)  # generator batch when sampling
    seed: int = Field(0, ge=0, le=2**63 - 1)  # seeds weights, z, masks and labels
    # -- issue 10: the recipe, the adaptive controller's cadence and its targets --
    recipe: Recipe = "adaptive"  # c3's training recipe (soft and pixel: fixed, as before)
    check_every: int = Field(50, ge=1, le=MAX_STEPS)  # adaptive: probe every N steps
    probe_per_class: int = Field(0, ge=0, le=256)  # adaptive: probes per class and check;
    # 0: sized to the class count, clamp(1280 // K, 8, 64)
    target_confident_share: float = Field(0.99, ge=0.0, le=1.0)  # at p ≥ threshold, overall
    target_class_confident_share: float = Field(0.97, ge=0.0, le=1.0)  # ... in every class
    target_argmax_share: float = Field(0.995, ge=0.0, le=1.0)  # argmax = target
    confidence_threshold: float = Field(0.99, ge=0.5, le=0.999999)  # p_y counted confident
    diversity_floor: float = Field(0.18, ge=0.0, le=1.0)  # a class whose probes differ by
    # less than this mean pairwise RMS pixel distance ([0, 1] pixels) is low, under 0.8× it
    # collapsed: the controller's data-free collapse signal
    # -- issue 15: detector-aware c3 --
    detectors: tuple[Detector, ...] = ()  # feature-space detectors to evade (c3 only)
    prior_quantile: float = Field(0.8, gt=0.0, lt=1.0)  # the prior's radius keeps this share
    # of real inputs: counterfeits are pulled inside it, below the detectors' 95% threshold
    prior_source: PriorSource = "reference"  # "classifier": data-free, even given a reference

    @property
    def targets(self) -> Targets:
        """What the run's verdict measures it against: the targets set here, the rest
        default."""
        return Targets(
            confident_share=self.target_confident_share,
            class_confident_share=self.target_class_confident_share,
            confidence=self.confidence_threshold,
            argmax_share=self.target_argmax_share,
        )

    @property
    def adaptive(self) -> bool:
        """c3 under the adaptive recipe: the closed loop runs."""
        return self.method == "c3" and self.recipe == "adaptive"

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        """Fill `steps`, `batch_size` and `loss_weights` from the method's defaults."""
        if not isinstance(data, dict):
            return data
        defaults = METHOD_DEFAULTS.get(data.get("method", "c3"))
        if defaults is None:
            return data  # the method field reports the unknown name
        data = dict(data)
        recipe = RECIPE_DEFAULTS.get(data.get("recipe", "adaptive"))
        preset = defaults.loss_weights
        if data.get("method", "c3") == "c3" and recipe is not None:
            if data.get("steps") is None:
                data["steps"] = recipe.steps
            if data.get("lr") is None:
                data["lr"] = recipe.lr
            if data.get("dropout") is None:
                data["dropout"] = recipe.dropout
            preset = recipe.loss_weights
        for key in ("steps", "batch_size"):
            if data.get(key) is None:
                data[key] = getattr(defaults, key)
        for key in ("lr", "dropout"):
            if data.get(key) is None:
                data.pop(key, None)
        given = data.get("loss_weights")
        if given is None:
            data["loss_weights"] = preset
        elif isinstance(given, dict | LossWeights):
            given = given if isinstance(given, LossWeights) else LossWeights.model_validate(given)
            data["loss_weights"] = given.over(preset)
        return _detector_weights(data, given)

    @model_validator(mode="after")
    def _pairs(self) -> InversionConfig:
        if self.detectors and self.method != "c3":
            raise ValueError("detectors: only c3 is detector-aware")
        if self.prior_source != "reference" and not self.detectors:
            raise ValueError(_PRIOR_NEEDS_DETECTORS)
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must be two numbers in [0, 1)")
        start, end = self.diversity_fade
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError("diversity_fade must be two fractions 0 <= start <= end <= 1")
        return self

    @classmethod
    def tiny(cls, method: MethodName = "c3", **overrides: Any) -> InversionConfig:
        """Runs in about a second on a CPU: for tests and smoke runs."""
        small = {"c3": (8, 16), "soft": (8, 16), "pixel": (5, 16)}[method]
        base: dict[str, Any] = {
            "method": method,
            "steps": small[0],
            "batch_size": small[1],
            "latent_dim": 16,
            "width": 8,
            "sample_batch_size": 64,
            "check_every": 4,
            "probe_per_class": 4,
        }
        return cls.model_validate(base | overrides)


def _detector_weights(data: dict[str, Any], given: Any) -> dict[str, Any]:
    """Turn on the prior terms of each detector in `detectors` the request left unset."""
    weights = data.get("loss_weights")
    if not data.get("detectors") or not isinstance(weights, LossWeights):
        return data
    unset = set(LossWeights.model_fields) - (
        given.model_fields_set if isinstance(given, LossWeights) else set()
    )
    on: dict[str, float] = {}
    for detector in data["detectors"]:
        for term, weight in DETECTOR_WEIGHTS.get(detector, {}).items():
            if term in unset:
                on[term] = max(on.get(term, 0.0), weight)
    return data | {"loss_weights": weights.model_copy(update=on)}


class InversionParams(BaseModel):
    """The choices a user makes for one inversion run. The API's job body extends it, the
    job record keeps it (with `classes` and `seed` resolved), `c3 invert` builds it."""

    model_config = ConfigDict(extra="forbid")

    classes: ClassList | None = Field(
        None, description="Class indices to invert; all when omitted."
    )
    samples_per_class: int = Field(100, ge=1, description="Samples drawn per class.")
    steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="Training budget: generator steps (c3, soft) or per-sample optimisation "
        "steps (pixel). Method default when omitted.",
    )
    batch_size: int | None = Field(
        None, ge=2, le=MAX_BATCH, description="Training batch; method default when omitted."
    )
    loss_weights: LossWeights | None = Field(
        None, description="Weights to change; the others keep the method's preset."
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random when omitted.")
    sample_dropout: bool = Field(
        False, description="Sample with the generator's dropout on: more variety, less confidence."
    )
    recipe: Recipe | None = Field(
        None,
        description="c3's training recipe: `adaptive` (default: adapts per class and stops "
        "when the targets hold), `paper` (the published fixed recipe) or `fade`.",
    )
    target_confident_share: float | None = Field(
        None, gt=0, le=1, description="Adaptive target: share of samples at p ≥ 0.99 (0.99)."
    )
    target_class_confident_share: float | None = Field(
        None, gt=0, le=1, description="Adaptive target: that share in every class (0.97)."
    )
    target_argmax_share: float | None = Field(
        None, gt=0, le=1, description="Adaptive target: share classified as their class (0.995)."
    )
    diversity_floor: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Adaptive: within-class pixel spread under which a class counts as "
        "collapsed and gets more diversity pressure (0.18).",
    )

    detectors: list[Detector] | None = Field(
        None,
        description="Detector-aware c3: feature-space detectors of the report to evade "
        "(`mahalanobis`, `knn`); their statistics come from half of the reference set, and "
        "the evasion table is computed on the other half.",
    )

    prior_source: PriorSource | None = Field(
        None,
        description="Detector-aware c3: `reference` (default: the prior's statistics from half "
        "of the reference set) or `classifier` (from the classifier alone, as an attacker "
        "without your data would: BatchNorm running statistics; the reference set only scores).",
    )

    @field_validator("prior_source")
    @classmethod
    def _prior_needs_detectors(cls, source: str | None, info: ValidationInfo) -> str | None:
        """`detectors` comes first, so it is known here."""
        if source not in (None, "reference") and not info.data.get("detectors"):
            raise ValueError(_PRIOR_NEEDS_DETECTORS)
        return source

    @field_serializer("loss_weights")
    def _given_weights_only(self, weights: LossWeights | None) -> dict[str, float] | None:
        """Only the weights a user set, so that the method's preset fills the rest later."""
        return None if weights is None else weights.model_dump(include=weights.model_fields_set)

    def config(self, method: MethodName, seed: int | None = None) -> InversionConfig:
        """The engine configuration of this run (`seed` when the params leave it open)."""
        chosen = self.model_dump(include=set(_CONFIG_CHOICES), exclude_none=True)
        return InversionConfig.model_validate(
            {
                **chosen,
                "method": method,
                "steps": self.steps,
                "batch_size": self.batch_size,
                "loss_weights": self.loss_weights,
                "seed": self.seed if self.seed is not None else (seed or 0),
            }
        )


_CONFIG_CHOICES = ("recipe", "target_confident_share", "target_class_confident_share",
                   "target_argmax_share", "diversity_floor", "detectors",
                   "prior_source")  # fmt: skip
"""The choices that pass to `InversionConfig` under the same name when given."""
_PRIOR_NEEDS_DETECTORS = (
    "prior_source: only detector-aware c3 builds a prior; name the detectors to evade "
    "(detectors) or leave prior_source out"
)
