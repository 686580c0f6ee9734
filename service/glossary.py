"""What every figure on the dashboard and in the report is called and what it means, in one
place: the pages show `label` (or `short` where columns are tight) and put `meaning` in a
tooltip or a "what this means" line, so the two never drift apart.

Keys are metrics.json's figure names (cost figures as `cost.<name>`), the OOD detectors' names
(`detector.<name>`), the evasion table's columns (`evasion.<column>`), the side-by-side view of
plain and detector-aware c3 (`side_by_side.<column>`) and the pages' sections (`section.<name>`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    label: str
    meaning: str
    short: str = ""  # a column header or a name in a sentence; `label` when empty

    @property
    def header(self) -> str:
        return self.short or self.label


_REAL = "Compare with the same figure on real images."

TERMS: dict[str, Term] = {
    # -- confidence --
    "count": Term("Samples", "How many counterfeits were generated and scored.", "n"),
    "mean_confidence": Term(
        "Mean confidence p_y",
        "The average probability the model gives each counterfeit's target class (1 = certain).",
        "mean p_y",
    ),
    "confident_share": Term(
        "Confident (p_y ≥ 0.99)",
        "Share of counterfeits the model assigns to their target class with probability at "
        "least 0.99. High means the model's confidence can be faked.",
        "p_y ≥ 0.99",
    ),
    "argmax_accuracy": Term(
        "Classified as target",
        "Share of counterfeits whose top class is the class they were made for.",
        "top-1 = target",
    ),
    "mean_reference_confidence": Term(
        "Mean max softmax, real",
        "The model's average top probability on real reference images, for comparison.",
        "real max p",
    ),
    # -- distinct from the data --
    "msp_auroc": Term(
        "AUROC by max softmax",
        "How well the model's own top probability tells counterfeits from real images: 0.5 = "
        "not at all, under 0.5 = the counterfeits look even more confident than real images.",
        "AUROC MSP",
    ),
    "knn_feature_auroc": Term(
        "AUROC by k-NN features",
        "How well the distance to the nearest real images in the model's feature space tells "
        "counterfeits from real images: near 1 = clearly unlike the real data, 0.5 = alike.",
        "AUROC k-NN feat.",
    ),
    "knn_pixel_auroc": Term(
        "AUROC by k-NN pixels",
        "The same test on raw pixels: near 1 = the counterfeits look nothing like real images.",
        "AUROC k-NN pix.",
    ),
    "nn_distance": Term(
        "Nearest-real L2, counterfeits",
        "Mean pixel distance from each counterfeit to its nearest real image. Larger than the "
        "real images' own figure: the counterfeits do not copy the data.",
        "NN L2",
    ),
    "reference_nn_distance": Term(
        "Nearest-real L2, real",
        "Mean pixel distance from each real image to its nearest other real image: the baseline.",
        "NN L2 real",
    ),
    "train_nn_distance": Term(
        "Nearest-training L2, counterfeits",
        "Mean pixel distance from each counterfeit to its nearest training image.",
        "train L2",
    ),
    "reference_train_nn_distance": Term(
        "Nearest-training L2, real",
        "The same distance for real held-out images: the baseline.",
        "train L2 real",
    ),
    "reference_size": Term(
        "Reference images", "Real images the distinctness and detector figures compare against."
    ),
    # -- diversity --
    "pixel_diversity": Term(
        "Within-class L2, counterfeits",
        "Mean pixel distance between counterfeits of the same class: near 0 means the generator "
        "made one image over and over. " + _REAL,
        "spread",
    ),
    "reference_pixel_diversity": Term(
        "Within-class L2, real",
        "Mean pixel distance between real images of the same class: the spread to aim for.",
        "spread real",
    ),
    "feature_cosine": Term(
        "Within-class feature cosine, counterfeits",
        "Mean cosine similarity of the model's features between counterfeits of a class: near "
        "1 means the model sees them as one image. " + _REAL,
        "feat. cos",
    ),
    "reference_feature_cosine": Term(
        "Within-class feature cosine, real",
        "The same similarity between real images of a class.",
        "feat. cos real",
    ),
    "collapsed": Term(
        "Collapsed to one pattern",
        "Whether the counterfeits of a class collapsed to (nearly) one image.",
        "collapsed",
    ),
    # -- cost --
    "cost.train_seconds": Term("Training time (s)", "Wall time spent training the generator."),
    "cost.steps": Term("Training steps", "Generator training steps actually run."),
    "cost.sample_seconds": Term("Sampling time (s)", "Time to draw and score the counterfeits."),
    "cost.samples_per_second": Term("Samples per second", "Sampling throughput."),
    "cost.device": Term("Device", "Where the job ran."),
    # -- OOD detectors --
    "detector.max-softmax": Term(
        "Max softmax (MSP)",
        "Rejects inputs whose top softmax probability is low. The counterfeits are made to be "
        "confident, so this detector is expected to let them through.",
        short="max-softmax",
    ),
    "detector.energy": Term(
        "Energy",
        "Rejects inputs by the logits' free energy (−logsumexp): like max softmax, large "
        "logits fool it.",
        short="energy",
    ),
    "detector.mahalanobis": Term(
        "Mahalanobis (features)",
        "Rejects inputs whose penultimate-layer features are far from every class's mean, by a "
        "Gaussian fitted on real images.",
        short="Mahalanobis",
    ),
    "detector.knn": Term(
        "k-NN feature distance",
        "Rejects inputs whose features are far from their nearest real images.",
        short="k-NN feature-distance",
    ),
    "evasion.accepted": Term(
        "counterfeits accepted",
        "Share of counterfeits the detector lets through as normal input, at the threshold that "
        "keeps 95% of real images: high means the detector is fooled.",
    ),
    "evasion.caught": Term(
        "caught",
        "Share of counterfeits the detector rejects at the threshold that keeps 95% of real "
        "images.",
    ),
    "evasion.auroc": Term(
        "AUROC",
        "How well the detector's score separates real images from counterfeits: 1 = perfectly, "
        "0.5 = chance, under 0.5 = the counterfeits look more normal than real images.",
    ),
    "evasion.threshold": Term(
        "threshold", "The detector's score threshold, in the detector's own units."
    ),
    # -- plain c3 beside detector-aware c3 (issue 15) --
    "side_by_side.plain": Term(
        "plain c3",
        "Counterfeits made only to be classified confidently: an attacker who knows nothing of "
        "your detector.",
    ),
    "side_by_side.detector_aware": Term(
        "detector-aware c3",
        "Counterfeits made to be classified confidently and to pass the detectors marked "
        '"aimed at": an attacker who knows your detector.',
    ),
    "side_by_side.aimed": Term(
        "aimed at", "The detector-aware job was made to pass this detector."
    ),
    "side_by_side.change": Term(
        "change",
        "Detector-aware minus plain: percentage points for shares, the difference for AUROC.",
    ),
    # -- sections --
    "section.verdict": Term(
        "Verdict",
        "What the audit means for this model, in plain words, and what to do about it.",
    ),
    "section.targets": Term(
        "Audit targets",
        "Whether this audit produced what a good audit should (confident, correctly classified, "
        "varied counterfeits). A missed target weakens the audit, not the model.",
    ),
    "section.histogram": Term(
        "Confidence",
        "How many counterfeits (and real images) the model gives each top probability, on a "
        "scale that spreads out the nines: 0.9, 0.99, 0.999. Counterfeits piled at the right "
        "are confidently classified.",
    ),
    "section.evasion": Term(
        "OOD-detector evasion",
        "Would a detector of unusual inputs, set to keep 95% of real images, stop the "
        "counterfeits? Each detector's share let through, and how well it separates them.",
    ),
    "section.side_by_side": Term(
        "Plain c3 beside detector-aware c3",
        "The same detectors, fitted and thresholded on the same half of the reference set (one "
        "the detector-aware generator never saw), against plain counterfeits and against "
        "counterfeits made to pass them: how much a detector's protection rests on the attacker "
        "not knowing it.",
    ),
    "section.per_class": Term(
        "Per class",
        "The figures for each class (each column is explained under the table): a class with a low "
        "confident share was harder to counterfeit.",
    ),
    "section.curves": Term(
        "Training",
        "The generator's loss terms that take part (weight ≠ 0; lower is better) and the share "
        "of training batches classified at p ≥ 0.99, by training step.",
    ),
    "section.samples": Term(
        "Samples",
        "Counterfeits of each class with the probability the model gives the target class.",
    ),
    "section.settings": Term(
        "Settings",
        'What the job ran with; "(default)" marks what the request left to the method\'s defaults.',
    ),
}


def term(key: str) -> Term:
    """The term of `key`; an unknown figure is shown under its own name, unexplained."""
    return TERMS.get(key) or Term(key.replace("_", " ").replace(".", ": "), "")


def label_of(key: str) -> str:
    return term(key).label


def meaning(key: str) -> str:
    return term(key).meaning
