"""An honest verdict on an inversion: which targets were met, which missed, and what to try.

A contract (torch-free): the engine builds it at the end of a run (`AuditResult.verdict`,
report.json), the job record keeps it, the report, the dashboard and `c3 invert` show it. Built
from the run's `InversionMetrics` and the training outcome (why training stopped, steps run,
the step budget), so it reads the same figures users see.

Targets (issue 10): ≥ 99% of delivered 8-bit samples at p ≥ 0.99 for their class and every
class ≥ 97%; argmax = target for ≥ 99.5%; no class under 0.5× its real images' within-class
diversity and the mean ≥ 0.8×; MSP-AUROC ≤ 0.3. The diversity and MSP targets need a
reference set of real images: without one they are reported as not measured, never as met.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # artifacts.py holds a Verdict in report.json
    from models.contracts.artifacts import InversionMetrics

__all__ = [
    "STOP_REASONS",
    "Check",
    "ClassShortfall",
    "Targets",
    "TrainingOutcome",
    "Verdict",
    "build_verdict",
]

STOP_REASONS: tuple[str, ...] = (
    "targets_met",  # adaptive: the targets held on the probes at two consecutive checks
    "budget_spent",  # adaptive: the step budget ran out first
    "fixed_recipe",  # paper / fade: ran their fixed number of steps
    "no_training",  # pixel: no generator
    "cancelled",  # stopped from outside (a resumed job continues)
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Targets(_Frozen):
    """What a good audit delivers; defaults are issue 10's targets."""

    confident_share: float = 0.99  # share of samples at p_y ≥ confidence, overall
    class_confident_share: float = 0.97  # ... in every class
    confidence: float = 0.99  # the p_y threshold of "confident"
    argmax_share: float = 0.995  # share with argmax = target
    min_diversity_ratio: float = 0.5  # every class's pixel diversity / its real images'
    mean_diversity_ratio: float = 0.8  # mean over classes of that ratio
    max_msp_auroc: float = 0.3  # counterfeits vs real by −max softmax: ≤ this


class TrainingOutcome(_Frozen):
    """How training ended: `stop_reason` is one of `STOP_REASONS`."""

    stop_reason: str  # one of STOP_REASONS
    steps: int = 0  # steps run
    step_budget: int = 0  # the most steps training could have run
    recipe: str = "adaptive"
    collapsed_on_probes: tuple[str, ...] = ()  # classes the data-free signal still flagged
    lagging_on_probes: tuple[str, ...] = ()  # classes under the confidence target on probes


class Check(_Frozen):
    """One target: met (True/False) or not measured (None), with the measured value."""

    name: str  # e.g. "confident_share"
    description: str  # e.g. "share of samples at p >= 0.99"
    target: float
    value: float | None
    met: bool | None
    comparison: Literal[">=", "<="] = ">="


class ClassShortfall(_Frozen):
    """A class that missed a per-class target, and by how much (target − value, ≥ 0)."""

    class_name: str
    target: str  # "class_confident_share" or "min_diversity_ratio"
    value: float
    required: float

    @property
    def shortfall(self) -> float:
        return max(0.0, self.required - self.value)


class Verdict(_Frozen):
    """Met / missed per target, the classes that missed, and plain-language suggestions."""

    met: bool  # every measured target met
    checks: tuple[Check, ...]
    missed_classes: tuple[ClassShortfall, ...] = ()
    suggestions: tuple[str, ...] = ()
    training: TrainingOutcome | None = None
    targets: Targets = Field(default_factory=Targets)
    summary: str = Field("", description="The verdict in plain sentences, with what to try.")

    @property
    def missed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.met is False)

    @property
    def not_measured(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.met is None)

    def _summarise(self) -> str:
        """One or more plain sentences, e.g. for `c3 invert` or a report header."""
        lines = []
        if self.met and not self.not_measured:
            lines.append("All targets met.")
        elif self.met:
            names = ", ".join(c.description for c in self.not_measured)
            lines.append(f"All measured targets met (not measured without real images: {names}).")
        else:
            for check in self.missed:
                share = _is_share(check.name)
                lines.append(
                    f"Missed: {check.description}: {_fmt(check.value, share)} "
                    f"(target {check.comparison} {_fmt(check.target, share)})."
                )
            by_target: dict[str, list[ClassShortfall]] = {}
            for item in self.missed_classes:
                by_target.setdefault(item.target, []).append(item)
            for target, items in by_target.items():
                shown = ", ".join(
                    f"{i.class_name} {_fmt(i.value, _is_share(target))} "
                    f"({_fmt(i.shortfall, _is_share(target))} short)"
                    for i in sorted(items, key=lambda i: -i.shortfall)[:10]
                )
                more = f" and {len(items) - 10} more" if len(items) > 10 else ""
                what = _DESCRIPTIONS[target].format(confidence=f"{self.targets.confidence:g}")
                lines.append(f"Classes under {what}: {shown}{more}.")
        if self.training is not None:
            lines.append(_stop_sentence(self.training))
        lines += [f"Try: {s}" for s in self.suggestions]
        return "\n".join(lines)


