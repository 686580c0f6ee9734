"""Typed, frozen, JSON-round-trippable configuration of an inversion run.

The service sends these as JSON, so `from_dict` is strict: unknown keys and wrong types raise
`ValueError` naming the key, and limits keep one job from taking the worker down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["RECIPES", "RECIPE_LR", "RECIPE_STEPS", "InversionConfig", "LossWeights"]

# Training recipes of the generator methods (c3, soft). "adaptive": closed loop per class
# (models.control), stops when the targets hold on probe batches or the budget is spent.
# "paper": the paper's fixed recipe (constant weights, fixed step count). "fade": the previous
# default, paper weights fading out between `diversity_fade` of a fixed step count.
RECIPES: tuple[str, ...] = ("adaptive", "paper", "fade")
RECIPE_STEPS: dict[str, int] = {"adaptive": 3000, "paper": 500, "fade": 500}
RECIPE_LR: dict[str, float] = {"adaptive": 2e-3, "paper": 1e-3, "fade": 1e-3}


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms, named as in Suhail & Sethi (arXiv:2503.20187, Sec. 3.2).

    The methods differ in conditioning; their loss mixes are presets of this one dataclass.
    """

    kl: float = 1.0  # KL(c ‖ p); = cross-entropy −log p_y for one-hot c
    ce: float = 0.0  # cross-entropy with the label y (soft conditioning)
    cosine: float = 0.1  # mean pairwise feature cosine similarity (diversity)
    orthogonality: float = 0.1  # ‖F̂F̂ᵀ − I‖²_F / N² (diversity)
    tv: float = 0.0  # total variation image prior (off by default)
    mode_seeking: float = 0.0  # 1 / (image distance / latent distance), MSGAN (diversity)
    spread: float = 0.0  # max(0, τ − within-class RMS pixel spread) per class (diversity);
    # τ is the controller's per-class target (adaptive recipe), else `diversity_floor`

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"loss weight {f.name!r} must be a number")
            if not 0.0 <= float(value) <= 100.0:
                raise ValueError(f"loss weight {f.name!r} must be between 0 and 100")
            object.__setattr__(self, f.name, float(value))

    @classmethod
    def c3(cls) -> LossWeights:
        """C3, adaptive recipe: the paper's terms plus a pixel-spread hinge, scaled and
        targeted per class by the controller (`models.control`)."""
        return cls(spread=1.0)

    @classmethod
    def paper(cls) -> LossWeights:
        """C3 as published: KL(one-hot ‖ p) + 0.1 cosine + 0.1 orthogonality."""
        return cls()

    @classmethod
    def soft(cls) -> LossWeights:
        """The predecessor (arXiv:2407.18002): KL(soft c ‖ p) + CE + cosine."""
        return cls(kl=1.0, ce=1.0, cosine=0.1, orthogonality=0.0)

    @classmethod
    def pixel(cls) -> LossWeights:
        """Fooling images: gradient ascent on log p_y alone."""
        return cls(kl=1.0, ce=0.0, cosine=0.0, orthogonality=0.0)

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossWeights:
        _reject_unknown(cls, data, "loss weight")
        return cls(**dict(data))


def _reject_unknown(cls: type, data: Mapping[str, Any], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}s must be a JSON object")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ValueError(f"unknown {what} {key!r} (known: {', '.join(sorted(known))})")


# (minimum, maximum) for numeric fields: keeps one job within a worker's means.
_LIMITS: dict[str, tuple[float, float]] = {
    "steps": (0, 100_000),
    "batch_size": (2, 4096),
    "lr": (1e-7, 10.0),
    "latent_dim": (1, 1024),
    "width": (4, 256),
    "dropout": (0.0, 0.95),
    "soft_logit_scale": (0.0, 100.0),
    "pixel_steps": (1, 100_000),
    "pixel_lr": (1e-7, 100.0),
    "pixel_stop_confidence": (0.0, 1.0),
    "pixel_batch_size": (1, 4096),
    "sample_batch_size": (1, 65_536),
    "seed": (0, 2**63 - 1),
    # -- issue 10: adaptive recipe (models.control) --
    "check_every": (1, 100_000),
    "probe_per_class": (0, 256),
    "target_confident_share": (0.0, 1.0),
    "target_class_confident_share": (0.0, 1.0),
    "target_argmax_share": (0.0, 1.0),
    "confidence_threshold": (0.5, 0.999999),
    "diversity_floor": (0.0, 1.0),
}


