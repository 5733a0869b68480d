"""The NHWC layout rewrites (toolkit/edge/quantize/nhwc.py): each is the same function as the graph it
rewrites, and the runtime it is for runs it the way it was made for — onnxruntime cancels the NHWC
flatten's Transpose, OpenVINO runs the first convolution of the NHWC head in int8 on the image as
it lies. Graphs are built here.

Run: .venv/bin/pytest tests/test_int8_nhwc.py
"""

from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import contract_cnn
from toolkit.edge.quantize import nhwc as int8_nhwc
from toolkit.edge.quantize import recipe as int8_recipe
from toolkit.edge.quantize import variants as quantize
from toolkit.edge.runtime.openvino import version as openvino_version


def quantized(tmp_path, recipe: int8_recipe.Int8Recipe, pads=(1, 1, 1, 1)) -> onnx.ModelProto:
    fp32, pre = tmp_path / "fp32.onnx", tmp_path / "pre.onnx"
    onnx.save(contract_cnn(pads), fp32)
    quantize.preprocess_for_quantization(fp32, pre)
    calibration = np.random.default_rng(2).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    return quantize.quantize_int8_static(pre, tmp_path / "int8.onnx", calibration, recipe=recipe)


def run_as_written(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    """Every node runs as written (no fusion), so moving data around must not change one bit."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 0, 0, 0), (1, 2, 0, 1)])
def test_nhwc_head_is_the_same_function(tmp_path, pads):
    images = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    before = quantized(tmp_path, replace(int8_recipe.OPENVINO_RECIPE, nhwc_head=False), pads)
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert int8_nhwc.nhwc_input_head(after)
    onnx.checker.check_model(after, full_check=True)
    readers = [n.op_type for n in after.graph.node if "image" in n.input]
    assert readers == (["Pad"] if any(pads) else ["DequantizeLinear"])
    produced_by = {out: n for n in after.graph.node for out in n.output}
    transpose = next(n for n in after.graph.node if n.op_type == "Transpose")
    assert produced_by[transpose.input[0]].op_type == "DequantizeLinear"
    np.testing.assert_array_equal(run_as_written(after, images), run_as_written(before, images))
    assert not int8_nhwc.nhwc_input_head(after)                  # done once; the rewritten head is left alone


def test_other_heads_are_left_alone(tmp_path):
    model = quantized(tmp_path, replace(int8_recipe.OPENVINO_RECIPE, nhwc_head=False))
    where = next(n for n in model.graph.node if n.op_type == "Where")
    border = next(t for t in model.graph.initializer if t.name == where.input[0])
    mask = numpy_helper.to_array(border).copy()
    mask[:, 4, 4] = True                                         # the fill would overwrite a pixel of the image
    border.CopyFrom(numpy_helper.from_array(mask, border.name))
    before = model.SerializeToString()
    assert not int8_nhwc.nhwc_input_head(model) and model.SerializeToString() == before
    float_head = contract_cnn()                                  # no DequantizeLinear after the Transpose
    assert not int8_nhwc.nhwc_input_head(float_head)


@pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed (toolkit[openvino])")
@pytest.mark.parametrize("nhwc_head", [True, False])
def test_openvino_runs_the_nhwc_head_without_a_transpose(tmp_path, nhwc_head):
    """The reason for the rewrite, checked on OpenVINO's own compiled graph (static shapes): the
    convolution runs in int8 either way, but only the NHWC head leaves no Transpose to execute."""
    import openvino as ov

    onnx.save(quantized(tmp_path, replace(int8_recipe.OPENVINO_RECIPE, nhwc_head=nhwc_head)), tmp_path / "m.onnx")
    core = ov.Core()
    model = core.read_model(str(tmp_path / "m.onnx"))
    model.reshape({0: [4, 8, 8, 3]})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    compiled.create_infer_request().infer({0: np.zeros((4, 8, 8, 3), np.uint8)})    # marks what never runs
    executed = [(info["layerType"].astype(str), info["primitiveType"].astype(str))
                for info in (op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops())
                if info["execTimeMcs"].astype(str) != "not_executed" or info["layerType"].astype(str) == "Convolution"]
    convolutions = [primitive for kind, primitive in executed if kind == "Convolution"]
    assert convolutions and all(primitive.endswith("_I8") for primitive in convolutions)
    assert ("Transpose" in {kind for kind, _ in executed}) != nhwc_head


def flatten_cnn(gemm: bool) -> onnx.ModelProto:
    """float [N, 3, 4, 4] → Conv(3→5) → Relu → Reshape [N, 80] → Gemm (transB) | MatMul → logits."""
    rng = np.random.default_rng(3)
    fc = rng.standard_normal((2, 80) if gemm else (80, 2)).astype(np.float32)
    consts = [numpy_helper.from_array(rng.standard_normal((5, 3, 3, 3)).astype(np.float32), "w"),
              numpy_helper.from_array(np.array([-1, 80], np.int64), "shape"), numpy_helper.from_array(fc, "fc")]
    head = helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1) if gemm else \
        helper.make_node("MatMul", ["flat", "fc"], ["logits"])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "shape"], ["flat"]), head]
    graph = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("gemm", [True, False])
def test_flatten_nhwc_is_the_same_function(gemm):
    x = np.random.default_rng(4).standard_normal((3, 3, 4, 4)).astype(np.float32)

    def logits(model):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    model = flatten_cnn(gemm)
    reference = logits(model)
    assert int8_nhwc.flatten_nhwc(model) == 1
    onnx.checker.check_model(model, full_check=True)
    transpose = next(n for n in model.graph.node if n.op_type == "Transpose")
    assert list(transpose.attribute[0].ints) == [0, 2, 3, 1]
    np.testing.assert_allclose(logits(model), reference, rtol=1e-5, atol=1e-5)
    # A map of one pixel needs no reorder, and a Reshape whose reader is not a Gemm is left alone.
    again = flatten_cnn(gemm)
    again.graph.node[3].op_type = "Add"
    assert int8_nhwc.flatten_nhwc(again) == 0


def test_quantized_flatten_runs_without_a_transpose(tmp_path):
    """In the quantized file the NHWC flatten's Transpose moves uint8, and onnxruntime's layout
    cancels it against its own: the optimised graph keeps only the input's (the float input is NCHW)."""
    fp32, pre = tmp_path / "fp32.onnx", tmp_path / "pre.onnx"
    model = flatten_cnn(gemm=True)
    onnx.save(model, fp32)
    quantize.preprocess_for_quantization(fp32, pre)
    calibration = np.random.default_rng(5).standard_normal((16, 3, 4, 4)).astype(np.float32)
    flat = quantize.quantize_int8_static(pre, tmp_path / "flat.onnx", calibration, recipe=int8_recipe.CPU_RECIPE)
    assert any(n.op_type == "Transpose" for n in flat.graph.node)
    read = {name for n in flat.graph.node for name in n.input}
    assert all(t.name in read for t in flat.graph.initializer)        # no dead initializers left behind
    quantize.quantize_int8_static(pre, tmp_path / "plain.onnx", calibration,
                                  recipe=replace(int8_recipe.CPU_RECIPE, nhwc_flatten=False))

    def transposes_left(name: str) -> int:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"optimised.{name}")
        ort.InferenceSession(str(tmp_path / name), options, providers=["CPUExecutionProvider"])
        return sum(n.op_type == "Transpose" for n in onnx.load(str(tmp_path / f"optimised.{name}")).graph.node)

    assert transposes_left("flat.onnx") == transposes_left("plain.onnx") - 1 == 1
    session = ort.InferenceSession(str(tmp_path / "flat.onnx"), providers=["CPUExecutionProvider"])
    x = calibration[:4]
    reference = ort.InferenceSession(fp32.read_bytes(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(session.run(None, {"x": x})[0] - reference).max() < 0.25 * np.abs(reference).max()
