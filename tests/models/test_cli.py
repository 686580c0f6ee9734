"""`c3 invert` end to end on tiny configs (ONNX and safetensors uploads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from models.cli import main
from tests import factories


@pytest.mark.parametrize("method", ["c3", "pixel"])
def test_invert_onnx_with_reference_writes_everything(tmp_path: Path, method: str) -> None:
    model_path = tmp_path / "model.onnx"
    model_path.write_bytes(factories.trained_onnx_bytes("paper-cnn", (1, 28, 28), dynamo=False))
    reference = tmp_path / "heldout.npz"
    reference.write_bytes(factories.digits_reference_npz((1, 28, 28), per_class=8))
    out = tmp_path / "out"
    tiny = json.dumps({"steps": 4, "batch_size": 16, "latent_dim": 8, "width": 8, "pixel_steps": 3})
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
    samples = json.loads((out / "samples.json").read_text())
    assert len(samples) == 20
    first = samples[0]
    assert {"file", "target", "predicted", "confidence", "top_k"} <= set(first)
    assert len(first["top_k"]) == 5
    assert (out / first["file"]).is_file()
    assert Image.open(out / first["file"]).size == (28, 28)
    assert len(list((out / "samples").glob("*.png"))) == 20
    grid = Image.open(out / "grid.png")
    assert grid.size[1] > grid.size[0] / 2  # ten rows of two
    report = json.loads((out / "metrics.json").read_text())
    overall = report["metrics"]["overall"]
    assert overall["count"] == 20
    assert overall["knn_pixel_auroc"] is not None
    assert report["config"]["method"] == method
    assert len(report["metrics"]["per_class"]) == 10


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
    samples = json.loads((out / "samples.json").read_text())
    assert [s["target_name"] for s in samples] == ["cat", "dog", "fox"]
    assert Image.open(out / samples[0]["file"]).size == (36, 20)


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
