"""The audit in plain words: what the figures mean for the model, a traffic light per OOD
detector, and what to do. Shown first on the job page and in the report, above the engine's
`Verdict` (which says whether the audit itself met its targets).

Reads only the engine's figures (metrics.json's overall figures, report.json's evasion table):
the sentences restate them, never compute new ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from models.contracts.artifacts import ClassMetrics, DetectorResult, EvasionTable
from service.glossary import term

CAUGHT_GREEN = 0.9
"""A detector that rejects at least this share of the counterfeits (at the threshold keeping
95% of real images) would protect the model: green."""
CAUGHT_AMBER = 0.5
"""... at least this share: amber (it helps, not enough alone); under it: red."""
NEARLY_ALL = 0.9
"""A detector accepting at least this share "would accept nearly all of them"."""
UNLIKE_DATA_AUROC = 0.9
"""k-NN feature AUROC from which counterfeits "look nothing like the real images"."""
UNLIKE_SOME_AUROC = 0.7
"""... from which "most differ clearly from the real images"."""
FOOLED_SHARE = 0.5
"""A confident share from which the model's confidence counts as fooled."""

Light = Literal["red", "amber", "green"]


@dataclass(frozen=True)
class DetectorLight:
    name: str
    label: str
    light: Light
    accepted: float  # share of counterfeits let through
    auroc: float | None
    meaning: str

    @property
    def caught(self) -> float:
        return 1.0 - self.accepted

    @property
    def says(self) -> str:
        if self.light == "green":
            return f"catches {self.caught:.1%}"
        if self.light == "amber":
            return f"catches only {self.caught:.1%}"
        return f"accepts {self.accepted:.1%}"


@dataclass(frozen=True)
class Findings:
    sentences: tuple[str, ...]
    lights: tuple[DetectorLight, ...]
    advice: tuple[str, ...]
    fooled: bool  # the model's confidence was faked for most counterfeits


def _light(caught: float) -> Light:
    return "green" if caught >= CAUGHT_GREEN else "amber" if caught >= CAUGHT_AMBER else "red"


def light_of(result: DetectorResult) -> Light:
    """A detector's traffic light by the share of counterfeits it rejects."""
    return _light(1.0 - result.accepted_share)


def detector_lights(ood: EvasionTable | None) -> tuple[DetectorLight, ...]:
    if ood is None:
        return ()
    return tuple(
        DetectorLight(
            name=d.name,
            label=term(f"detector.{d.name}").label,
            light=light_of(d),
            accepted=d.accepted_share,
            auroc=d.auroc,
            meaning=term(f"detector.{d.name}").meaning,
        )
        for d in ood.detectors
    )


def _names(lights: list[DetectorLight]) -> str:
    return _detector_names([light.name for light in lights])


def _detector_names(detectors: Sequence[str]) -> str:
    """ "Mahalanobis detector", "Mahalanobis and k-NN feature-distance detectors"."""
    names = [term(f"detector.{name}").header for name in detectors]
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return joined + (" detector" if len(names) == 1 else " detectors")


def _resemblance(overall: ClassMetrics) -> str:
    auroc = overall.knn_feature_auroc
    if auroc is None:
        return " (without real reference images, how far they are from real data was not measured)"
    if auroc >= UNLIKE_DATA_AUROC:
        return (
            " although they look nothing like the real images (a nearest-neighbour check in the "
            f"model's features tells them apart with AUROC {auroc:.2f})"
        )
    if auroc >= UNLIKE_SOME_AUROC:
        return (
            f" although most differ clearly from the real images (nearest-neighbour AUROC "
            f"{auroc:.2f})"
        )
    return (
        " but many are close to real images (nearest-neighbour AUROC "
        f"{auroc:.2f}), so part of that confidence may be earned"
    )


def _detector_sentence(lights: tuple[DetectorLight, ...]) -> str:
    parts = []
    red = [light for light in lights if light.light == "red"]
    if red:
        most = "nearly all" if min(r.accepted for r in red) >= NEARLY_ALL else "most"
        shares = ", ".join(f"{r.accepted:.1%}" for r in red)
        article = "a " if len(red) == 1 else ""
        parts.append(f"{article}{_names(red)} would accept {most} of them ({shares})")
    for light in lights:
        if light.light != "red":
            parts.append(f"a {_names([light])} would {light.says.replace('catches', 'catch')}")
    return "; ".join(parts)


def _aimed_sentence(
    lights: tuple[DetectorLight, ...], aimed: Sequence[str], data_free: bool = False
) -> str:
    """What a detector-aware run (issue 15) says about the detectors it aimed at; `data_free`:
    its prior came from the classifier alone, and the whole reference set scored it."""
    targeted = [light for light in lights if light.name in aimed]
    names = _names(targeted) if targeted else " and ".join(aimed)
    beaten = [light for light in targeted if light.light != "green"]
    held = [light for light in targeted if light.light == "green"]
    attacker = "who has the model but not your data" if data_free else "who knows it"
    verdict = (
        f"the {_names(beaten)} would not protect the model from someone {attacker}"
        if beaten
        else ""
    )
    if held:
        verdict += ("; " if verdict else "") + f"the {_names(held)} withstood the attack"
    if data_free:
        return (
            f"These counterfeits were made to pass the {names} without your data (detector-aware "
            f"c3, its prior from the classifier alone) and scored on the reference set: {verdict}."
        )
    return (
        f"These counterfeits were made to pass the {names} (detector-aware c3) and scored on "
        f"the half of the reference set the generator never saw: {verdict}."
    )


