"""`toolkit wrap`: foreign ONNX classifiers brought into the contract, and infer/eval on any input size."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from tests.helpers import CIFAR_MEAN, CIFAR_STD, DATA, REPO, bare_cnn_onnx, foreign_classifier, write_class_tree
from toolkit.cli import app

runner = CliRunner(env={"COLUMNS": "200"})
SAMPLES = REPO / "models" / "samples"


def run_original(path, images, layout="nchw", channels="rgb", mean=(0, 0, 0), std=(1, 1, 1), scale=255.0):
    """The foreign model fed the documented preprocessing, done independently here."""
    import onnxruntime as ort
    x = (images.astype(np.float64) / scale - np.asarray(mean)) / np.asarray(std)    # mean, std: R,G,B
    if channels == "bgr":
        x = x[..., ::-1]
    if layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def run_wrapped(path, images):
    from toolkit.edge.runtime import open_model
    return open_model(path).run(images)


def check_wrapped_contract(path, name, labels, size=(32, 32)):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.task"] == "classify" and meta["toolkit.model"] == name
    assert meta["toolkit.precision"] == "fp32" and "toolkit.version" in meta
    assert json.loads(meta["toolkit.labels"]) == labels
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and inp.type.tensor_type.elem_type == TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [*size, 3]
    assert out.name == "logits" and out.type.tensor_type.elem_type == TensorProto.FLOAT
    assert len({o.domain for o in model.opset_import}) == len(model.opset_import)
    assert not any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)
    return model


def images(n=12, size=(32, 32), seed=3):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def wrap(*args):
    return runner.invoke(app, ["wrap", *map(str, args)])


def test_nchw_model_wrapped_with_label_file(tmp_path):
    src = foreign_classifier(tmp_path / "theirs.onnx")
    (tmp_path / "labels.txt").write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    out = tmp_path / "mine.onnx"
    result = wrap(src, "--out", out, "--mean", CIFAR_MEAN, "--std", CIFAR_STD, "--labels", tmp_path / "labels.txt")
    assert result.exit_code == 0, result.output
    model = check_wrapped_contract(out, "theirs", [f"class {i}" for i in range(10)])
    assert json.loads({p.key: p.value for p in model.metadata_props}["toolkit.wrapped"])["layout"] == "nchw"
    x = images()
    expected = run_original(src, x, mean=[float(v) for v in CIFAR_MEAN.split(",")],
                            std=[float(v) for v in CIFAR_STD.split(",")])
    got = run_wrapped(out, x)
    assert np.abs(got - expected).max() <= 1e-4 and (got.argmax(1) == expected.argmax(1)).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "mine.onnx", "theirs.onnx"]


def test_nhwc_bgr_model_with_name_and_scale(tmp_path):
    src = foreign_classifier(tmp_path / "theirs.onnx", layout="nhwc", classes=3)
    out = tmp_path / "mine.onnx"
    result = wrap(src, "--out", out, "--channels", "bgr", "--scale", "1", "--mean", "100,110,120",
                  "--std", "50", "--labels", "a,b,c", "--name", "their-net", "--images", SAMPLES)
    assert result.exit_code == 0, result.output
    check_wrapped_contract(out, "their-net", ["a", "b", "c"])
    x = images()
    expected = run_original(src, x, "nhwc", "bgr", (100, 110, 120), (50, 50, 50), scale=1.0)
    assert np.abs(run_wrapped(out, x) - expected).max() <= 1e-4


def test_layout_is_inferred_or_must_be_given(tmp_path):
    ambiguous = foreign_classifier(tmp_path / "square.onnx", size=(3, 3))   # [N, 3, 3, 3]
    result = wrap(ambiguous, "--out", tmp_path / "x.onnx")
    assert result.exit_code == 1 and "--layout" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
    assert wrap(ambiguous, "--out", tmp_path / "x.onnx", "--layout", "nchw").exit_code == 0


@pytest.mark.parametrize("case, args, message", [
    ("labels", ["--labels", "a,b"], "2 labels given"),
    ("dynamic", [], "--size H W"),
    ("outputs", [], "--output"),
    ("missing", [], "no such model file"),
    ("not-onnx", [], "not an ONNX model"),
])
def test_bad_requests_fail_in_one_line_and_write_nothing(tmp_path, case, args, message):
    src = tmp_path / "theirs.onnx"
    if case == "dynamic":
        foreign_classifier(src, size=("H", "W"))
    elif case == "outputs":
        foreign_classifier(src, extra_output=True)
    elif case == "not-onnx":
        src.write_bytes(b"\x00garbage" * 10)
    elif case != "missing":
        foreign_classifier(src)
    result = wrap(src, "--out", tmp_path / "mine.onnx", *args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "mine.onnx").exists()


def test_dynamic_size_multiple_outputs_probabilities(tmp_path):
    src = foreign_classifier(tmp_path / "theirs.onnx", size=("H", "W"), softmax=True, extra_output=True)
    out = tmp_path / "mine.onnx"
    result = wrap(src, "--out", out, "--size", "40", "48", "--output", "probs", "--outputs", "probabilities")
    assert result.exit_code == 0, result.output
    check_wrapped_contract(out, "theirs", [str(i) for i in range(10)], size=(40, 48))
    x = images(size=(40, 48))
    probs = run_original(src, x)
    logits = run_wrapped(out, x)
    assert np.abs(logits - np.log(probs)).max() <= 1e-4
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["logits"]


def test_old_opset_and_fixed_batch(tmp_path):
    src = foreign_classifier(tmp_path / "theirs.onnx", batch=1, opset=11)
    out = tmp_path / "mine.onnx"
    result = wrap(src, "--out", out)
    assert result.exit_code == 0, result.output
    model = check_wrapped_contract(out, "theirs", [str(i) for i in range(10)])
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    x = images(5)
    expected = np.concatenate([run_original(src, x[i:i + 1]) for i in range(5)])
    assert np.abs(run_wrapped(out, x) - expected).max() <= 1e-4          # a batch of 5 runs


def test_external_data_only_from_inside_the_models_folder(tmp_path):
    from onnx.external_data_helper import convert_model_to_external_data

    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(str(foreign_classifier(folder / "plain.onnx")))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save(model, str(folder / "theirs.onnx"))
    out = tmp_path / "mine.onnx"
    assert wrap(folder / "theirs.onnx", "--out", out).exit_code == 0
    assert not any(t.data_location == TensorProto.EXTERNAL for t in onnx.load(str(out)).graph.initializer)

    outside = onnx.load(str(folder / "theirs.onnx"), load_external_data=False)
    (tmp_path / "elsewhere.bin").write_bytes((folder / "weights.bin").read_bytes())
    for t in outside.graph.initializer:
        for entry in t.external_data:
            if entry.key == "location":
                entry.value = "../elsewhere.bin"
    onnx.save(outside, str(folder / "escape.onnx"))
    result = wrap(folder / "escape.onnx", "--out", tmp_path / "escape_wrapped.onnx")
    assert result.exit_code == 1 and "outside the model's folder" in result.output
    assert not (tmp_path / "escape_wrapped.onnx").exists()


def test_failing_parity_gate_writes_nothing(tmp_path, monkeypatch):
    from toolkit.edge.wrap import wrapper as wrap_module
    monkeypatch.setattr(wrap_module, "PARITY_MAX_DIFF", -1.0)
    src = foreign_classifier(tmp_path / "theirs.onnx")
    result = wrap(src, "--out", tmp_path / "mine.onnx")
    assert result.exit_code == 1 and "parity gate failed" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.onnx"]


def test_a_model_over_the_protobuf_limit_is_refused_clearly(tmp_path, monkeypatch):
    from toolkit.edge import contract
    monkeypatch.setattr(contract, "PROTOBUF_LIMIT", 1000)        # stands in for 2 GB (the reading check's)
    result = wrap(foreign_classifier(tmp_path / "theirs.onnx"), "--out", tmp_path / "mine.onnx")
    assert result.exit_code == 1 and "2 GB limit" in result.output
    assert not (tmp_path / "mine.onnx").exists()


def test_224_classifier_classifies_and_evaluates_any_image_size(tmp_path):
    """The resize path: a 224×224 wrapped model on the sample photos and on a 32×32 class tree."""
    src = foreign_classifier(tmp_path / "big.onnx", size=(224, 224), classes=3)
    out = tmp_path / "big_wrapped.onnx"
    assert wrap(src, "--out", out, "--labels", "red,green,blue").exit_code == 0
    result = runner.invoke(app, ["infer", str(SAMPLES), "--model", str(out), "--json", "--top-k", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 10 and all(r["top"][0]["label"] in ("red", "green", "blue") for r in rows)
    tree = write_class_tree(tmp_path / "tree", per_class=4, classes=["red", "green", "blue"])
    result = runner.invoke(app, ["eval", "--model", str(out), "--data", str(tree), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 12


# ----------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def shipped_accuracy(tmp_path_factory):
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.infer import evaluate
    from toolkit.edge.runtime import open_model
    from toolkit.pytorch.export import export_classifier

    if not DATA.is_dir():
        pytest.skip("needs data/cifar10-png (make data)")
    reference = tmp_path_factory.mktemp("shipped") / "cifar_cnn.onnx"
    export_classifier(reference, REPO / "models" / "cifar_cnn.safetensors", DATA, log=lambda *_: None)
    val = read_split(DATA, "val")
    return val, evaluate(open_model(reference), val.images, val.labels, val.class_names).accuracy


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("variant", ["nchw", "nhwc-bgr"])
def test_round_trip_of_the_shipped_cnn(tmp_path, shipped_accuracy, variant):
    from toolkit.edge.infer import evaluate
    from toolkit.edge.runtime import open_model

    val, expected = shipped_accuracy
    src = bare_cnn_onnx(tmp_path / "bare.onnx", nhwc_bgr=variant == "nhwc-bgr")
    args = ["--channels", "bgr"] if variant == "nhwc-bgr" else []     # the same R,G,B statistics either way
    out = tmp_path / "wrapped.onnx"
    labels = ",".join(val.class_names)
    result = wrap(src, "--out", out, "--mean", CIFAR_MEAN, "--std", CIFAR_STD, "--labels", labels, "--images", DATA,
                  *args)
    assert result.exit_code == 0, result.output
    accuracy = evaluate(open_model(out), val.images, val.labels, val.class_names).accuracy
    assert abs(accuracy - expected) * 100 <= 0.05, (accuracy, expected)
