"""OpenVINO as a provider: the same Model interface as onnxruntime (open_model, strict checks),
f32 unless bf16 is asked for, the compile cache, and `--provider openvino` in bench, infer, eval,
generate and transform. Skips where the `openvino` package is not installed.

Run: .venv/bin/pytest tests/test_openvino.py
"""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import toolkit.zoo as zoo
from tests.helpers import LABELS, write_class_tree
from toolkit.cli import app
from toolkit.edge.runtime import ModelError, ProviderError, open_model
from toolkit.edge.runtime.openvino import OpenVINOModel
from toolkit.edge.runtime.openvino import version as openvino_version

pytestmark = pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed (toolkit[openvino])")


def test_same_interface_and_results_as_onnxruntime(tiny, tmp_path):
    ov = open_model(tiny, "openvino", threads=1, cache_dir=tmp_path / "ov")
    ort = open_model(tiny, "cpu", threads=1)
    assert isinstance(ov, OpenVINOModel) and ov.provider == "openvino" and ov.precision_hint == "f32"
    assert (ov.task, ov.labels, ov.precision, ov.input_hw) == (ort.task, ort.labels, ort.precision, ort.input_hw)
    assert (ov.inputs, ov.outputs) == (ort.inputs, ort.outputs)
    x = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(ov.run(x), ort.run(x), atol=1e-4, rtol=1e-4)
    assert "bf16" not in ov.runtime_precisions()
    again = open_model(tiny, "openvino", threads=1, cache_dir=tmp_path / "ov")
    assert not ov.cache_hit and again.cache_hit


def test_bf16_only_when_asked(tiny, tmp_path):
    try:
        model = open_model(tiny, "openvino", precision_hint="bf16", cache_dir=tmp_path / "ov")
    except ProviderError as exc:                # a CPU without bf16: refused, never silently f32
        assert "bf16" in str(exc)
        return
    assert model.precision_hint == "bf16"


def test_strict_errors(tiny, tmp_path):
    with pytest.raises(ProviderError, match="openvino provider only"):
        open_model(tiny, "cpu", precision_hint="bf16")
    with pytest.raises(ProviderError, match="unknown precision hint"):
        open_model(tiny, "openvino", precision_hint="fp8")
    not_onnx = tmp_path / "junk.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        open_model(not_onnx, "openvino")


def test_bench_rows_per_precision_hint(tiny):
    result = CliRunner().invoke(app, ["bench", "--model", str(tiny), "--provider", "cpu", "--provider", "openvino",
                                      "--precision-hint", "f32", "--precision-hint", "bf16", "--batch-size", "2",
                                      "--runs", "2", "--warmup", "0", "--no-roof", "--json"])
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["backend"], r["compute"]) for r in rows] == [("onnxruntime", None), ("openvino", None),
                                                           ("openvino", "bf16")]
    assert all(key.startswith("CPU ") for key in rows[1]["placement"])
    assert rows[1]["openvino_cache"] in ("hit", "miss") and rows[1]["session_create_s"] > 0


def test_infer_and_eval_on_openvino(tiny, tmp_path):
    write_class_tree(tmp_path / "data", per_class=4, seed=3, classes=LABELS)
    runner = CliRunner()
    on_cpu = runner.invoke(app, ["infer", str(tmp_path / "data"), "--model", str(tiny), "--json"])
    on_ov = runner.invoke(app, ["infer", str(tmp_path / "data"), "--model", str(tiny), "--json",
                                "--provider", "openvino"])
    assert on_ov.exit_code == 0, on_ov.stderr
    top = [[t["label"] for t in json.loads(line)["top"]] for line in on_ov.stdout.splitlines()]
    assert top == [[t["label"] for t in json.loads(line)["top"]] for line in on_cpu.stdout.splitlines()]
    evaluated = runner.invoke(app, ["eval", "--model", str(tiny), "--data", str(tmp_path / "data"),
                                    "--provider", "openvino", "--json"])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n"] == 8
    refused = runner.invoke(app, ["infer", str(tmp_path / "data"), "--model", str(tiny), "--precision-hint", "bf16"])
    assert refused.exit_code != 0 and len(refused.stderr.strip().splitlines()) == 1


def test_transform_on_openvino_matches_cpu(tmp_path):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(image)
    outputs = {}
    for provider in ("cpu", "openvino"):
        out = tmp_path / f"{provider}.png"
        result = CliRunner().invoke(app, ["transform", str(image), "--op", "walsh-compress", "--keep", "0.5",
                                          "--out", str(out), "--provider", provider])
        assert result.exit_code == 0, result.stderr
        outputs[provider] = np.asarray(Image.open(out), dtype=np.int16)
    assert np.abs(outputs["cpu"] - outputs["openvino"]).max() <= 1


def test_generate_on_openvino(tmp_path):
    if not zoo.DCGAN.onnx_path().is_file():
        pytest.skip("no shipped generator in models/")
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["generate", "--n", "2", "--out", str(out), "--provider", "openvino"])
    assert result.exit_code == 0, result.stderr
    with Image.open(out) as grid:
        assert grid.size[0] >= 64
