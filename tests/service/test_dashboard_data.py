"""The figures behind the dashboard and the report (service.plots, service.report)."""

from __future__ import annotations

import math

import pytest

from models.contracts.artifacts import (
    ClassMetrics,
    Cost,
    DetectorResult,
    EvasionTable,
    InversionMetrics,
)
from service import glossary, plots, report

# --- plots ------------------------------------------------------------------------------------


def test_nines_scale() -> None:
    assert plots.nines([0.0, 0.9, 0.99, 0.999]) == pytest.approx([0, 1, 2, 3])
    assert plots.nines([1.0])[0] == plots.NINES_MAX  # p = 1 (saturated float32) is clipped


def test_histogram_counts_every_value_in_shared_bins() -> None:
    hist = plots.confidence_histogram(
        [("fake", [0.5, 0.95, 0.995, 1.0]), ("real", [0.9, 0.9])], bins_per_nine=1
    )
    assert hist.labels == ["fake", "real"]
    assert hist.edges[:3] == pytest.approx([0.0, 0.9, 0.99])
    assert hist.counts[0] == [1, 1, 1, 0, 0, 1]  # 1.0 falls in the last bin
    assert hist.counts[1] == [0, 2, 0, 0, 0, 0]  # 0.9 opens the second bin
    assert hist.shares[1][1] == 1.0
    svg = str(plots.histogram_svg(hist))
    assert svg.count('class="bar s0"') == 4  # one bar per non-empty bin
    assert svg.count('class="bar s1"') == 1


def test_svg_escapes_every_label() -> None:
    hist = plots.confidence_histogram([("<script>x</script>", [0.99])])
    svg = str(plots.histogram_svg(hist))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    panel = str(plots.line_panel_svg("loss: <b>", [(1, 2.0), (2, 0.01)]))
    assert "<b>" not in panel
    assert "log scale" in panel  # two decades of loss
    bars = str(plots.bars_svg([("a&b", 0.5)], title="t"))
    assert "a&amp;b" in bars
    assert "50.0%" in bars


def test_line_panel_thins_long_series_and_survives_no_data() -> None:
    points = [(float(i), 1.0 + i % 3) for i in range(5000)]
    svg = str(plots.line_panel_svg("total", points))
    assert svg.count("L") <= plots.MAX_POINTS + 1
    assert "no data" in str(plots.line_panel_svg("total", [(1.0, math.nan)]))


# --- report figures ---------------------------------------------------------------------------


def test_figures_are_formatted_by_kind() -> None:
    assert report.fmt("confident_share", 0.9987) == "99.9%"
    assert report.fmt("msp_auroc", 0.123456) == "0.1235"
    assert report.fmt("count", 1000) == "1,000"
    assert report.fmt("cost.samples_per_second", 25180.4) == "25,180"
    assert report.fmt("knn_pixel_auroc", None) == "—"
    assert report.fmt("collapsed", False) == "no"
    assert report.fmt("seed", 1_013_228_889) == "1013228889"  # a name, not a quantity
    assert report.fmt_delta("confident_share", -0.25, 0.9) == "-25.0 pp"
    assert report.fmt_delta("confident_share", 1e-5, 0.9) == "±0 pp"
    assert report.fmt_delta("nn_distance", 1.5, 4.0) == "+1.500"
    # to the precision the figures are shown with (four significant digits), never exponents
    assert report.fmt_delta("mean_confidence", -1.685e-05, 0.9991) == "±0"
    assert report.fmt_delta("mean_confidence", -1.685e-04, 0.9991) == "-0.0002"
    assert report.fmt_delta("feature_cosine", 0.0123, 0.0456) == "+0.01230"
    assert report.fmt_delta("cost.samples_per_second", -1234.5, 25180.0) == "-1,234"
    assert glossary.label_of("cost.train_seconds") == "Training time (s)"
    assert glossary.label_of("brand_new_figure") == "brand new figure"


def test_per_class_table_is_in_class_order_and_drops_empty_columns() -> None:
    names = ["zero", "one", "two"]
    metrics = InversionMetrics(
        overall=ClassMetrics(count=3),
        per_class={
            "two": ClassMetrics(count=2, confident_share=0.5),
            "zero": ClassMetrics(count=1, confident_share=1.0),
        },
    )
    table = report.per_class_table(metrics, names)
    assert table.columns == ["count", "confident_share"]
    assert table.formatted() == [("0 · zero", ["1", "100.0%"]), ("2 · two", ["2", "50.0%"])]


def test_evasion_rows_show_what_could_not_be_computed_as_a_dash() -> None:
    ood = EvasionTable(
        tpr=0.95, reference_fit=2, reference_eval=2, counterfeits=3,
        detectors=[DetectorResult(name="knn", auroc=math.nan, accepted_share=1 / 3,
                                  threshold=-0.25)],
    )  # fmt: skip
    assert report.evasion_rows(ood) == [
        {"name": "knn", "label": "k-NN feature distance", "accepted": "33.3%", "auroc": "—",
         "threshold": "-0.25", "meaning": glossary.meaning("detector.knn")}
    ]  # fmt: skip
    assert "33.3%" in str(report.evasion_bars(ood))


def test_overall_figures_include_cost_and_skip_what_was_not_computed() -> None:
    metrics = InversionMetrics(
        overall=ClassMetrics(count=10), per_class={}, cost=Cost(train_seconds=2.0)
    )
    assert report.overall_figures(metrics) == {"count": 10, "cost.train_seconds": 2.0}
    assert "msp_auroc" in report.overall_figures(metrics, keep_empty=True)


def test_curves_show_active_terms_only_and_one_panel_for_identical_ones() -> None:
    """A term whose weight is 0 is not plotted; kl and ce under one-hot targets (the same
    numbers) share one panel."""
    steps = [(10.0, 2.0), (20.0, 1.0)]
    curves = report.Curves(
        losses={"total": [(10.0, 2.5), (20.0, 1.2)], "kl": steps, "ce": list(steps),
                "cosine": [(10.0, 0.3), (20.0, 0.2)], "tv": [(10.0, 0.0), (20.0, 0.0)]},
    )  # fmt: skip
    titles = [
        str(p).split("<title>")[0] for p in curves.panels({"kl": 1.0, "ce": 1.0, "cosine": 0.1})
    ]
    text = " ".join(titles)
    assert "loss: total" in text
    assert "loss: ce = kl" in text
    assert "loss: cosine" in text
    assert "loss: tv" not in text
    assert len(curves.panels({"kl": 1.0, "ce": 1.0, "cosine": 0.1})) == 3
    assert len(curves.panels()) == 4  # everything, duplicates still merged