def side_by_side_sentence(
    plain: EvasionTable, aware: EvasionTable, aimed: Sequence[str], data_free: bool = False
) -> str | None:
    """What a detector-aware run means for the detectors it `aimed` at, in one sentence: the
    share of plain and of detector-aware counterfeits each accepted (both tables on the same
    evaluation half), and whether someone who knows the detector (`data_free`: who has the
    model but not the data) gets past it. None when neither table has an aimed detector."""
    plain_by, aware_by = {d.name: d for d in plain.detectors}, {d.name: d for d in aware.detectors}
    pairs = [(plain_by[n], aware_by[n]) for n in aimed if n in plain_by and n in aware_by]
    if not pairs:
        return None
    shares = []
    for i, (before, after) in enumerate(pairs):
        name = f"your {term(f'detector.{before.name}').header} detector"
        shares.append(
            f"{name} accepted {before.accepted_share:.1%} of plain counterfeits and "
            f"{after.accepted_share:.1%} of detector-aware ones"
            if i == 0
            else f"{name} {before.accepted_share:.1%} and {after.accepted_share:.1%}"
        )
    groups: dict[str, list[str]] = {"bypassed": [], "weak": [], "held": []}
    for before, after in pairs:
        if light_of(after) == "green":
            groups["held"].append(before.name)
        else:
            groups["bypassed" if light_of(before) == "green" else "weak"].append(before.name)
    whole = sum(1 for names in groups.values() if names) == 1  # one verdict for all of them

    def who(names: list[str]) -> tuple[str, str]:
        """(the detectors as the subject, the pronoun) of a verdict."""
        if whole:
            return ("the detector", "it") if len(names) == 1 else ("these detectors", "them")
        return f"the {_detector_names(names)}", "it" if len(names) == 1 else "them"

    verdicts = []
    if groups["bypassed"]:
        subject, pronoun = who(groups["bypassed"])
        knows = "has your model but not your data" if data_free else f"knows {subject}"
        verdicts.append(f"someone who {knows} can get past {pronoun}")
    if groups["weak"]:
        subject, _ = who(groups["weak"])
        verb = "was" if len(groups["weak"]) == 1 else "were"
        verdicts.append(f"{subject} {verb} weak against plain counterfeits already")
    if groups["held"]:
        subject, pronoun = who(groups["held"])
        verdicts.append(f"{subject} held even against counterfeits made to pass {pronoun}")
    sentence = ", ".join(shares) + ": " + "; ".join(verdicts) + "."
    return sentence[0].upper() + sentence[1:]


def findings(
    overall: ClassMetrics,
    ood: EvasionTable | None,
    threshold: float,
    *,
    method: str = "c3",
    detectors: Sequence[str] = (),
    data_free: bool = False,
) -> Findings:
    """What the audit found: `overall` is metrics.json's overall figures, `ood` its evasion
    table (None without a reference set), `threshold` the p_y counted as confident,
    `detectors` the ones a detector-aware run aimed at (`data_free`: without real data)."""
    count = overall.count or 0
    share = overall.confident_share or 0.0
    fooled = share >= FOOLED_SHARE
    first = (
        f"{share:.1%} of {count:,} counterfeits were classified with p ≥ {threshold:g}"
        + (_resemblance(overall) if fooled else "")
        + "."
    )
    sentences = [first[0].upper() + first[1:]]
    lights = detector_lights(ood)
    if lights:
        sentence = _detector_sentence(lights)
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        if detectors:
            sentences.append(_aimed_sentence(lights, detectors, data_free))
    advice: list[str] = []
    if fooled:
        advice.append(
            "Retrain with a reject class: add these counterfeits as an extra class (the "
            'reject-class dataset in the downloads) so the model learns to answer "none of '
            'these" instead of a confident label.'
        )
        best = max(
            (light for light in lights if light.light == "green"),
            key=lambda light: (light.caught, light.auroc or 0.0),
            default=None,
        )
        if best is not None:
            advice.append(
                f"Deploy the {_names([best])} in front of the model: at a threshold that keeps "
                f"95% of real inputs it rejects {best.caught:.1%} of these counterfeits."
            )
        elif lights:
            advice.append(
                "No detector tested rejects 90% of them: do not rely on one alone; "
                "retraining with a reject class comes first."
            )
        else:
            advice.append(
                "Run the audit again with a reference set of real images to learn which "
                "out-of-distribution detector would stop these counterfeits."
            )
    else:
        advice.append(
            "The model's confidence held up: most counterfeits did not reach it. Check the "
            "audit targets below before concluding: an audit that missed them ("
            + (
                "soft conditioning rarely reaches p ≥ 0.99"
                if method == "soft"
                else "e.g. too few steps"
            )
            + ") may understate the risk."
        )
    return Findings(tuple(sentences), lights, tuple(advice), fooled)
