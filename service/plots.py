"""Plots as hand-written SVG: a confidence histogram, loss curves and horizontal bars.

No plotting library: the API image stays small, and a page with plots renders in a few
milliseconds. Every function returns `Markup` that is safe to inline in a template: all text
that reaches the SVG (class names, loss names, series labels) is escaped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np
from markupsafe import Markup

NINES_MAX = 6.0
"""The confidence axis runs from p = 0 to p = 1 − 10⁻⁶ in "nines" (−log10(1 − p)): counterfeits
and real images alike sit above 0.99, where a linear axis would show one bar."""

PALETTE = ("#c2255c", "#1971c2", "#2f9e44", "#e8590c", "#6741d9", "#0c8599", "#5c940d")
FONT = 'font-family="system-ui, sans-serif" font-size="11"'
MAX_POINTS = 400  # points drawn per line; longer series are thinned evenly


def nines(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """−log10(1 − p), clipped to [0, NINES_MAX]: 0.9 → 1, 0.99 → 2, 0.999 → 3."""
    q = np.clip(1.0 - np.asarray(p, dtype=np.float64), 10.0**-NINES_MAX, 1.0)
    return np.clip(-np.log10(q), 0.0, NINES_MAX)


@dataclass(frozen=True)
class Histogram:
    """Counts of values over shared bins; `edges` are probabilities (len(counts[i]) + 1)."""

    edges: list[float]
    labels: list[str]
    counts: list[list[int]]

    @property
    def shares(self) -> list[list[float]]:
        return [[c / max(sum(cs), 1) for c in cs] for cs in self.counts]


def confidence_histogram(
    series: Sequence[tuple[str, Sequence[float] | np.ndarray]], bins_per_nine: int = 4
) -> Histogram:
    """Histogram of probabilities on the "nines" scale, shared bins for every series."""
    n_bins = int(NINES_MAX * bins_per_nine)
    edges_nines = np.linspace(0.0, NINES_MAX, n_bins + 1)
    counts = []
    for _, values in series:
        hist, _ = np.histogram(nines(values), bins=edges_nines)
        counts.append([int(c) for c in hist])
    edges = [float(1.0 - 10.0**-e) for e in edges_nines]
    return Histogram(edges=edges, labels=[label for label, _ in series], counts=counts)


def _nines_label(e: float) -> str:
    if e == 0:
        return "0"
    if e <= 4:
        return "0." + "9" * int(e)
    return f"1−1e-{int(e)}"


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" {FONT}>'
        f"<title>{escape(label)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")


def _legend(labels: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, label in enumerate(labels):
        colour = PALETTE[i % len(PALETTE)]
        yy = y + 14 * i
        out.append(
            f'<rect x="{x:.1f}" y="{yy - 8:.1f}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14:.1f}" y="{yy + 1:.1f}">{escape(label)}</text>'
        )
    return out


def histogram_svg(hist: Histogram, *, width: int = 520, height: int = 230) -> Markup:
    """Bars of each series side by side per bin, as the share of that series' images."""
    left, right, top, bottom = 44, 26, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    shares = hist.shares
    n_bins = len(hist.edges) - 1
    peak = max((max(s) for s in shares if s), default=0.0) or 1.0
    peak = min(1.0, math.ceil(peak * 10) / 10)
    body = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#495057"/>'
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        body.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{peak * frac:.0%}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            'stroke="#dee2e6" stroke-dasharray="2 3"/>'
        )
    bin_w = plot_w / max(n_bins, 1)
    bar_w = bin_w / max(len(shares), 1)
    for s, (label, series) in enumerate(zip(hist.labels, shares, strict=True)):
        colour = PALETTE[s % len(PALETTE)]
        for b, share in enumerate(series):
            if share <= 0:
                continue
            h = plot_h * min(share / peak, 1.0)
            x = left + b * bin_w + s * bar_w
            tip = (
                f"{label}: {hist.counts[s][b]} images ({share:.1%}) with "
                f"{hist.edges[b]:.6g} ≤ p < {hist.edges[b + 1]:.6g}"
            )
            body.append(
                f'<rect class="bar s{s}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{max(bar_w - 0.5, 0.5):.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(tip)}</title></rect>"
            )
    for nine in range(int(NINES_MAX) + 1):
        x = left + plot_w * nine / NINES_MAX
        body.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 4}" '
            'stroke="#495057"/>'
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
            f"{_nines_label(nine)}</text>"
        )
    body.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        "max softmax probability (axis in nines: −log10(1 − p))</text>"
    )
    body += _legend(hist.labels, left + 8, top + 10)
    return _svg(width, height, "Confidence histogram: " + ", ".join(hist.labels), body)