_DESCRIPTIONS = {
    "confident_share": "share of samples at p >= {confidence}",
    "class_confident_share": "share at p >= {confidence} in the worst class",
    "argmax_share": "share with argmax = target",
    "min_diversity_ratio": "diversity of the least varied class / its real images'",
    "mean_diversity_ratio": "mean class diversity / real images'",
    "msp_auroc": "MSP-AUROC (counterfeits vs real by max softmax)",
}


def _is_share(name: str) -> bool:
    """Shares read as percentages; ratios and AUROCs as plain numbers."""
    return name.endswith("share")


def _fmt(value: float | None, share: bool = True) -> str:
    if value is None:
        return "not measured"
    if share and 0.0 <= value <= 1.0:
        return f"{100 * value:.1f}%"
    return f"{value:.2f}"


def _stop_sentence(outcome: TrainingOutcome) -> str:
    if outcome.stop_reason == "targets_met":
        return f"Training stopped after {outcome.steps} steps: the targets held on its probes."
    if outcome.stop_reason == "budget_spent":
        return (
            f"Training spent its budget of {outcome.step_budget} steps before the targets held "
            "on its probes."
        )
    if outcome.stop_reason == "fixed_recipe":
        return f"Training ran the fixed '{outcome.recipe}' recipe for {outcome.steps} steps."
    if outcome.stop_reason == "cancelled":
        return f"Training was stopped from outside after {outcome.steps} steps."
    return "No generator training (the method optimises each sample)."


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def build_verdict(
    metrics: InversionMetrics,
    training: TrainingOutcome | None = None,
    targets: Targets | None = None,
    *,
    method: str = "c3",
    step_limit: int | None = None,
) -> Verdict:
    """The verdict for a run's `metrics` and its training outcome.

    `step_limit`: the largest step budget a job may ask for (suggestions stay under it).
    """
    targets = targets or Targets()
    overall = metrics.overall
    threshold = metrics.confident_threshold or targets.confidence
    descriptions = {k: v.format(confidence=f"{threshold:g}") for k, v in _DESCRIPTIONS.items()}

    class_confident = {name: _number(m.confident_share) for name, m in metrics.per_class.items()}
    ratios: dict[str, float] = {}
    for name, m in metrics.per_class.items():
        fake, real = _number(m.pixel_diversity), _number(m.reference_pixel_diversity)
        if fake is not None and real:
            ratios[name] = fake / real
    worst_confident = min((v for v in class_confident.values() if v is not None), default=None)
    msp = _number(overall.msp_auroc)

    def check(
        name: str, target: float, value: float | None, comparison: Literal[">=", "<="] = ">="
    ) -> Check:
        met = (
            None if value is None else (value >= target if comparison == ">=" else value <= target)
        )
        return Check(
            name=name, description=descriptions[name], target=target, value=value, met=met,
            comparison=comparison,
        )  # fmt: skip

    checks = (
        check("confident_share", targets.confident_share, _number(overall.confident_share)),
        check("class_confident_share", targets.class_confident_share, worst_confident),
        check("argmax_share", targets.argmax_share, _number(overall.argmax_accuracy)),
        check(
            "min_diversity_ratio",
            targets.min_diversity_ratio,
            min(ratios.values()) if ratios else None,
        ),
        check(
            "mean_diversity_ratio",
            targets.mean_diversity_ratio,
            sum(ratios.values()) / len(ratios) if ratios else None,
        ),
        check("msp_auroc", targets.max_msp_auroc, msp, "<="),
    )
    missed_classes = [
        ClassShortfall(class_name=name, target="class_confident_share", value=value,
                       required=targets.class_confident_share)
        for name, value in class_confident.items()
        if value is not None and value < targets.class_confident_share
    ] + [
        ClassShortfall(class_name=name, target="min_diversity_ratio", value=value,
                       required=targets.min_diversity_ratio)
        for name, value in ratios.items()
        if value < targets.min_diversity_ratio
    ]  # fmt: skip
    met = all(c.met is not False for c in checks)
    suggestions = () if met else _suggest(checks, missed_classes, training, method, step_limit)
    draft = Verdict(
        met=met, checks=checks, missed_classes=tuple(missed_classes), suggestions=suggestions,
        training=training, targets=targets,
    )  # fmt: skip
    return draft.model_copy(update={"summary": draft._summarise()})


