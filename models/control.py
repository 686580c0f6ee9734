"""Closed-loop control of c3's training, per class: the `adaptive` recipe (issue 10).

Every `check_every` steps the generator is *probed*: a fresh, seeded batch per trained class is
sampled exactly as it is delivered (eval mode, dropout off, quantised to 8 bits) and the
frozen classifier scores it. Per class the controller measures

- the confident share (p_y ≥ `confidence_threshold`) and the argmax share, pooled over the
  last checks until each class has at least `PROBE_EVIDENCE` probes (2 checks at 10 classes,
  4 at 100); a class *lags* when its pooled misses exceed 1% of its probes (one stray miss
  always tolerated);
- a data-free collapse signal: the mean pairwise RMS pixel distance between the class's probe
  images, ‖x_i − x_j‖₂ / √(C·H·W) over pairs i < j ("spread"). Under `diversity_floor` a
  class is *low*; under `COLLAPSE_SHARE` × the floor it is *collapsed*.

It then adapts, per class k:

- the target τ_k of the class's spread hinge max(0, τ_k − spread_k) (spread_k measured on
  the training batch, dropout on): ×`SPREAD_UP` (from at least the floor) while collapsed;
  ×`SPREAD_NUDGE` while low and not lagging; held while low and lagging (confidence first);
  ×`SPREAD_DOWN` (×`SPREAD_EASE` just above the floor) while lagging and not low. The hinge
  acts only below τ_k, so a class that is varied enough pays nothing in confidence for it;
- the feature-diversity level D_k, a factor on the paper's feature-space terms (cosine,
  orthogonality) of the class: lowered ×`D_DOWN` while it lags and is not low (the paper's
  "fade the diversity weights", closed-loop and per class), raised while collapsed;
- the pull a_k: lagging classes are drawn more often into the training batch and their KL
  term weighs more (×`PULL_UP` per lagging check, up to `PULL_MAX`; back towards 1 after).

Between checks, every step tells the controller how far each class of its batch is from
confident (`record`: the class's need, a running mean of min(1, (1 − p_y) / (1 − threshold))
over its training samples). When the classes do not all fit in a batch (100 in a batch of
64: 32 drawn per step), they are drawn in proportion to pull × (`NEED_FLOOR` + need): the
batch goes where the shortfall is, step by step, instead of spreading evenly over classes
that are already confident until a check (every 50 steps, on evidence pooled over 200)
notices the laggards. With few classes every class is in every batch and only the pull
shares the spare slots.

Training stops when, at two consecutive checks, no class is collapsed, the mean spread is at
least the floor, the overall confident share meets the target, and on the pooled probes no
class lags, the overall confident share is ≥ target + `OVERALL_MARGIN` and the argmax share
meets its target; else when the step budget is spent (`models.training.train`).

Detector-aware c3 (`models.feature_prior`) adds one more per-class weight, the prior gain g_k
on the class's feature-prior hinges: up while the aimed detectors (at 95% TPR) still reject too
many of its probes and the class keeps its confidence, down while it lags; the stop then also
waits (a bounded number of checks) for every class to be accepted enough or at its maximum
gain (`_adapt_prior`).

Why RMS pixel spread against a floor (evidence: `bench/zoo.py` prints, over every member,
method and class it ran, how the data-free rule compares with the audit's "collapsed" flag
measured against real images; docs/engine.md has the figures). The audit flags a class when
its pixel diversity is under half its real images'. Real within-class diversity of every
digits variant in the zoo is 0.15–0.27 RMS per pixel (mean 0.22: grey, tinted RGB, 64×64 and
the 100 pair classes alike), so half of it is at most 0.135 and the mean target (0.8× real)
is about 0.18: with a floor of 0.18 and "collapsed" under 0.144, a class the controller lets
through is clear of the audit's flag without seeing real data. The feature-space terms cannot
supply this signal: on networks whose features decorrelate under tiny pixel changes (BatchNorm
+ GELU, ViT, MobileNet-style) collapsed classes still have low feature cosine.

All state (τ, D, a, the probe window, pass counter, last report, whether training finished)
is in `state_dict()`; probes draw from their own seeded generators and never touch the
method's RNGs, so a run resumed from any checkpoint ends exactly as an uninterrupted one (CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.nn import functional as F

__all__ = [
    "ClassController",
    "ControlSettings",
    "ProbeReport",
    "class_diversity",
    "probe_seed",
    "quantise",
]

D_START = 1.0  # feature-diversity level: the paper's weights at first ...
D_UP = 1.5  # ... raised while collapsed (up to D_MAX) ...
D_RESTART = 0.25  # (from at least this)
D_DOWN = 0.7  # ... lowered while lagging in confidence and clearly not collapsed
D_MAX = 1.0
D_ZERO = 0.02  # below this D is 0 (and the class's feature terms are not computed)
SPREAD_UP = 1.25  # pixel-spread target τ: ×1.25 while collapsed (from at least the floor) ...
SPREAD_DOWN = 0.8  # ... ×0.8 while lagging and clearly varied (≥ HEADROOM × floor) ...
SPREAD_EASE = 0.9  # ... ×0.9 while lagging and just above the floor ...
SPREAD_NUDGE = 1.1  # ... ×1.1 while under the floor but not collapsed, if not lagging
SPREAD_MAX = 0.6
FOCUS_SLACK = 0.01  # KL sample weight 1 / (1 − p_y + this): see the methods' adaptive loss
HEADROOM = 1.25  # "clearly not collapsed": probe diversity at least this × the floor
PULL_UP = 1.5
PULL_MAX = 4.0
NEED_FLOOR = 0.1  # a class at its target is still drawn this much (vs 1 + this when far off)
NEED_RATE = 0.3  # weight of a step's measurement in a class's running need
CLASS_MARGIN = 0.02  # pooled probes must beat the per-class target by this (0.97 → 0.99)
OVERALL_MARGIN = 0.005  # ... and the overall one by this (0.99 → 0.995)
PASSES_TO_STOP = 2  # consecutive checks with every target met, on their pooled probes
PROBE_BUDGET = 1280  # probe samples per check, spread over the classes ...
PROBE_MIN, PROBE_MAX = 8, 64  # ... at least / at most this many per class
PROBE_EVIDENCE = 48  # per-class decisions pool checks until a class has this many probes
CONFIRM_EVIDENCE = 96  # fresh probes per class that confirm a stop (at least a check's worth)
MANY_CLASSES = 32  # beyond this many classes the confirmation tolerates one more miss per
# class: with 100 classes at 0.3% misses (each delivers >= 97% of 100 in 99.97% of draws)
# some class shows 2 in its 108 probes 98.6% of the time, 3 only 36%
PRIOR_REJECTED = 0.5  # detector-aware c3: an aimed detector (at 95% TPR) may reject this share
# of a class's probes (the target: it accepts >= 50%); beyond it, and while the class keeps
# its confidence, the class's prior gain rises ×PRIOR_UP (to PRIOR_MAX); while it lags,
# ×PRIOR_DOWN
PRIOR_UP, PRIOR_DOWN = 1.5, 0.7
PRIOR_MIN, PRIOR_MAX = 1.0, 3.0  # never under the job's own weight: early on every class lags
PRIOR_PATIENCE = 4  # checks the prior may hold back a stop the confidence targets allow
COLLAPSE_SHARE = 0.8  # a class is collapsed (blocks the stop) under this × the floor; under
# the floor itself it is only "low" (its spread target rises), and the stop also needs the
# mean over classes at or above the floor


def quantise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images as the 8-bit PNGs hold them (rounded to multiples of 1/255)."""
    return (images.clamp(0.0, 1.0) * 255.0).round() / 255.0


