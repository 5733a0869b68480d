"""The ONNX graph utilities (toolkit/edge/onnxgraph.py): one topological sort, one reader of a
graph's input signature, one "load ONNX or raise", used by every stage."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolkit.edge import onnxgraph
from toolkit.edge.onnxgraph import DeclaredTensor, input_signature, load_onnx, output_signature, topological_sort


def _graph(nodes, inputs=("x",), initializers=()) -> onnx.GraphProto:
    return helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3]) for name in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], list(initializers))


def test_the_sort_puts_producers_first_and_keeps_the_order_of_nodes_ready_together():
    # The fp16 converter appends its input Casts after the nodes that read them.
    graph = _graph([helper.make_node("Relu", ["a"], ["b"], name="relu"),
                    helper.make_node("Neg", ["x"], ["n"], name="neg"),
                    helper.make_node("Add", ["b", "n"], ["y"], name="add"),
                    helper.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT, name="cast")])
    topological_sort(graph)
    assert [n.name for n in graph.node] == ["neg", "cast", "relu", "add"]
    onnx.checker.check_graph(graph)


@pytest.mark.parametrize("nodes", [
    [helper.make_node("Relu", ["b"], ["a"], name="one"), helper.make_node("Relu", ["a"], ["b"], name="two"),
     helper.make_node("Add", ["x", "b"], ["y"], name="out")],
    [helper.make_node("Add", ["x", "y"], ["y"], name="self")],
], ids=["two-node cycle", "self-loop"])
def test_a_cycle_is_a_one_line_value_error_and_the_graph_is_left_as_it_was(nodes):
    graph = _graph(nodes)
    before = [n.name for n in graph.node]
    with pytest.raises(ValueError, match="the graph has a cycle") as raised:
        topological_sort(graph)
    assert "\n" not in str(raised.value)
    assert [n.name for n in graph.node] == before


def test_names_no_node_produces_count_as_available():
    """Graph inputs, initializers and outer-scope names: the checker judges those, not the sort."""
    graph = _graph([helper.make_node("Add", ["x", "outer"], ["y"], name="add")])
    topological_sort(graph)
    assert [n.name for n in graph.node] == ["add"]


def test_the_signature_leaves_out_initializers_listed_as_inputs():
    weight = numpy_helper.from_array(np.ones(3, np.float32), "w")
    graph = _graph([helper.make_node("Add", ["x", "w"], ["y"])], inputs=("x", "w"), initializers=[weight])
    graph.input[0].type.tensor_type.shape.dim.add()          # a dim with neither size nor name
    assert input_signature(graph) == [DeclaredTensor("x", "float", ("N", 3, None))]
    assert [v.name for v in onnxgraph.graph_inputs(helper.make_model(graph))] == ["x"]
    assert output_signature(graph)[0].describe() == "y float [N, 3]"
    assert not input_signature(graph)[0].static and DeclaredTensor("t", "uint8", (1, 2)).static


def test_load_onnx_raises_the_callers_error_in_one_line(tmp_path):
    class StageError(ValueError):
        pass

    with pytest.raises(StageError, match=r"missing\.onnx: no such model file"):
        load_onnx(tmp_path / "missing.onnx", StageError)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\x00 not protobuf \n" * 40)
    with pytest.raises(StageError, match=r"junk\.onnx: not an ONNX model \(") as raised:
        load_onnx(junk, StageError)
    assert "\n" not in str(raised.value)
    good = tmp_path / "good.onnx"
    onnx.save(helper.make_model(_graph([helper.make_node("Relu", ["x"], ["y"])])), str(good))
    assert load_onnx(good).graph.node[0].op_type == "Relu"