def _suggest(
    checks: tuple[Check, ...],
    missed_classes: list[ClassShortfall],
    training: TrainingOutcome | None,
    method: str,
    step_limit: int | None,
) -> tuple[str, ...]:
    missed = {c.name for c in checks if c.met is False}
    confidence_missed = bool(missed & {"confident_share", "class_confident_share", "argmax_share"})
    diversity_missed = bool(missed & {"min_diversity_ratio", "mean_diversity_ratio"})
    out: list[str] = []
    recipe = training.recipe if training is not None else "adaptive"
    if method == "soft" and confidence_missed:
        out.append(
            "soft conditioning matches a soft target by design and rarely reaches p >= 0.99: "
            "use the c3 method for confident counterfeits"
        )
    if training is not None and recipe != "adaptive" and method != "pixel":
        out.append(
            f"the fixed '{recipe}' recipe does not watch the targets: use recipe 'adaptive' "
            "(the default), which adapts per class and stops when they hold"
        )
    if confidence_missed and training is not None and training.stop_reason == "budget_spent":
        budget = max(training.step_budget, training.steps, 1)
        suggested = 2 * budget if step_limit is None else min(2 * budget, step_limit)
        if suggested > budget:
            out.append(f"raise the step budget to {suggested} (this run spent all {budget})")
    if confidence_missed and training is not None and training.stop_reason == "targets_met":
        out.append(
            "the probes met the targets but the delivered samples fell just short: make the "
            "probes stricter (e.g. target_class_confident_share 0.99), which trains longer"
        )
    lagging = [c.class_name for c in missed_classes if c.target == "class_confident_share"]
    if lagging and not diversity_missed:
        shown = ", ".join(lagging[:5]) + (", ..." if len(lagging) > 5 else "")
        if recipe == "adaptive":
            out.append(
                f"the lagging classes ({shown}) are varied enough: lower diversity_floor "
                "(e.g. by 0.03) so the controller trades less confidence for spread"
            )
        else:
            out.append(
                f"the lagging classes ({shown}) may need less diversity pressure: try "
                "loss_weights.cosine and loss_weights.orthogonality at half their values"
            )
    if diversity_missed:
        out.append(
            "the classifier's features saturate, so the feature-space diversity terms cannot "
            "see pixel collapse: "
            + (
                "raise diversity_floor (e.g. by 0.05), or sample with dropout on"
                if recipe == "adaptive"
                else "use recipe 'adaptive', or set loss_weights.spread (e.g. 1.0) or "
                "loss_weights.mode_seeking (e.g. 0.5), or sample with dropout on"
            )
        )
    if missed & {"msp_auroc"} and not confidence_missed:
        out.append(
            "the counterfeits are confident but real images are as confident: the classifier "
            "is sure of nearly everything; this is a finding about the classifier"
        )
    if method == "pixel" and confidence_missed:
        out.append("raise pixel_steps (each sample is optimised separately)")
    return tuple(dict.fromkeys(out))
