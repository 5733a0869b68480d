"""fp16 and int8 variants: contract, parity gates, the accuracy guard, dynamic-int8 refusal."""

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tests.helpers import CIFAR_MEAN, CIFAR_STD, DATA, bare_cnn_onnx, check_classifier_contract, foreign_classifier
from toolkit.cli import app

runner = CliRunner(env={"COLUMNS": "200"})
# Every test here quantizes a CNN trained first (about a minute on 2 cores) or the shipped one.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory, class_tree):
    """A CNN briefly trained on the generated colour-coded tree: confident enough to quantize."""
    from toolkit.pytorch.train_classifier import train_classifier
    from toolkit.recipes import ClassifierConfig
    out = tmp_path_factory.mktemp("trained") / "cnn.safetensors"
    summary = train_classifier(ClassifierConfig(data=str(class_tree), epochs=3, batch_size=16, lr=2e-3, seed=0,
                                                translate=0, label_smoothing=0.0), out)
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


def test_accuracy_guard_excludes_the_most_sensitive_nodes(tmp_path, trained_weights, class_tree, monkeypatch):
    """Calibrating on black images makes every activation range far too narrow, so the fully
    quantized model fails the guard; it must keep nodes in float until the accuracy holds."""
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.quantize import variants as quantize
    from toolkit.edge.quantize.recipe import BASELINE_RECIPE
    from toolkit.pytorch.export import export_classifier

    # The plain recipe: its uint8 logits are what black-image calibration ruins (float logits survive it).
    monkeypatch.setattr(quantize, "CPU_RECIPE", BASELINE_RECIPE)

    fp32 = tmp_path / "fp32.onnx"
    export_classifier(fp32, trained_weights, class_tree, log=lambda *_: None)
    val = read_split(class_tree, "all")
    black = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    messages = []
    _, report = quantize.quantize_int8(fp32, tmp_path / "q.onnx", black, val.images, val.labels,
                                       max_drop=0.0, log=messages.append)
    assert len(report.attempts) >= 2 and report.excluded            # the first attempt failed
    assert report.attempts[0]["accuracy"] < report.fp32_accuracy
    assert report.drop_points <= 0.0
    assert any("most sensitive" in m for m in messages)


def test_accuracy_guard_fails_when_it_cannot_hold(tmp_path, trained_weights, class_tree, monkeypatch):
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.quantize import variants as quantize
    from toolkit.edge.quantize.recipe import BASELINE_RECIPE
    from toolkit.pytorch.export import export_classifier

    fp32 = tmp_path / "fp32.onnx"
    export_classifier(fp32, trained_weights, class_tree, log=lambda *_: None)
    val = read_split(class_tree, "all")
    monkeypatch.setattr(quantize, "quantizable_nodes", lambda model: [])   # nothing may be kept in float
    monkeypatch.setattr(quantize, "CPU_RECIPE", BASELINE_RECIPE)             # see the test above
    black = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(quantize.QuantizeError, match="cannot hold"):
        quantize.quantize_int8(fp32, tmp_path / "q.onnx", black, val.images, val.labels, max_drop=0.0,
                               log=lambda *_: None)


# ----------------------------------------------------------------------------- quantize any contract classifier

@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory, trained_weights, class_tree):
    from toolkit.pytorch.export import export_classifier
    out = tmp_path_factory.mktemp("trained_onnx") / "cnn.onnx"
    export_classifier(out, trained_weights, class_tree, log=lambda *_: None)
    return out


def activation_zero_points(path):
    from onnx import numpy_helper
    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]


def test_tensorrt_scheme_has_symmetric_int8_activations(tmp_path, trained_onnx, class_tree):
    out = tmp_path / "cnn.trt.int8.onnx"
    result = runner.invoke(app, ["quantize", str(trained_onnx), "--out", str(out), "--data", str(class_tree),
                                 "--target", "tensorrt", "--calibration-images", "64"])
    assert result.exit_code == 0, result.output
    check_classifier_contract(out, "int8")
    zero_points = activation_zero_points(out)
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    model = onnx.load(str(out))
    # Biases stay float (TensorRT's form): no int32 tensor feeds a DequantizeLinear.
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    assert not any(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in model.graph.node)
    meta = {p.key: p.value for p in model.metadata_props}
    assert '"target":"tensorrt"' in meta["toolkit.calibration"]