def probe_seed(seed: int, step: int) -> int:
    """The seed of the probe batch at `step`: fresh per check, independent of training RNGs."""
    return (int(seed) * 1_000_003 + int(step) * 7_919 + 17) % (2**62)


def class_diversity(
    images: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Mean pairwise RMS pixel distance within each class (len(classes),); 0 with < 2 images."""
    pixels = images[0].numel() if len(images) else 1
    out = torch.zeros(len(classes), dtype=torch.float64)
    flat = images.flatten(1).double()
    for index, k in enumerate(classes.tolist()):
        members = flat[labels == k]
        if members.shape[0] >= 2:
            out[index] = torch.pdist(members).mean() / math.sqrt(pixels)
    return out


@dataclass(frozen=True)
class ControlSettings:
    """The controller's targets (from `InversionConfig`) and cadence."""

    check_every: int = 50
    probe_per_class: int = 0  # 0: clamp(PROBE_BUDGET // K, PROBE_MIN, PROBE_MAX)
    confidence_threshold: float = 0.99
    target_confident_share: float = 0.99
    target_class_confident_share: float = 0.97
    target_argmax_share: float = 0.995
    diversity_floor: float = 0.18

    @classmethod
    def from_config(cls, config: Any) -> ControlSettings:
        return cls(
            check_every=config.check_every,
            probe_per_class=config.probe_per_class,
            confidence_threshold=config.confidence_threshold,
            target_confident_share=config.target_confident_share,
            target_class_confident_share=config.target_class_confident_share,
            target_argmax_share=config.target_argmax_share,
            diversity_floor=config.diversity_floor,
        )

    def probes_for(self, classes: int) -> int:
        if self.probe_per_class > 0:
            return self.probe_per_class
        return max(PROBE_MIN, min(PROBE_MAX, PROBE_BUDGET // max(1, classes)))

    def confirm_for(self, classes: int) -> int:
        """Fresh probes per class in the batch that confirms a stop: CONFIRM_EVIDENCE, so that
        a class whose true miss rate is 3% passes about one time in twenty (pooled with the
        check's own 64 probes, ≤ 1% misses), where 64 more let it through one time in ten and
        a delivered class of 100 then fell to 94% (paper-cnn retrained on another machine)."""
        return max(self.probes_for(classes), CONFIRM_EVIDENCE)

    @property
    def class_target(self) -> float:
        """The per-class target the probes must meet (0 stays 0: no target)."""
        share = self.target_class_confident_share
        return min(1.0, share + CLASS_MARGIN) if share > 0 else 0.0

    @property
    def overall_target(self) -> float:
        share = self.target_confident_share
        return min(1.0, share + OVERALL_MARGIN) if share > 0 else 0.0


@dataclass(frozen=True)
class ProbeReport:
    """What one check measured and decided (per probed class, in `classes` order)."""

    step: int
    classes: tuple[int, ...]
    confident: tuple[float, ...]  # share at p_y ≥ threshold
    argmax: tuple[float, ...]
    diversity: tuple[float, ...]  # mean pairwise RMS pixel distance
    collapsed: tuple[bool, ...]  # diversity < COLLAPSE_SHARE × floor (blocks the stop)
    lagging: tuple[bool, ...]  # pooled misses over 1% of the class's probes (and > 1)
    diversity_weight: tuple[float, ...]  # D_k after this check
    spread_target: tuple[float, ...]  # τ_k after this check
    pull: tuple[float, ...]  # a_k after this check
    overall_confident: float
    overall_argmax: float
    targets_met: bool  # on this check's probes pooled with the previous check's
    passes: int  # consecutive checks with targets_met
    finished: bool
    prior_rejected: tuple[float, ...] = ()  # detector-aware: share an aimed detector rejects
    # (1 for every class of a data-free prior: nothing to score the probes against)
    prior_gain: tuple[float, ...] = ()  # ... and g_k after this check (empty without a prior)

    def to_dict(self) -> dict[str, Any]:
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}


class ClassController:
    """Per-class diversity levels and pulls, the stopping rule, and class-balanced batches."""

    def __init__(self, num_classes: int, settings: ControlSettings) -> None:
        self.num_classes = num_classes
        self.settings = settings
        self.diversity_weight = torch.full((num_classes,), D_START, dtype=torch.float64)
        self.spread_target = torch.full(
            (num_classes,), settings.diversity_floor, dtype=torch.float64
        )
        self.pull = torch.ones(num_classes, dtype=torch.float64)
        self.need = torch.ones(num_classes, dtype=torch.float64)  # see `record`
        self.prior_gain = torch.ones(num_classes, dtype=torch.float64)  # see `_adapt_prior`
        self.prior_waits = 0  # checks the prior has held back a stop
        self.passes = 0
        self.finished = False
        self.candidate = False  # the last check met the targets, awaiting `confirm`
        self.checks = 0
        # (per-class hits, argmax hits, probes) and "a class collapsed", last checks
        self.window: list[tuple[torch.Tensor, bool]] = []
        self.last_report: ProbeReport | None = None

    # -- decisions ------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        return not self.finished and step > 0 and step % self.settings.check_every == 0

    def observe(
        self,
        step: int,
        labels: torch.Tensor,
        images: torch.Tensor,
        logits: torch.Tensor,
        rejected: torch.Tensor | None = None,
    ) -> ProbeReport:
        """Measure probe images (n, C, H, W) aimed at labels (n,), adapt, decide to stop.

        `rejected` (n,), detector-aware runs only: at least one aimed feature detector would
        reject the probe (`FeaturePrior.rejected`, `_adapt_prior`)."""
        s = self.settings
        labels = labels.cpu()
        classes = torch.unique(labels)  # sorted
        probs = F.softmax(logits.detach().double().cpu(), dim=1)  # (n, K)
        p_target = probs.gather(1, labels[:, None]).squeeze(1)  # (n,)
        confident_hit = (p_target >= s.confidence_threshold).double()
        argmax_hit = (probs.argmax(dim=1) == labels).double()
        diversity = class_diversity(images.cpu(), labels, classes)
        confident = torch.stack([confident_hit[labels == k].mean() for k in classes])
        argmax = torch.stack([argmax_hit[labels == k].mean() for k in classes])
        low = diversity < s.diversity_floor
        collapsed = diversity < COLLAPSE_SHARE * s.diversity_floor
        overall_confident = float(confident_hit.mean())
        overall_argmax = float(argmax_hit.mean())
        # Per-class evidence pools this check with the previous ones (fresh probes each), so
        # that every class has at least PROBE_EVIDENCE probes (2 checks for 10 classes,
        # 4 for 100): a class lags when its pooled misses exceed 1% of them, one stray miss
        # always tolerated. Lagging drives the adaptation and blocks the stop.
        counts = torch.zeros(3, self.num_classes, dtype=torch.float64)  # hits, argmax, total
        counts[0].index_add_(0, labels, confident_hit)
        counts[1].index_add_(0, labels, argmax_hit)
        counts[2].index_add_(0, labels, torch.ones_like(confident_hit))
        per_class = max(1, len(labels) // max(1, len(classes)))
        window = max(PASSES_TO_STOP, math.ceil(PROBE_EVIDENCE / per_class))
        # A check fails on its own when a class collapsed, the mean spread is under the
        # floor, or the overall confident share is under the target.
        failed = (
            bool(collapsed.any())
            or float(diversity.mean()) < s.diversity_floor
            or overall_confident < s.target_confident_share
        )
        self.window = [*self.window, (counts, failed)][-window:]
        pooled = sum((c for c, _ in self.window), torch.zeros_like(counts))  # (3, K)
        misses = (pooled[2] - pooled[0])[classes]  # (k,)
        allowed = torch.clamp((1.0 - s.class_target) * pooled[2][classes], min=1.0).floor()
        lagging = misses > allowed if s.class_target > 0 else torch.zeros_like(low)
        for index, k in enumerate(classes.tolist()):
            d, tau = float(self.diversity_weight[k]), float(self.spread_target[k])
            spread = float(diversity[index])
            if bool(collapsed[index]):  # under COLLAPSE_SHARE × floor: diversity first
                d = min(D_MAX, max(d * D_UP, D_RESTART))
                tau = min(SPREAD_MAX, max(tau * SPREAD_UP, s.diversity_floor))
            elif bool(low[index]):  # between: nudge up, unless confidence lags (then hold)
                if not bool(lagging[index]):
                    tau = min(SPREAD_MAX, max(tau * SPREAD_NUDGE, s.diversity_floor))
            elif bool(lagging[index]):  # varied enough and lagging: confidence first
                d = d * D_DOWN
                d = 0.0 if d < D_ZERO else d
                tau = tau * (SPREAD_DOWN if spread >= s.diversity_floor * HEADROOM else SPREAD_EASE)
            self.diversity_weight[k] = d
            self.spread_target[k] = tau
            a = float(self.pull[k])
            a = min(PULL_MAX, a * PULL_UP) if bool(lagging[index]) else max(1.0, a / PULL_UP)
            self.pull[k] = a
        total = float(pooled[2].sum())
        met = (
            len(self.window) >= PASSES_TO_STOP
            and not any(flag for _, flag in self.window[-PASSES_TO_STOP:])
            and not bool(lagging.any())
            and float(pooled[0].sum()) / total >= s.overall_target
            and float(pooled[1].sum()) / total >= s.target_argmax_share
        )
        prior_rejected: tuple[float, ...] = ()
        if rejected is not None:
            shares = torch.stack([rejected.cpu()[labels == k].double().mean() for k in classes])
            met = self._adapt_prior(classes, shares, lagging, met)
            prior_rejected = tuple(float(v) for v in shares)
        self.passes = self.passes + 1 if met else 0
        self.candidate = met  # the method confirms on the same generator state (`confirm`)
        self.checks += 1
        picked = classes.tolist()
        self.last_report = ProbeReport(
            step=step,
            classes=tuple(picked),
            confident=tuple(float(v) for v in confident),
            argmax=tuple(float(v) for v in argmax),
            diversity=tuple(float(v) for v in diversity),
            collapsed=tuple(bool(v) for v in collapsed),
            lagging=tuple(bool(v) for v in lagging),
            diversity_weight=tuple(float(self.diversity_weight[k]) for k in picked),
            spread_target=tuple(float(self.spread_target[k]) for k in picked),
            pull=tuple(float(self.pull[k]) for k in picked),
            overall_confident=overall_confident,
            overall_argmax=overall_argmax,
            targets_met=met,
            passes=self.passes,
            finished=self.finished,
            prior_rejected=prior_rejected,
            prior_gain=tuple(float(self.prior_gain[k]) for k in picked) if prior_rejected else (),
        )
        return self.last_report

    def _adapt_prior(
        self, classes: torch.Tensor, rejected: torch.Tensor, lagging: torch.Tensor, met: bool
    ) -> bool:
        """Detector-aware c3: adapt each class's prior gain g_k and say whether the stop may go
        ahead.

        One prior weight does not fit every classifier (a ResNet's features need three times
        the pull that costs a GELU net its confidence), so the weight is closed-loop per class
        like the pull: g_k rises while an aimed detector rejects more than PRIOR_REJECTED of
        the class's probes and the class keeps its confidence, falls back towards the job's own
        weight (1) while it lags (confidence first; the margin gate already spares unconfident
        samples). The stop waits for every class to be accepted enough or at PRIOR_MAX, for at
        most PRIOR_PATIENCE checks once the confidence targets hold."""
        for index, k in enumerate(classes.tolist()):
            g = float(self.prior_gain[k])
            if bool(lagging[index]):
                g = max(PRIOR_MIN, g * PRIOR_DOWN)
            elif float(rejected[index]) > PRIOR_REJECTED:
                g = min(PRIOR_MAX, g * PRIOR_UP)
            self.prior_gain[k] = g
        settled = all(
            float(share) <= PRIOR_REJECTED or float(self.prior_gain[k]) >= PRIOR_MAX
            for share, k in zip(rejected, classes.tolist(), strict=True)
        )
        if not met or settled:
            return met
        self.prior_waits += 1
        return self.prior_waits > PRIOR_PATIENCE

    def confirm(
        self, labels: torch.Tensor, images: torch.Tensor, logits: torch.Tensor
    ) -> ProbeReport:
        """A second probe batch on the generator of the check that met the targets.

        The pooled window mixes generator states of successive checks; the delivered samples
        come from the last one. So the stop needs this check's probes pooled with a fresh
        batch from the same state to meet the per-class and overall targets again, and no
        class collapsed in it. Returns the last report with `finished` set accordingly.
        """
        if not self.candidate or self.last_report is None:
            raise RuntimeError("confirm() follows a check that met the targets")
        s = self.settings
        labels = labels.cpu()
        classes = torch.unique(labels)
        probs = F.softmax(logits.detach().double().cpu(), dim=1)
        hit = (probs.gather(1, labels[:, None]).squeeze(1) >= s.confidence_threshold).double()
        counts = self.window[-1][0].clone()
        counts[0].index_add_(0, labels, hit)
        counts[2].index_add_(0, labels, torch.ones_like(hit))
        misses = (counts[2] - counts[0])[classes]
        allowed = torch.clamp((1.0 - s.class_target) * counts[2][classes], min=1.0).floor()
        allowed = allowed + int(len(classes) > MANY_CLASSES)
        collapsed = class_diversity(images.cpu(), labels, classes) < (
            COLLAPSE_SHARE * s.diversity_floor
        )
        self.finished = (
            not bool((misses > allowed).any())
            and float(counts[0].sum() / counts[2].sum()) >= s.overall_target
            and not bool(collapsed.any())
        )
        self.candidate = False
        if not self.finished:
            self.passes = 0
        report = self.last_report
        self.last_report = ProbeReport(
            **{
                **{f: getattr(report, f) for f in report.__dataclass_fields__},
                "passes": self.passes,
                "finished": self.finished,
            }
        )
        return self.last_report

    # -- batches ----------------------------------------------------------------------------
    def record(self, labels: torch.Tensor, p_target: torch.Tensor) -> None:
        """A training step's confidences p_y (n,) for labels (n,): update each present class's
        need, a running mean of min(1, (1 − p_y) / (1 − threshold)) (1: at or under the
        threshold, 0: certain), which weighs how often the class is drawn next."""
        labels = labels.cpu()
        slack = 1.0 - self.settings.confidence_threshold
        shortfall = ((1.0 - p_target.detach().double().cpu()) / slack).clamp(max=1.0)  # (n,)
        sums = torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, labels, shortfall)
        counts = torch.bincount(labels, minlength=self.num_classes).double()
        present = counts > 0
        measured = sums[present] / counts[present]
        self.need[present] = (1.0 - NEED_RATE) * self.need[present] + NEED_RATE * measured

    def draw_labels(
        self, pool: torch.Tensor, batch_size: int, rng: torch.Generator
    ) -> torch.Tensor:
        """A batch of labels from `pool`, at least 2 per drawn class.

        When every class fits twice (2·|pool| ≤ batch), each gets 2 and the rest is shared
        in proportion to the pulls (largest remainders drawn at random). Otherwise
        batch // 2 classes are drawn without replacement with probability ∝ pull ×
        (NEED_FLOOR + need), 2 each (so the per-class diversity terms always have pairs):
        which classes get in at all is then what decides, so it follows every step's need.
        Deterministic under `rng`.
        """
        pool = pool.long().flatten().cpu()
        weights = self.pull[pool].double()
        k = pool.numel()
        counts = torch.zeros(k, dtype=torch.long)
        if 2 * k <= batch_size:
            share = (batch_size - 2 * k) * weights / weights.sum()  # (k,)
            counts = 2 + share.floor().long()
            left = batch_size - int(counts.sum())
            if left > 0:
                remainder = (share - share.floor()) + 1e-9
                counts[torch.multinomial(remainder, left, replacement=False, generator=rng)] += 1
        else:
            weights = weights * (NEED_FLOOR + self.need[pool])
            drawn = torch.multinomial(weights, batch_size // 2, replacement=False, generator=rng)
            counts[drawn] = 2
            if batch_size % 2:
                counts[drawn[0]] += 1
        labels = pool.repeat_interleave(counts)  # (batch,)
        return labels[torch.randperm(batch_size, generator=rng)]

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "diversity_weight": self.diversity_weight.clone(),
            "spread_target": self.spread_target.clone(),
            "pull": self.pull.clone(),
            "need": self.need.clone(),
            "prior_gain": self.prior_gain.clone(),
            "prior_waits": self.prior_waits,
            "passes": self.passes,
            "window": [(c.clone(), flag) for c, flag in self.window],
            "finished": self.finished,
            "candidate": self.candidate,
            "checks": self.checks,
            "last_report": None if self.last_report is None else self.last_report.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.diversity_weight = state["diversity_weight"].clone().double()
        self.spread_target = state["spread_target"].clone().double()
        self.pull = state["pull"].clone().double()
        need = state.get("need")  # checkpoints from before issue 17: every class in need
        self.need = torch.ones_like(self.pull) if need is None else need.clone().double()
        gain = state.get("prior_gain")  # checkpoints from before the prior's closed loop
        self.prior_gain = torch.ones_like(self.pull) if gain is None else gain.clone().double()
        self.prior_waits = int(state.get("prior_waits", 0))
        self.passes = int(state["passes"])
        self.window = [(c.clone(), bool(flag)) for c, flag in state["window"]]
        self.finished = bool(state["finished"])
        self.candidate = bool(state["candidate"])
        self.checks = int(state["checks"])
        report = state.get("last_report")
        self.last_report = None if report is None else _report_from_dict(report)


def _report_from_dict(data: dict[str, Any]) -> ProbeReport:
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return ProbeReport(**values)
