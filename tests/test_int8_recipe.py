"""The int8 recipe (toolkit/edge/quantize/recipe.py): the folded integer input head is the same function
as the float head, the output Q/DQ pair goes, and a quantized model built with it runs in
onnxruntime with the first convolution reading the uint8 pixels directly. Graphs are built here.

Run: .venv/bin/pytest tests/test_int8_recipe.py
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import CNN_MEAN, contract_cnn
from toolkit.edge.quantize import recipe as int8_recipe
from toolkit.edge.quantize import variants as quantize


def run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize("pads", [(1, 1, 1, 1), (0, 0, 0, 0)])
def test_folded_head_is_the_same_function(images, pads):
    reference = run(contract_cnn(pads), images)
    model = contract_cnn(pads)
    head = int8_recipe.fold_input_head(model, "exact")
    assert head is not None and head.zero == round(CNN_MEAN.mean())
    onnx.checker.check_model(model, full_check=True)
    # Only the border fill is rounded (to whole grey levels): a fraction of a level, times the weights.
    np.testing.assert_allclose(run(model, images), reference, atol=0.02)
    assert {"Sub", "Mul"} & {n.op_type for n in model.graph.node if not n.name.startswith("toolkit_int8/")} == set()


def test_zero_point_border_differs_only_at_the_border(images):
    reference = run(contract_cnn(), images)
    model = contract_cnn()
    int8_recipe.fold_input_head(model, "zero-point")
    assert "Pad" not in {n.op_type for n in model.graph.node}
    assert np.abs(run(model, images) - reference).max() < 0.5


def test_packed_head_is_the_same_function(images):
    same = contract_cnn()
    int8_recipe.fold_input_head(same, "exact")
    model = contract_cnn()
    head = int8_recipe.fold_input_head(model, "exact", pack=True)
    assert head is not None and head.packed
    onnx.checker.check_model(model, full_check=True)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    assert list(weight.dims) == [16, 12, 3, 2]           # 4 pixels × 4 outputs, 4 pixels × 3 channels, k × 2
    np.testing.assert_allclose(run(model, images), run(same, images), atol=1e-4)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 0, 0)])
def test_packing_needs_a_same_convolution(images, pads):
    model = contract_cnn(pads)
    head = int8_recipe.fold_input_head(model, "exact", pack=True)
    assert head is not None and not head.packed
    np.testing.assert_allclose(run(model, images), run(contract_cnn(pads), images), atol=0.02)


def test_packed_quantized_keeps_the_unpacking_in_uint8(tmp_path, images):
    fp32, pre = tmp_path / "fp32.onnx", tmp_path / "pre.onnx"
    onnx.save(contract_cnn(), fp32)
    quantize.preprocess_for_quantization(fp32, pre)
    calibration = np.random.default_rng(2).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    plain = quantize.quantize_int8_static(pre, tmp_path / "plain.onnx", calibration,
                                          recipe=int8_recipe.Int8Recipe(pack=False))
    packed = quantize.quantize_int8_static(pre, tmp_path / "packed.onnx", calibration,
                                           recipe=int8_recipe.Int8Recipe(pack=True))
    onnx.checker.check_model(packed, full_check=True)
    assert any(n.op_type == "DequantizeLinear" and n.input[0] == int8_recipe.PACKED for n in packed.graph.node)
    assert not any(n.op_type == "Cast" for n in packed.graph.node)
    # The unpacking Transposes sit between QuantizeLinear/DequantizeLinear pairs: they move uint8.
    produced_by = {out: n for n in packed.graph.node for out in n.output}
    unpack = [n for n in packed.graph.node if n.op_type in ("Transpose", "Reshape") and n.input[0] != "image"
              and n.output[0] != int8_recipe.PACKED and not n.output[0].startswith("toolkit_int8/pack/nhwc")]
    assert unpack and all(produced_by[n.input[0]].op_type == "DequantizeLinear" for n in unpack)
    # onnxruntime's NHWC layout cancels them: the optimised graph keeps no Transpose after the head.
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(tmp_path / "packed.onnx"), options, providers=["CPUExecutionProvider"])
    optimised = onnx.load(str(tmp_path / "optimised.onnx"))
    transposes = [n for n in optimised.graph.node if n.op_type == "Transpose"]
    assert len(transposes) <= sum(n.op_type == "Transpose" for n in onnx.load(str(tmp_path / "plain.onnx")).graph.node)
    reference = run(contract_cnn(), images)
    assert np.abs(run(packed, images) - reference).max() <= np.abs(run(plain, images) - reference).max() + 0.05


def test_other_heads_are_left_alone():
    model = contract_cnn()
    model.graph.node[2].op_type = "Add"          # not the contract's Sub(mean)
    before = model.SerializeToString()
    assert int8_recipe.fold_input_head(model) is None and model.SerializeToString() == before
    with pytest.raises(ValueError):
        int8_recipe.fold_input_head(contract_cnn(), "reflect")


def test_quantized_with_the_recipe(tmp_path, images):
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(contract_cnn(), fp32)
    pre = tmp_path / "pre.onnx"
    quantize.preprocess_for_quantization(fp32, pre)
    calibration = np.random.default_rng(2).integers(0, 256, (32, 8, 8, 3), dtype=np.uint8)
    plain = quantize.quantize_int8_static(pre, tmp_path / "plain.onnx", calibration, recipe=int8_recipe.BASELINE_RECIPE)
    tuned = quantize.quantize_int8_static(pre, tmp_path / "tuned.onnx", calibration, target="openvino")
    onnx.checker.check_model(tuned, full_check=True)
    first_dq = next(n for n in tuned.graph.node                       # OpenVINO's head pads in NHWC
                    if n.op_type == "DequantizeLinear" and n.input[0] == "toolkit_int8/nhwc/filled")
    scale = next(t for t in tuned.graph.initializer if t.name == first_dq.input[1])
    assert float(numpy_helper.to_array(scale)) == 1.0                  # pixels are exact as uint8
    assert not any(n.op_type == "Cast" for n in tuned.graph.node)     # no float round trip left
    assert any(n.op_type == "QuantizeLinear" and n.output[0].startswith("logits") for n in plain.graph.node)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and "logits" in n.output
                   for n in tuned.graph.node)
    reference = run(contract_cnn(), images)
    assert np.abs(run(tuned, images) - reference).max() <= np.abs(run(plain, images) - reference).max() + 0.05


def test_drop_output_qdq_keeps_other_pairs():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
             helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q2"], name="q2"),
             helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["inner"], name="dq2"),
             helper.make_node("Relu", ["inner"], ["y2"], name="relu2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, [2])],
                              [numpy_helper.from_array(np.float32(0.1), "s"),
                               numpy_helper.from_array(np.uint8(0), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert int8_recipe.drop_output_qdq(model) == 1
    assert [n.name for n in model.graph.node] == ["relu", "q2", "dq2", "relu2"]
    assert list(model.graph.node[0].output) == ["y"]
    onnx.checker.check_model(model, full_check=True)
