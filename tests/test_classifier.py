"""The paper's CNN: parameter count, export under the contract with its parity gate, infer and eval."""

import json

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

import toolkit.zoo as zoo
from tests.helpers import DATA, check_classifier_contract, write_class_tree
from toolkit.cli import app
from toolkit.edge.data.datasets import CIFAR10_LABELS

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.mark.slow
def test_parameter_count_is_the_papers():
    net = zoo.CIFAR_CNN.build()
    assert sum(p.numel() for p in net.parameters()) == 1_250_858


def test_fresh_export_meets_the_contract_and_matches_torch(fresh_onnx, fresh_weights):
    import torch

    from toolkit.edge.runtime import open_model
    from toolkit.pytorch.export import classifier_module

    check_classifier_contract(fresh_onnx, "fp32")
    images = np.random.default_rng(1).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = classifier_module(fresh_weights)(torch.from_numpy(images)).numpy()
    got = open_model(fresh_onnx).run(images)
    assert got.shape == (7, 10) and np.abs(got - expected).max() < 1e-3


def test_failing_parity_gate_leaves_no_file(tmp_path, fresh_weights, class_tree, monkeypatch):
    from toolkit.pytorch import export
    monkeypatch.setattr(export, "FP32_TOLERANCE", -1.0)   # no model can pass: the gate must fail
    out = tmp_path / "gated.onnx"
    with pytest.raises(export.ExportError, match="parity gate failed"):
        export.export_classifier(out, fresh_weights, class_tree, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_reports_missing_weights(tmp_path):
    result = runner.invoke(app, ["export", "--model", "cifar-cnn", "--weights", str(tmp_path / "nope.safetensors"),
                                 "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code != 0 and "weights not found" in result.output
    assert "Traceback" not in result.output


@pytest.fixture()
def mixed_inputs(tmp_path):
    good = tmp_path / "imgs"
    good.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(good / "a.png")
    Image.new("RGB", (300, 120), (10, 10, 200)).save(good / "big.jpg")        # any size is resized
    Image.new("L", (17, 9), 80).save(good / "grey.png")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    return good, bad


def test_infer_json_and_bad_file(fresh_onnx, mixed_inputs):
    good, bad = mixed_inputs
    result = runner.invoke(app, ["infer", str(good), str(bad), "--model", str(fresh_onnx), "--json", "--top-k", "2"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 3
    for obj in lines:
        assert set(obj) == {"path", "top"} and len(obj["top"]) == 2
        assert obj["top"][0]["label"] in CIFAR10_LABELS and 0 <= obj["top"][1]["prob"] <= obj["top"][0]["prob"] <= 1
    assert "broken.jpg" in result.stderr and "Traceback" not in result.output


def test_infer_table_output(fresh_onnx, mixed_inputs):
    good, _ = mixed_inputs
    result = runner.invoke(app, ["infer", str(good / "a.png"), "--model", str(fresh_onnx)])
    assert result.exit_code == 0 and "a.png" in result.stdout and "#3" in result.stdout


def test_infer_refuses_unusable_model(tmp_path, mixed_inputs):
    good, _ = mixed_inputs
    fake = tmp_path / "fake.onnx"
    fake.write_text("nope")
    result = runner.invoke(app, ["infer", str(good), "--model", str(fake)])
    assert result.exit_code == 1 and "not an ONNX model" in result.stderr


def test_infer_does_not_import_torch(fresh_onnx, mixed_inputs):
    import subprocess
    import sys
    good, _ = mixed_inputs
    code = (f"import sys; from toolkit.cli import main; sys.argv=['toolkit','infer',{str(good)!r},'--model',"
            f"{str(fresh_onnx)!r},'--json'];\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_eval_json_and_table(fresh_onnx, class_tree):
    result = runner.invoke(app, ["eval", "--model", str(fresh_onnx), "--data", str(class_tree), "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout.strip().splitlines()[-1])
    assert obj["n"] == 300 and 0 <= obj["accuracy"] <= 1 and set(obj["per_class"]) == set(CIFAR10_LABELS)
    table = runner.invoke(app, ["eval", "--model", str(fresh_onnx), "--model", str(fresh_onnx),
                                "--data", str(class_tree), "--split", "val"])
    assert table.exit_code == 0 and "agreement" in table.stdout and "100.00%" in table.stdout


def test_eval_rejects_unknown_class_folders(fresh_onnx, tmp_path):
    root = write_class_tree(tmp_path / "t", per_class=2, classes=["cat", "unicorn"])
    result = runner.invoke(app, ["eval", "--model", str(fresh_onnx), "--data", str(root)])
    assert result.exit_code == 1 and "unicorn" in result.stderr


def test_info_shows_io_metadata_and_ops(fresh_onnx):
    result = runner.invoke(app, ["info", str(fresh_onnx)])
    assert result.exit_code == 0
    for needle in ("image", "uint8", "logits", "toolkit.labels", "Conv", "opset"):
        assert needle in result.stdout


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not (DATA.exists()), reason="real data not extracted (make data)")
def test_shipped_classifier_on_real_validation_images():
    """Integration: the shipped model meets its accuracy on the real validation split."""
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.infer import evaluate
    from toolkit.edge.runtime import open_model

    if not zoo.CIFAR_CNN.onnx_path().exists():
        pytest.skip("no shipped model")
    val = read_split(DATA, "val", limit=1000)
    result = evaluate(open_model(zoo.CIFAR_CNN.onnx_path()), val.images, val.labels, val.class_names)
    assert result.accuracy >= 0.72   # 75% on all 5,000; a 1,000-image subset varies by a couple of points


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_infer_refuses_a_gpu_provider_it_cannot_use(fresh_onnx, mixed_inputs, provider):
    from toolkit.edge.runtime import usable_providers
    if provider in usable_providers():
        pytest.skip(f"{provider} is usable here")
    good, _ = mixed_inputs
    result = runner.invoke(app, ["infer", str(good), "--model", str(fresh_onnx), "--provider", provider, "--json"])
    assert result.exit_code == 1 and provider in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- export options

def test_tta_export_averages_the_image_and_its_mirror(tmp_path, fresh_onnx, fresh_weights, class_tree):
    from toolkit.edge.runtime import open_model
    from toolkit.pytorch.export import export_classifier

    out = tmp_path / "cnn.tta.onnx"
    result = export_classifier(out, fresh_weights, class_tree, log=lambda *_: None, tta=True)
    assert result.path == out and result.precision == "fp32" and result.facts["top1_agreement"] == 1.0
    check_classifier_contract(out, "fp32")
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props}["toolkit.tta"] == "1"
    assert "Slice" in {n.op_type for n in model.graph.node}          # the mirror is a graph node
    images = np.random.default_rng(2).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    plain = open_model(fresh_onnx)
    expected = (plain.run(images) + plain.run(np.ascontiguousarray(images[:, :, ::-1]))) / 2
    assert np.abs(open_model(out).run(images) - expected).max() < 1e-4


def test_default_output_names():
    from toolkit.pytorch.export import default_output
    spec = zoo.CIFAR_CNN
    assert default_output(spec).name == "cifar_cnn.onnx"
    assert default_output(spec, "fp16", tta=True).name == "cifar_cnn.tta.fp16.onnx"
    lowpass = zoo.MODELS_DIR / "cifar_cnn_lowpass.safetensors"
    assert default_output(spec, preprocess="fft-lowpass:0.5", weights=lowpass).name == \
        "cifar_cnn_lowpass.fft_lowpass.onnx"


def test_export_rejects_unknown_models_and_precisions(tmp_path):
    for args, needle in ((["--model", "resnet-9000"], "unknown model resnet-9000 (known: cifar-cnn"),
                         (["--model", "cifar-cnn", "--precision", "bf16"], "precision")):
        result = runner.invoke(app, ["export", *args, "--out", str(tmp_path / "x.onnx")])
        assert result.exit_code != 0 and needle in result.output and "'" not in result.stderr.split("(")[0]
    assert not (tmp_path / "x.onnx").exists()


OTHER_ZOO_CLASSIFIERS = [name for name, spec in zoo.REGISTRY.items() if spec.task == "classify" and name != "cifar-cnn"]


@pytest.mark.slow
@pytest.mark.parametrize("model", OTHER_ZOO_CLASSIFIERS)
def test_every_zoo_classifier_exports_with_batchnorm_folded(tmp_path, model, class_tree):
    """Registry-driven export: any classifier of the zoo, BatchNorm folded (none left in the graph)."""
    import torch

    from toolkit.pytorch.checkpoint import atomic_save_tensors, prefixed
    from toolkit.pytorch.export import export_classifier

    torch.manual_seed(0)
    net = zoo.REGISTRY[model].build()
    for m in net.modules():          # trained-looking statistics, positive scales (foldable through a max-pool)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    weights = tmp_path / "net.safetensors"
    atomic_save_tensors(prefixed("model", net.state_dict()), weights, {"model": model})
    out = tmp_path / "net.onnx"
    result = export_classifier(out, weights, class_tree, log=lambda *_: None, model=model)
    assert result.facts["max_abs_diff"] <= 1e-3
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["toolkit.model"] == model


@pytest.mark.slow
def test_batchnorm_with_a_negative_scale_after_a_pool_stays():
    """Max-pooling commutes only with positive scales: a negative one must not be folded."""
    import torch

    from toolkit.pytorch.onnx_export import torch_to_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.BatchNorm2d(4)).eval()
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([1.0, -1.0, 0.5, 2.0]))
    notes = []
    proto = torch_to_onnx(net, (torch.zeros(2, 3, 8, 8),), ["x"], ["y"], log=notes.append)
    assert "BatchNormalization" in {n.op_type for n in proto.graph.node} and "1 BatchNorm" in notes[0]
    with torch.no_grad():
        net[2].weight.abs_()
    proto = torch_to_onnx(net, (torch.zeros(2, 3, 8, 8),), ["x"], ["y"], log=notes.append)
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    import onnxruntime as ort
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        assert np.abs(got - net(torch.from_numpy(x)).numpy()).max() < 1e-5


def test_exported_graph_carries_no_source_paths(fresh_onnx):
    """Debug metadata (stack traces with the builder's paths) is stripped: builds are location-independent."""
    text = fresh_onnx.read_bytes()
    assert b"stack_trace" not in text and b"toolkit/pytorch" not in text and b"pkg.torch" not in text