def test_export_passes_the_int8_target_through(tmp_path, trained_weights, class_tree):
    import toolkit.zoo as zoo
    from toolkit.pytorch.export import default_output

    out = tmp_path / "cnn.trt.int8.onnx"
    args = ["export", "--model", "cifar-cnn", "--weights", str(trained_weights), "--data", str(class_tree),
            "--target", "tensorrt", "--calibration-images", "64"]
    result = runner.invoke(app, [*args, "--precision", "int8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "target tensorrt" in result.output
    zero_points = activation_zero_points(out)
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    refused = runner.invoke(app, [*args, "--precision", "fp16", "--out", str(tmp_path / "x.onnx")])
    assert refused.exit_code == 1 and "int8 classifiers only" in refused.output
    assert default_output(zoo.CIFAR_CNN, "int8", target="tensorrt").name == "cifar_cnn.trt.int8.onnx"


def test_unlabeled_guard_on_a_flat_folder(tmp_path, trained_onnx, class_tree):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, f in enumerate(sorted(class_tree.rglob("*.jpg"))):
        (flat / f"{i:05d}.jpg").write_bytes(f.read_bytes())
    out = tmp_path / "cnn.int8.onnx"
    result = runner.invoke(app, ["quantize", str(trained_onnx), "--out", str(out), "--data", str(flat),
                                 "--calibration-images", "64", "--min-agreement", "0.95"])
    assert result.exit_code == 0, result.output
    assert "flat folder" in result.output and "agreement with fp32" in result.output
    check_classifier_contract(out, "int8")


def test_agreement_guard_keeps_nodes_in_float_until_it_holds(tmp_path, trained_onnx, class_tree, monkeypatch):
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.quantize import variants as quantize
    from toolkit.edge.quantize.recipe import BASELINE_RECIPE

    monkeypatch.setattr(quantize, "CPU_RECIPE", BASELINE_RECIPE)       # see the guard tests above

    val = read_split(class_tree, "all")
    black = np.zeros((16, 32, 32, 3), dtype=np.uint8)
    _, report = quantize.quantize_int8(trained_onnx, tmp_path / "q.onnx", black, val.images, None,
                                       min_agreement=1.0, log=lambda *_: None)
    assert report.excluded and report.int8_accuracy == 1.0          # agreement with fp32, all images


def test_fp16_of_any_classifier(tmp_path, trained_onnx, class_tree):
    out = tmp_path / "cnn.fp16.onnx"
    result = runner.invoke(app, ["quantize", str(trained_onnx), "--out", str(out), "--data", str(class_tree),
                                 "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    check_classifier_contract(out, "fp16")


def test_quantize_refuses_what_it_cannot_take(tmp_path, trained_onnx, class_tree):
    shipped_int8 = tmp_path / "already.int8.onnx"
    model = onnx.load(str(trained_onnx))
    for p in model.metadata_props:
        if p.key == "toolkit.precision":
            p.value = "int8"
    onnx.save(model, str(shipped_int8))
    cases = [(foreign_classifier(tmp_path / "theirs.onnx"), class_tree, "toolkit wrap"),
             (shipped_int8, class_tree, "already int8"),
             (trained_onnx, tmp_path / "none", "not a folder")]
    for src, data, message in cases:
        result = runner.invoke(app, ["quantize", str(src), "--out", str(tmp_path / "q.onnx"), "--data", str(data)])
        assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "q.onnx").exists()


# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def wrapped_cnn(tmp_path_factory):
    if not DATA.is_dir():
        pytest.skip("needs data/cifar10-png (make data)")
    folder = tmp_path_factory.mktemp("wrapped")
    out = folder / "wrapped.onnx"
    labels = ",".join(sorted(p.name for p in DATA.iterdir() if p.is_dir()))
    result = runner.invoke(app, ["wrap", str(bare_cnn_onnx(folder / "bare.onnx")), "--out", str(out), "--mean",
                                 CIFAR_MEAN, "--std", CIFAR_STD, "--labels", labels, "--images", str(DATA)])
    assert result.exit_code == 0, result.output
    return out, DATA


@pytest.mark.data
@pytest.mark.parametrize("target, max_drop", [("cpu", 0.5), ("tensorrt", 1.0)])
def test_int8_of_a_wrapped_model_holds_the_guard_on_validation(tmp_path, wrapped_cnn, target, max_drop):
    from toolkit.edge.quantize.classifier import quantize_classifier
    from toolkit.edge.quantize.config import QuantizeOptions

    wrapped, data = wrapped_cnn
    result = quantize_classifier(wrapped, tmp_path / "q.onnx", data, QuantizeOptions(target=target, max_drop=max_drop),
                                 log=lambda *_: None)
    assert result.guard == "accuracy" and result.n_gate == 1000
    assert result.drop_points <= max_drop, result.describe()
    if target == "tensorrt":
        assert all(not zp.any() and zp.dtype == np.int8 for zp in activation_zero_points(tmp_path / "q.onnx"))