def _thin(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return list(points)
    stride = len(points) / MAX_POINTS
    kept = [points[int(i * stride)] for i in range(MAX_POINTS)]
    return [*kept, points[-1]]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.1e}"
    return f"{v:.3g}"


def line_panel_svg(
    title: str,
    points: Sequence[tuple[float, float]],
    *,
    y_range: tuple[float, float] | None = None,
    colour: str = PALETTE[1],
    width: int = 260,
    height: int = 150,
) -> Markup:
    """One line over training steps; log y-axis when the values are positive and span more
    than a decade (losses fall by orders of magnitude), linear otherwise."""
    left, right, top, bottom = 48, 10, 20, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    pts = [(x, y) for x, y in points if math.isfinite(y)]
    body = [f'<text x="{left}" y="13" font-weight="600">{escape(title)}</text>']
    if not pts:
        body.append(f'<text x="{left}" y="{top + plot_h / 2}">no data</text>')
        return _svg(width, height, title, body)
    xs = [x for x, _ in pts]
    ys = [y for _, y in pts]
    lo, hi = y_range or (min(ys), max(ys))
    log = y_range is None and lo > 0 and hi / lo > 10
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = min(xs), max(xs)
    span_x = (x1 - x0) or 1.0

    def sx(x: float) -> float:
        return left + plot_w * (x - x0) / span_x

    def sy(y: float) -> float:
        v = math.log10(y) if log else y
        return top + plot_h * (1 - (v - lo) / (hi - lo))

    for v in (lo, hi):
        label = _fmt(10**v if log else v)
        y = top + plot_h * (1 - (v - lo) / (hi - lo))
        body.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            'stroke="#dee2e6" stroke-dasharray="2 3"/>'
        )
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#495057"/>'
        f'<text x="{left}" y="{height - 8}">{x0:g}</text>'
        f'<text x="{left + plot_w}" y="{height - 8}" text-anchor="end">{x1:g} steps</text>'
    )
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(_thin(pts))
    )
    body.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    if log:
        body.append(
            f'<text x="{left + plot_w}" y="13" text-anchor="end" fill="#868e96">log scale</text>'
        )
    return _svg(width, height, f"{title} over training steps", body)


def bars_svg(
    rows: Sequence[tuple[str, float]],
    *,
    title: str,
    maximum: float = 1.0,
    percent: bool = True,
    width: int = 420,
) -> Markup:
    """Horizontal bars, one per row (e.g. the share of counterfeits each detector accepts)."""
    left, right, row_h, top = 150, 50, 20, 22
    height = top + row_h * len(rows) + 6
    plot_w = width - left - right
    body = [f'<text x="4" y="13" font-weight="600">{escape(title)}</text>']
    for i, (label, value) in enumerate(rows):
        y = top + i * row_h
        w = plot_w * max(0.0, min(value / maximum, 1.0)) if maximum else 0.0
        text = f"{value:.1%}" if percent else _fmt(value)
        body.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{plot_w}" height="{row_h - 6}" fill="#f1f3f5"/>'
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{left + plot_w + 4}" y="{y + 13}">{text}</text>'
        )
    return _svg(width, height, title, body)
