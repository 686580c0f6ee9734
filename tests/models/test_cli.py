"""`c3 invert` end to end on tiny configs (ONNX and safetensors uploads)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from threadpoolctl import threadpool_info, threadpool_limits

from models.cli import main
from models.contracts.artifacts import AuditFigures, InversionMetrics, SampleIndex, SamplesArrays
from models.contracts.inversion import InversionConfig
from tests import factories


@pytest.fixture(autouse=True)
def _keep_this_process_threads() -> Iterator[None]:
    """`c3 invert` sizes the process's thread pools; the test process gets its own back."""
    threads = torch.get_num_threads()
    blas = [pool["num_threads"] for pool in threadpool_info()]
    yield
    torch.set_num_threads(threads)
    if blas:
        threadpool_limits(limits=max(blas))


@pytest.mark.parametrize("method", ["c3", "pixel"])
def test_invert_onnx_with_reference_writes_everything(
    tmp_path: Path, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
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
    # four steps cannot meet the targets: the verdict says which, by how much, what to try
    assert figures.verdict is not None
    assert not figures.verdict.met
    printed = capsys.readouterr().out
    assert figures.verdict.summary in printed
    missed = figures.verdict.missed[0]
    assert f"Missed: {missed.description}" in printed


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


TINY = json.dumps({"steps": 2, "batch_size": 8, "latent_dim": 8, "width": 8})


def test_invert_runs_on_a_legacy_vit_export_with_a_dynamic_batch(tmp_path: Path) -> None:
    """The issue's case: Shape → Gather(0-d index) → Unsqueeze → Concat → Reshape."""
    path = tmp_path / "vit.onnx"
    path.write_bytes(factories.exported_family("vit-multihead-attention", "legacy-dynamic"))
    out = tmp_path / "out"
    args = ["invert", "--classifier", str(path), "--method-config", TINY, "--per-class", "1"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    assert len(json.loads((out / "samples.json").read_text())) == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["invert", "--classifier", "{tmp}/missing.onnx"], "{tmp}/missing.onnx: No such file"),
        (["invert", "--classifier", "{tmp}"], "{tmp}: Is a directory"),
        (["invert", "--classifier", "{tmp}/garbage.onnx"], "this is not a valid ONNX file"),
        (
            [
                "invert",
                "--classifier",
                "{tmp}/w.safetensors",
                "--arch",
                "gpt",
                "--input-shape",
                "1,28,28",
            ],
            "unknown architecture 'gpt': use one of mlp, paper-cnn, resnet-small",
        ),
        (
            ["invert", "--classifier", "{tmp}/w.safetensors", "--input-shape", "1,28,28"],
            "name their architecture (one of mlp, paper-cnn, resnet-small)",
        ),
        (
            [
                *("invert", "--classifier", "{tmp}/w.safetensors", "--arch", "mlp"),
                *("--input-shape", "1,28,28", "--config", "{{"),
            ],
            "not valid JSON",
        ),
        (["check", "{tmp}/missing.onnx"], "{tmp}/missing.onnx: No such file"),
    ],
    ids=["missing", "directory", "garbage", "unknown-arch", "no-arch", "bad-json", "check-missing"],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07garbage" * 3)
    (tmp_path / "w.safetensors").write_bytes(
        factories.safetensors_bytes(factories.random_model("mlp"))
    )
    filled = [a.format(tmp=tmp_path) for a in args]
    out = [] if filled[0] == "check" else ["--out", str(tmp_path / "out"), "--quiet"]
    assert main([*filled, *out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("c3: error: ")
    assert message.format(tmp=tmp_path) in err


def test_check_reports_an_accepted_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cnn.onnx"
    path.write_bytes(factories.exported_family("cnn", "legacy-dynamic"))
    assert main(["check", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{path}: would be accepted"
    report = "\n".join(lines)
    assert "producer    pytorch 2.13.0, opset 20" in report
    assert "Gather v13 (1)" in report
    assert "input       x: batch x 1 x 28 x 28" in report
    assert "batch       the graph takes any batch size" in report
    assert "classes     10 logits" in report
    assert "parameters  26,698" in report
    assert "BatchNorm   none with running statistics: detector-aware c3 needs a reference" in report
    assert "ms per image" in report


def test_check_json_says_how_a_fixed_batch_graph_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vit.onnx"
    path.write_bytes(factories.exported_family("vit-multihead-attention", "legacy-fixed"))
    assert main(["check", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accepted"] is True
    assert report["graph_input"] == "x: 1 x 1 x 28 x 28"
    assert report["batch"].startswith("batch fixed at 1 by the export; runs one image at a time")
    assert report["input_shape"] == [1, 28, 28]
    assert {u["op_type"] for u in report["operators"]} >= {"Mod", "Gather", "Softmax"}


def test_check_refuses_with_the_upload_reason_and_lists_unsupported_operators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    nodes = [helper.make_node("NonZero", ["x"], ["y"], name="nz")]
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)]
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().out
    assert "would be refused: the graph does not fix its input size: give --input-shape" in out
    assert main(["check", str(path), "--input-shape", "1,8,8"]) == 2
    out = capsys.readouterr().out
    assert "would be refused: node 'nz' (NonZero, opset 18): ONNX operator NonZero is not" in out
    assert "NOT SUPPORTED NonZero: ONNX operator NonZero is not supported" in out
