"""`c3 invert` end to end on tiny configs (ONNX and safetensors uploads)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.cli import main
from models.contracts.artifacts import AuditFigures, InversionMetrics, SampleIndex, SamplesArrays
from models.contracts.inversion import InversionConfig
from tests import factories


@pytest.mark.parametrize("method", ["c3", "pixel"])
def test_invert_onnx_with_reference_writes_everything(tmp_path: Path, method: str) -> None:
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(factories.trained_onnx_bytes("paper-cnn", (1, 28, 28), dynamo=False))
    reference = tmp_path / "heldout.npz"
    reference.write_bytes(factories.digits_reference_npz((1, 28, 28), per_class=8))
    out = tmp_path / "out"
    tiny = json.dumps({"steps": 4, "batch_size": 16, "latent_dim": 8, "width": 8})
    code = main(
        [
            "invert",
            "--classifier",
            str(model_path),
            "--method",
            method,
            "--method-config",
            tiny,
            "--per-class",
            "2",
            "--out",
            str(out),
            "--reference",
            str(reference),
            "--quiet",
        ]
    )
    assert code == 0
    # The service's artifacts, with the same schema, plus the PNGs of its zip export.
    samples = SampleIndex.validate_json((out / "samples.json").read_bytes())
    assert len(samples) == 20
    assert len(samples[0].top_k) == 5
    arrays = SamplesArrays.from_npz((out / "samples.npz").read_bytes())
    assert arrays.x.shape == (20, 1, 28, 28)
    png = np.asarray(Image.open(out / "samples" / "000007.png"))
    assert np.array_equal(png, arrays.x[7, 0])  # the PNG holds exactly the scored pixels
    assert arrays.confidence[7] == pytest.approx(samples[7].confidence, abs=1e-6)
    assert len(list((out / "samples").glob("*.png"))) == 20
    grid = Image.open(out / "grid.png")
    assert grid.size[1] > grid.size[0] / 2  # ten rows of two
    metrics = InversionMetrics.model_validate_json((out / "metrics.json").read_bytes())
    assert metrics.overall.count == 20
    assert metrics.overall.knn_pixel_auroc is not None
    assert len(metrics.per_class) == 10
    figures = AuditFigures.model_validate_json((out / "report.json").read_bytes())
    assert figures.ood is not None  # the evasion table, as the service computes it
    assert {d.name for d in figures.ood.detectors} == {
        "max-softmax",
        "energy",
        "mahalanobis",
        "knn",
    }
    config = InversionConfig.model_validate_json((out / "config.json").read_bytes())
    assert config.method == method


def test_invert_safetensors_rgb(tmp_path: Path) -> None:
    shape = (3, 20, 36)
    path = tmp_path / "w.safetensors"
    path.write_bytes(factories.safetensors_bytes(factories.random_model("paper-cnn", shape, 3)))
    out = tmp_path / "out"
    code = main(
        [
            "invert",
            "--classifier",
            str(path),
            "--arch",
            "paper-cnn",
            "--input-shape",
            "3,20,36",
            "--class-names",
            "cat,dog,fox",
            "--mean",
            "0.5,0.5,0.5",
            "--std",
            "0.25",
            "--method",
            "soft",
            "--steps",
            "2",
            "--method-config",
            '{"batch_size": 6}',
            "--per-class",
            "1",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    samples = SampleIndex.validate_json((out / "samples.json").read_bytes())
    assert [s.target for s in samples] == [0, 1, 2]
    assert Image.open(out / "samples" / "000000.png").size == (36, 20)


def test_invert_reports_refusals_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(factories.torch_save_bytes({"w": 1}))
    code = main(
        [
            "invert",
            "--classifier",
            str(path),
            "--arch",
            "mlp",
            "--input-shape",
            "1,28,28",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "refused" in capsys.readouterr().err
