"""The artifact contract on both sides: what write_model lets through, and what every command refuses
to read (empty or non-ONNX files, toolkit models with external data, external files outside the
model's folder), with `info` telling the true size and where each external file lies."""

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.edge import contract
from toolkit.edge.data.datasets import CIFAR10_LABELS

runner = CliRunner(env={"COLUMNS": "200"})


def tiny_classifier(contract_metadata: bool = True) -> onnx.ModelProto:
    """uint8 [N, 32, 32, 3] → mean colour → MatMul → logits [N, 10]: a contract classifier in 5 nodes."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x", "axes"], ["colour"], keepdims=0),
             helper.make_node("MatMul", ["colour", "w"], ["logits"])]
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])
    graph = helper.make_graph(nodes, "tiny", [image],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [weight, axes])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    if contract_metadata:
        contract.set_metadata(proto, "classify", "tiny", "fp32", labels=list(CIFAR10_LABELS))
    return proto


def save_with_external_data(proto: onnx.ModelProto, path, location: str = "w.data") -> None:
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=100)   # w (120 B) out, axes (16 B) in


@pytest.fixture()
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "a.png")
    return folder


# ----------------------------------------------------------------------------- writing

def test_write_model_writes_a_checked_file(tmp_path):
    out = contract.write_model(tiny_classifier(), tmp_path / "m.onnx")
    assert out == tmp_path / "m.onnx" and contract.check_model_file(out).is_contract
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    assert contract.run_onnx(out, images).shape == (3, 10)


@pytest.mark.parametrize("breakage,message", [
    (lambda p: contract.replace_metadata(p, {}), "metadata toolkit.task"),
    (lambda p: p.opset_import[0].__setattr__("version", 13), "opset 13"),
])
def test_write_model_refuses_a_broken_contract(tmp_path, breakage, message):
    proto = tiny_classifier()
    breakage(proto)
    with pytest.raises(contract.ExportError, match=message):
        contract.write_model(proto, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_wrapped_foreign_model_may_keep_opset_13(tmp_path):
    """Files the toolkit builds need opset 17; a wrapped foreign graph keeps its own, at least 13."""
    proto = tiny_classifier()
    reduce = proto.graph.node[1]                     # ReduceMean takes its axes as an attribute before 18
    del reduce.input[1]
    reduce.attribute.append(helper.make_attribute("axes", [1, 2]))
    del proto.graph.initializer[1]
    proto.opset_import[0].version = 13
    with pytest.raises(contract.ExportError, match="opset 13 < 17"):
        contract.write_model(proto, tmp_path / "made.onnx")
    contract.set_metadata(proto, "classify", "tiny", "fp32", wrapped={"layout": "nhwc"})
    assert contract.write_model(proto, tmp_path / "wrapped.onnx").is_file()
    proto.opset_import[0].version = 12
    with pytest.raises(contract.ExportError, match="opset 12 < 13"):
        contract.write_model(proto, tmp_path / "old.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrapped.onnx"]


def test_a_failing_gate_leaves_nothing(tmp_path):
    def gate(path):
        assert path.exists() and path.parent == tmp_path
        raise contract.ExportError("gate says no")
    with pytest.raises(contract.ExportError, match="gate says no"):
        contract.write_model(tiny_classifier(), tmp_path / "m.onnx", gate)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- reading

def test_contract_model_with_external_data_is_refused_by_every_reader(tmp_path, image_dir):
    model = tmp_path / "ext.onnx"
    save_with_external_data(tiny_classifier(), model)
    with pytest.raises(contract.ModelFileError, match=r"must be one file.*external data"):
        contract.check_model_file(model)
    tree = tmp_path / "tree" / "airplane"          # eval reads its data (class folders) before the models
    tree.mkdir(parents=True)
    (tree / "a.png").write_bytes((image_dir / "a.png").read_bytes())
    for args in (["infer", str(image_dir), "--model", str(model)],
                 ["eval", "--model", str(model), "--data", str(tree.parent)],
                 ["bench", "--model", str(model), "--runs", "1", "--warmup", "0", "--batch-size", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code != 0, (args, result.output)
        assert "external data" in result.stderr and "Traceback" not in result.output, (args, result.output)


def test_info_states_external_data_and_the_true_size(tmp_path):
    model = tmp_path / "ext.onnx"
    save_with_external_data(tiny_classifier(), model)
    total = (os.path.getsize(model) + os.path.getsize(tmp_path / "w.data")) / 1e6
    result = runner.invoke(app, ["info", str(model)])
    assert result.exit_code == 0, result.output
    assert "external data" in result.stdout and "w.data" in result.stdout and "VIOLATED" in result.stdout
    assert f"{total:.2f} MB in all" in result.stdout


def test_foreign_external_data_inside_the_folder_is_read(tmp_path):
    model = tmp_path / "foreign.onnx"
    save_with_external_data(tiny_classifier(contract_metadata=False), model)
    info = contract.check_model_file(model)
    assert not info.is_contract and info.external[0].inside and info.total_size > info.file_size
    from toolkit.edge.runtime import open_model
    assert open_model(model).run(np.zeros((1, 32, 32, 3), dtype=np.uint8)).shape == (1, 10)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_foreign_external_data_outside_the_folder_is_refused(tmp_path, how):
    inner, outer = tmp_path / "model", tmp_path / "elsewhere"
    inner.mkdir()
    outer.mkdir()
    save_with_external_data(tiny_classifier(contract_metadata=False), inner / "m.onnx", "w.data")
    (inner / "w.data").rename(outer / "w.data")
    proto = onnx.load(str(inner / "m.onnx"), load_external_data=False)
    location = {"dotdot": "../elsewhere/w.data", "absolute": str(outer / "w.data"), "symlink": "link.data"}[how]
    if how == "symlink":
        (inner / "link.data").symlink_to(outer / "w.data")
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, str(inner / "m.onnx"))
    with pytest.raises(contract.ModelFileError, match="outside the model's folder"):
        contract.check_model_file(inner / "m.onnx")
    result = runner.invoke(app, ["info", str(inner / "m.onnx")])
    assert result.exit_code == 0 and "outside the model's folder" in result.stdout


@pytest.mark.parametrize("content,message", [(b"", "empty file"), (b"nope, not a model", "not an ONNX model"),
                                             (b"\x08\x07", "not an ONNX model")])
def test_empty_and_non_onnx_files_are_refused(tmp_path, image_dir, content, message):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    for args in (["info", str(bad)], ["infer", str(image_dir), "--model", str(bad)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_metadata_helpers_round_trip():
    proto = tiny_classifier()
    contract.set_metadata(proto, "classify", "tiny", "fp16", tta="1", labels=["a", "b"])
    meta = contract.read_metadata(proto)
    assert meta["toolkit.precision"] == "fp16" and meta["toolkit.tta"] == "1"
    assert json.loads(meta["toolkit.labels"]) == ["a", "b"] and list(meta)[:4] == list(contract.REQUIRED_KEYS)


def test_eval_compares_each_row_with_the_fp32_file_of_its_own_model(tmp_path):
    """`toolkit eval`'s Δ/agreement: a row is compared with its own model's plain fp32 file (by
    `toolkit.model`), never with another model's; a flip-averaged variant with its model's plain one."""
    from toolkit.edge.infer import Evaluation, compare_to_reference

    def evaluated(name: str, model: str, precision: str, predictions: list[int], **extra) -> Evaluation:
        proto = tiny_classifier()
        contract.set_metadata(proto, "classify", model, precision, **extra)
        path = contract.write_model(proto, tmp_path / name)
        preds = np.asarray(predictions)
        return Evaluation(model=str(path), precision=precision, size_mb=0.0, n=len(preds),
                          accuracy=float(np.mean(preds == 0)), per_class={}, predictions=preds)

    a_tta = evaluated("a.tta.onnx", "a", "fp32", [0, 0, 0, 0], tta="1")   # listed before its plain fp32
    a = evaluated("a.onnx", "a", "fp32", [0, 0, 1, 1])
    a_int8 = evaluated("a.int8.onnx", "a", "int8", [0, 0, 0, 1])
    b_int8 = evaluated("b.int8.onnx", "b", "int8", [1, 1, 1, 0])
    b = evaluated("b.onnx", "b", "fp32", [1, 1, 1, 1])
    compare_to_reference([a_tta, a, a_int8, b_int8, b])
    assert (a.delta_vs_reference, a.agreement_with_reference) == (0.0, 1.0)
    assert (a_tta.delta_vs_reference, a_tta.agreement_with_reference) == (0.5, 0.5)
    assert (a_int8.delta_vs_reference, a_int8.agreement_with_reference) == (0.25, 0.75)
    assert (b_int8.delta_vs_reference, b_int8.agreement_with_reference) == (0.25, 0.75)
    assert (b.delta_vs_reference, b.agreement_with_reference) == (0.0, 1.0)
