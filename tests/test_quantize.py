"""fp16 and int8 variants: contract, parity gates, the accuracy guard, dynamic-int8 refusal."""

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tests.test_classifier import check_classifier_contract
from toolkit.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory, class_tree):
    """A CNN briefly trained on the generated colour-coded tree: confident enough to quantize."""
    from toolkit.build.train import ClassifierConfig, train_classifier
    out = tmp_path_factory.mktemp("trained") / "cnn.safetensors"
    summary = train_classifier(ClassifierConfig(data=str(class_tree), epochs=3, batch_size=16, lr=2e-3, seed=0), out)
    assert summary["val_accuracy"] >= 0.9
    return out


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_variant_export_end_to_end(tmp_path, trained_weights, class_tree, precision):
    out = tmp_path / f"cnn.{precision}.onnx"
    result = runner.invoke(app, ["export", "--model", "cifar-cnn", "--precision", precision, "--weights",
                                 str(trained_weights), "--data", str(class_tree), "--out", str(out),
                                 "--calibration-images", "64"])
    assert result.exit_code == 0, result.output
    check_classifier_contract(out, precision)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]      # no temp files left behind
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    if precision == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "ConvInteger" not in ops
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and precision in info.stdout
    if precision == "int8":
        assert "QuantizeLinear" in info.stdout
    table = runner.invoke(app, ["eval", "--model", str(out), "--data", str(class_tree), "--split", "val"])
    assert table.exit_code == 0 and precision in table.stdout


def test_dynamic_int8_is_refused_for_convolutions(tmp_path, trained_weights, class_tree):
    result = runner.invoke(app, ["export", "--model", "cifar-cnn", "--precision", "int8", "--dynamic",
                                 "--weights", str(trained_weights), "--data", str(class_tree),
                                 "--out", str(tmp_path / "dyn.onnx")])
    assert result.exit_code == 1 and "ConvInteger" in result.output
    assert not (tmp_path / "dyn.onnx").exists()


def test_accuracy_guard_excludes_the_most_sensitive_nodes(tmp_path, trained_weights, class_tree):
    """Calibrating on black images makes every activation range far too narrow, so the fully
    quantized model fails the guard; it must keep nodes in float until the accuracy holds."""
    from toolkit.core import quantize
    from toolkit.core.data import read_split
    from toolkit.build.export import export_classifier

    fp32 = tmp_path / "fp32.onnx"
    export_classifier(fp32, trained_weights, class_tree, log=lambda *_: None)
    val = read_split(class_tree, "all")
    black = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    messages = []
    proto, report = quantize.quantize_int8(fp32, tmp_path / "q.onnx", black, val.images, val.labels,
                                           max_drop=0.0, log=messages.append)
    assert len(report.attempts) >= 2 and report.excluded            # the first attempt failed
    assert report.attempts[0]["accuracy"] < report.fp32_accuracy
    assert report.drop_points <= 0.0
    assert any("most sensitive" in m for m in messages)


def test_accuracy_guard_fails_when_it_cannot_hold(tmp_path, trained_weights, class_tree, monkeypatch):
    from toolkit.core import quantize
    from toolkit.core.data import read_split
    from toolkit.build.export import export_classifier

    fp32 = tmp_path / "fp32.onnx"
    export_classifier(fp32, trained_weights, class_tree, log=lambda *_: None)
    val = read_split(class_tree, "all")
    monkeypatch.setattr(quantize, "quantizable_nodes", lambda model: [])   # nothing may be kept in float
    black = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(quantize.QuantizationError, match="cannot hold"):
        quantize.quantize_int8(fp32, tmp_path / "q.onnx", black, val.images, val.labels, max_drop=0.0,
                               log=lambda *_: None)
