"""`toolkit bench` and `toolkit info` on ONNX files the toolkit did not make: inputs synthesised from
the declared dtypes and shapes, `--shape NAME=DIMS`, `--batch-size` filling a dynamic first
dimension, and a dynamic dimension left unresolved as a one-line error that names it.

Run: .venv/bin/pytest tests/test_bench_inputs.py
"""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.edge import bench
from toolkit.edge.bench.inputs import TensorSpec, guess_precision, synthesised_feeds


def foreign_nchw(path):
    """A classifier as other tools export it: float32 [batch, 3, 32, 32], normalised outside the
    graph, no toolkit metadata. Conv(3→8, 3×3, same) → Relu → GlobalAveragePool → Flatten → Gemm."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(5, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "theirs", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def two_inputs(path):
    """Two inputs of different dtypes and a dynamic sequence length:
    features float32 [N, seq, 4] and ids int64 [N, seq] → features · 2 + Cast(ids) broadcast → [N, seq, 4]."""
    nodes = [helper.make_node("Unsqueeze", ["ids", "axis"], ["ids3"]),
             helper.make_node("Cast", ["ids3"], ["idsf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["features", "two"], ["scaled"]),
             helper.make_node("Add", ["scaled", "idsf"], ["out"])]
    graph = helper.make_graph(
        nodes, "two",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", "seq", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", "seq", 4])],
        [numpy_helper.from_array(np.array([2], np.int64), "axis"), numpy_helper.from_array(np.float32(2.0), "two")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def run_json(*args) -> dict:
    result = CliRunner().invoke(app, ["bench", *map(str, args), "--json", "--no-roof", "--warmup", "0"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_float_nchw_model_with_dynamic_batch(tmp_path):
    path = foreign_nchw(tmp_path / "theirs.onnx")
    doc = run_json("--model", path, "--batch-size", 1, "--batch-size", 3, "--runs", 3)
    assert [r["batch_size"] for r in doc["rows"]] == [1, 3]
    for row, batch in zip(doc["rows"], (1, 3)):
        assert row["model"] == "theirs" and row["precision"] == "fp32" and row["accuracy"] is None
        assert row["shapes"] == {"input": [batch, 3, 32, 32]}
        assert row["input"].startswith("synthesised") and "standard normal" in row["input"]
        assert row["multiply_adds_per_item"] == 32 * 32 * 8 * 27 + 8 * 5
    # --shape sets the batch itself: the --batch-size list then collapses to that one row
    doc = run_json("--model", path, "--shape", "input=2x3x32x32", "--batch-size", 1, "--batch-size", 3, "--runs", 2)
    assert [r["batch_size"] for r in doc["rows"]] == [2]


def test_two_inputs_of_different_dtypes(tmp_path):
    path = two_inputs(tmp_path / "two.onnx")
    doc = run_json("--model", path, "--shape", "ids=2x7", "--batch-size", 5, "--runs", 2)
    (row,) = doc["rows"]
    # ids fixes N=2 and seq=7 for both inputs: the symbols are shared, the batch size does not override them
    assert row["shapes"] == {"features": [2, 7, 4], "ids": [2, 7]} and row["batch_size"] == 2
    assert "ids int64 [2×7] integers 0–9" in row["input"] and "features float [2×7×4] standard normal" in row["input"]
    assert row["multiply_adds_per_item"] is None


def test_unresolved_dynamic_dimension_is_one_line_naming_it(tmp_path):
    path = two_inputs(tmp_path / "two.onnx")
    result = CliRunner().invoke(app, ["bench", "--model", str(path), "--runs", "1", "--no-roof"])
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]          # then: no model could be measured
    assert "'features' dimension 1 ('seq') is dynamic" in first and "--shape features=" in first


def test_resolve_shapes_rules():
    specs = [TensorSpec("a", "float", ("N", 3, None)), TensorSpec("b", "int64", ("N",))]
    assert bench.resolve_shapes(specs, {"a": (4, 3, 9)}, 1, "m") == {"a": (4, 3, 9), "b": (4,)}
    with pytest.raises(bench.BenchError, match="dimension 2 is dynamic"):
        bench.resolve_shapes(specs, {}, 2, "m")
    with pytest.raises(bench.BenchError, match="fixes it at 3"):
        bench.resolve_shapes(specs, {"a": (4, 5, 9)}, 1, "m")
    with pytest.raises(bench.BenchError, match="'N' is 4 elsewhere"):
        bench.resolve_shapes(specs, {"a": (4, 3, 9), "b": (5,)}, 1, "m")
    assert bench.parse_shapes(["x=8x3x224x224", "y=2,5"]) == {"x": (8, 3, 224, 224), "y": (2, 5)}
    for bad in (["x"], ["x=0x3"], ["=3"], ["x=3xa"]):
        with pytest.raises(bench.BenchError):
            bench.parse_shapes(bad)


@pytest.mark.parametrize("dtype", ["float", "float16", "double", "uint8", "int8", "int32", "int64", "uint16", "bool",
                                   "string"])
def test_every_feedable_dtype_runs_in_onnxruntime(tmp_path, dtype):
    """Identity on each dtype: the synthesised array is accepted by onnxruntime as the declared type."""
    import onnxruntime as ort

    elem = getattr(TensorProto, dtype.upper())
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id",
                              [helper.make_tensor_value_info("x", elem, ["N", 3])],
                              [helper.make_tensor_value_info("y", elem, ["N", 3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = synthesised_feeds([TensorSpec("x", dtype, ("N", 3))], {"x": (2, 3)})
    assert len(feeds) >= bench.MIN_BUFFERS
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, feeds[0])
    assert out.shape == (2, 3)
    if dtype not in ("float", "float16", "double", "bool", "string"):
        assert out.min() >= 0 and out.max() <= (255 if dtype == "uint8" else 9)
    assert not np.array_equal(feeds[0]["x"], feeds[1]["x"]) or dtype == "bool"


def test_unfeedable_dtype_is_named():
    with pytest.raises(bench.BenchError, match="bfloat16"):
        bench.synthesise("bfloat16", (1,), np.random.default_rng(0))


def test_precision_of_a_foreign_file(tmp_path):
    proto = onnx.load(foreign_nchw(tmp_path / "f.onnx"))
    assert guess_precision(proto) == "fp32"
    proto.graph.node.append(helper.make_node("QuantizeLinear", ["output", "s"], ["q"]))
    assert guess_precision(proto) == "int8"


def test_info_on_a_foreign_file(tmp_path):
    path = foreign_nchw(tmp_path / "theirs.onnx")
    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.stderr
    assert "input" in result.stdout and "Conv" in result.stdout