@dataclass(frozen=True)
class InversionConfig:
    """One inversion run. Defaults are the known-good C3 settings (method.md)."""

    method: str = "c3"  # registered method name: "c3", "soft" or "pixel"
    steps: int | None = None  # generator training steps; None: the recipe's (RECIPE_STEPS:
    # adaptive 3000 as a budget it stops early within, paper and fade 500 fixed). Always an
    # int after construction (`step_budget`).
    batch_size: int = 64  # generator training batch, labels balanced over the classes
    lr: float | None = None  # Adam learning rate of the generator; None: the recipe's
    # (RECIPE_LR: adaptive 2e-3, paper and fade 1e-3)
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (GAN-style)
    latent_dim: int = 100  # size of z ~ N(0, I)
    width: int = 16  # generator channels at full resolution, doubling towards the base
    dropout: float = 0.5  # channel dropout after every up-convolution
    weights: LossWeights | None = None  # None: the method's preset (LossWeights.c3(), ...)
    per_class_diversity: bool = True  # diversity terms over same-label pairs only
    diversity_fade: tuple[float, float] = (0.4, 0.6)  # diversity weights fade out between
    # these fractions of `steps`, so the last steps refine confidence; (1, 1): never fade
    soft_logit_scale: float = 1.0  # soft: conditioning = softmax(scale · N(0, I)), argmax → y
    pixel_steps: int = 200  # pixel: Adam steps per sample
    pixel_lr: float = 0.1  # pixel: Adam learning rate on the pixel logits
    pixel_stop_confidence: float = 0.0  # pixel: stop a batch once all its p_y reach this
    # (0: always `pixel_steps`, the fixed budget of the fooling-images baseline)
    pixel_batch_size: int = 250  # pixel: samples optimised together (independent per sample)
    sample_batch_size: int = 500  # generator forward batch when sampling
    seed: int = 0  # seeds weights, z, dropout masks and labels: CPU runs are reproducible
    # -- issue 10: the adaptive recipe and its targets (models.control). The lead ports this
    # block to the pydantic InversionConfig in models/contracts/. --
    recipe: str = "adaptive"  # "adaptive" (closed loop), "paper" (fixed), "fade" (previous)
    check_every: int = 50  # adaptive: probe the generator every this many steps
    probe_per_class: int = 0  # adaptive: probe samples per class; 0: sized to the class
    # count, clamp(640 // K, 8, 32)
    target_confident_share: float = 0.99  # share of samples at p_y >= confidence_threshold
    target_class_confident_share: float = 0.97  # ... in every class
    target_argmax_share: float = 0.995  # share with argmax = target
    confidence_threshold: float = 0.99  # p_y that counts as confident
    diversity_floor: float = 0.18  # a class whose probes differ by less than this RMS pixel
    # distance (mean over pairs, [0, 1] pixels) counts as collapsed; no real data needed

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method:
            raise ValueError("method must be a method name")
        if not isinstance(self.recipe, str) or self.recipe not in RECIPES:
            raise ValueError(f"'recipe' must be one of {', '.join(RECIPES)}, got {self.recipe!r}")
        # Recipe defaults; soft and pixel keep the fixed recipe of their day ("fade").
        recipe = self.recipe if self.method == "c3" else "fade"
        if self.steps is None:
            object.__setattr__(self, "steps", RECIPE_STEPS[recipe])
        if self.lr is None:
            object.__setattr__(self, "lr", RECIPE_LR[recipe])
        for name, (low, high) in _LIMITS.items():
            value = getattr(self, name)
            integral = _FIELD_TYPES[name] is int
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name!r} must be a number")
            if integral and not (isinstance(value, int) or float(value).is_integer()):
                raise ValueError(f"{name!r} must be an integer")
            if not low <= value <= high:
                raise ValueError(f"{name!r} must be between {low:g} and {high:g}, got {value}")
            object.__setattr__(self, name, int(value) if integral else float(value))
        betas = tuple(self.betas)
        if len(betas) != 2 or not all(
            isinstance(b, int | float) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas
        ):
            raise ValueError("'betas' must be two numbers in [0, 1)")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        fade = tuple(self.diversity_fade)
        if (
            len(fade) != 2
            or not all(isinstance(f, int | float) and not isinstance(f, bool) for f in fade)
            or not 0.0 <= fade[0] <= fade[1] <= 1.0
        ):
            raise ValueError("'diversity_fade' must be two fractions 0 <= start <= end <= 1")
        object.__setattr__(self, "diversity_fade", (float(fade[0]), float(fade[1])))
        if not isinstance(self.per_class_diversity, bool):
            raise ValueError("'per_class_diversity' must be true or false")
        if self.weights is not None and not isinstance(self.weights, LossWeights):
            raise ValueError("'weights' must be LossWeights")

    @property
    def step_budget(self) -> int:
        """`steps` resolved (never None after construction)."""
        return int(self.steps or 0)

    @property
    def learning_rate(self) -> float:
        """`lr` resolved (never None after construction)."""
        return float(self.lr or 0.0)

    @property
    def adaptive(self) -> bool:
        return self.recipe == "adaptive"

    @classmethod
    def tiny(cls, method: str = "c3", **overrides: Any) -> InversionConfig:
        """Runs in about a second on a CPU: for tests and smoke runs."""
        base: dict[str, Any] = dict(
            method=method,
            steps=8,
            batch_size=16,
            latent_dim=16,
            width=8,
            pixel_steps=5,
            pixel_batch_size=16,
            sample_batch_size=64,
            check_every=4,
            probe_per_class=4,
        )
        base.update(overrides)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["betas"] = list(self.betas)
        data["diversity_fade"] = list(self.diversity_fade)
        data["weights"] = None if self.weights is None else self.weights.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InversionConfig:
        _reject_unknown(cls, data, "config key")
        values = dict(data)
        if values.get("weights") is not None:
            values["weights"] = LossWeights.from_dict(values["weights"])
        for pair in ("betas", "diversity_fade"):
            if pair in values:
                if not isinstance(values[pair], list | tuple):
                    raise ValueError(f"{pair!r} must be a list of two numbers")
                values[pair] = tuple(values[pair])
        return cls(**values)


_FIELD_TYPES: dict[str, type] = {
    "steps": int,
    "batch_size": int,
    "lr": float,
    "latent_dim": int,
    "width": int,
    "dropout": float,
    "soft_logit_scale": float,
    "pixel_steps": int,
    "pixel_lr": float,
    "pixel_stop_confidence": float,
    "pixel_batch_size": int,
    "sample_batch_size": int,
    "seed": int,
    "check_every": int,
    "probe_per_class": int,
    "target_confident_share": float,
    "target_class_confident_share": float,
    "target_argmax_share": float,
    "confidence_threshold": float,
    "diversity_floor": float,
}
