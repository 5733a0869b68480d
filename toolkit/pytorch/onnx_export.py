"""torch module → ONNX graph: the dynamo exporter plus the clean-ups every exported graph gets.

- Debug metadata the exporter attaches to nodes and values (source stack traces with absolute
  paths, Python module names) is removed: a file then depends on the weights and the maths only,
  not on where the checkout lies, so `make models` builds the same bytes in every clone.
- BatchNorm is folded. The exporter's optimiser folds Conv → BatchNorm but not Conv → MaxPool →
  BatchNorm; max-pooling commutes with a per-channel affine map whose scales are all positive, so
  such a BatchNorm folds into the convolution too. A BatchNorm with a non-positive scale cannot; it
  stays and `torch_to_onnx` says so.
- A Gemm/MatMul output divided (or multiplied) by a constant scalar is folded into the weights
  (a logit temperature), so int8 quantization sees no float island behind the classifier head.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from toolkit._version import __version__
from toolkit.edge.contract import OPSET


def torch_to_onnx(module, example_inputs: tuple, input_names: list[str], output_names: list[str],
                  dynamic_batch: bool = True, dynamic_dims: dict | None = None,
                  log: Callable[[str], object] = print) -> onnx.ModelProto:
    """Export with the dynamo exporter (it lowers torch.fft to ONNX DFT; the TorchScript one cannot), then
    strip debug metadata and fold BatchNorm and scalar scales (module docstring)."""
    import torch

    # The exporter logs about optional torchvision ops and deprecated pytree types; not the user's concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    dynamic_shapes = None
    if dynamic_batch or dynamic_dims:
        batch = torch.export.Dim("N")
        shapes = []
        for name in input_names:
            dims = {0: batch} if dynamic_batch else {}
            dims.update((dynamic_dims or {}).get(name, {}))
            shapes.append(dims)
        # Positional, not keyed by name: the module's forward() argument may be called anything
        # (nn.Sequential's is `input`), while input_names is what the ONNX graph shows.
        dynamic_shapes = tuple(shapes)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, example_inputs, dynamo=True, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes,
                                    opset_version=OPSET, external_data=False, verbose=False, optimize=True)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    proto.producer_name = "toolkit"
    proto.producer_version = __version__
    strip_debug_metadata(proto)
    kept = fold_pooled_batchnorm(proto)
    if kept:
        log(f"note: {kept} BatchNorm node(s) after a max-pool have a non-positive scale and stay unfolded")
    fold_scalar_scale(proto)
    return proto


# ----------------------------------------------------------------------------- debug metadata

def _strip_graph(graph: onnx.GraphProto) -> None:
    del graph.metadata_props[:]
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del value.metadata_props[:]
    _strip_nodes(graph.node)


def _strip_nodes(nodes) -> None:
    for node in nodes:
        del node.metadata_props[:]
        node.ClearField("doc_string")
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_graph(attr.g)
            for sub in attr.graphs:
                _strip_graph(sub)


def strip_debug_metadata(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Remove per-node and per-value metadata (the model's own metadata_props stay)."""
    _strip_graph(proto.graph)
    for function in proto.functions:
        del function.metadata_props[:]
        _strip_nodes(function.node)
    return proto


# ----------------------------------------------------------------------------- folding

class _Graph:
    """Producer / consumer indexes over a graph's top level, for local rewrites."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.init = {t.name: t for t in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def sole_producer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The node of `op_type` producing `name`, if `name` feeds exactly one node and no graph output."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or name in self.outputs or len(self.consumers.get(name, [])) != 1:
            return None
        return node

    def array(self, name: str) -> np.ndarray | None:
        return numpy_helper.to_array(self.init[name]) if name in self.init else None

    def add(self, array: np.ndarray, name: str) -> str:
        unique, i = name, 0
        while unique in self.init or unique in self.producer:
            i += 1
            unique = f"{name}_{i}"
        tensor = numpy_helper.from_array(array, unique)
        self.graph.initializer.append(tensor)
        self.init[unique] = tensor
        return unique


def _attr(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _tidy(graph: onnx.GraphProto) -> None:
    """After a fold: drop initializers no node reads any more and value_info of names that no
    longer exist (neither produced by a node nor an initializer nor a graph input)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    alive = {out for node in graph.node for out in node.output} | {t.name for t in keep} | {i.name for i in graph.input}
    info = [v for v in graph.value_info if v.name in alive]
    del graph.value_info[:]
    graph.value_info.extend(info)


def fold_pooled_batchnorm(proto: onnx.ModelProto) -> int:
    """Fold Conv → MaxPool → BatchNormalization (inference form) into Conv → MaxPool when every
    per-channel scale γ/√(σ²+ε) is positive. Returns how many such BatchNorms had to stay."""
    g = _Graph(proto.graph)
    kept = folded = 0
    for bn in [n for n in proto.graph.node if n.op_type == "BatchNormalization" and len(n.output) == 1]:
        pool = g.sole_producer(bn.input[0], "MaxPool")
        if pool is None or (len(pool.output) > 1 and pool.output[1]):
            continue
        conv = g.sole_producer(pool.input[0], "Conv")
        if conv is None:
            continue
        params = [g.array(name) for name in bn.input[1:5]]
        weight = g.array(conv.input[1])
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        bias = g.array(conv.input[2]) if has_bias else None
        if weight is None or weight.dtype != np.float32 or (has_bias and bias is None) \
                or any(p is None for p in params):
            continue
        if bias is None:
            bias = np.zeros(weight.shape[0], dtype=np.float32)
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(_attr(bn, "epsilon", 1e-5)))
        if not np.all(scale > 0):
            kept += 1
            continue
        folded_w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        folded_b = bias.astype(np.float64) * scale + beta - mean * scale
        w_name = g.add(folded_w.astype(np.float32), f"{conv.input[1]}.bn_folded")
        b_name = g.add(folded_b.astype(np.float32), f"{conv.output[0]}.bias_bn_folded")
        conv.input[1] = w_name
        if has_bias:
            conv.input[2] = b_name
        else:
            conv.input.append(b_name)
        pool.output[0] = bn.output[0]          # what read the BatchNorm now reads the pool
        proto.graph.node.remove(bn)
        folded += 1
    if folded:
        _tidy(proto.graph)
    return kept


def fold_scalar_scale(proto: onnx.ModelProto) -> int:
    """Fold `Gemm|MatMul(x, W) / c` (or `· c`) with a constant scalar c into W. Returns the count."""
    g = _Graph(proto.graph)
    folded = 0
    for node in [n for n in proto.graph.node if n.op_type in ("Div", "Mul")]:
        for data, const in ((0, 1), (1, 0)) if node.op_type == "Mul" else ((0, 1),):
            c = g.array(node.input[const])
            head = g.producer.get(node.input[data])
            if c is None or c.size != 1 or head is None or head.op_type not in ("Gemm", "MatMul"):
                continue
            if g.sole_producer(node.input[data], head.op_type) is None:
                continue
            factor = 1.0 / float(c.reshape(())) if node.op_type == "Div" else float(c.reshape(()))
            if head.op_type == "Gemm":
                if _fold_into_gemm(g, head, factor):
                    break
            elif (w := g.array(head.input[1])) is not None and w.dtype == np.float32:
                head.input[1] = g.add((w.astype(np.float64) * factor).astype(np.float32), f"{head.input[1]}.scaled")
                break
        else:
            continue
        head.output[0] = node.output[0]
        proto.graph.node.remove(node)
        folded += 1
    if folded:
        _tidy(proto.graph)
    return folded


def _fold_into_gemm(g: _Graph, gemm: onnx.NodeProto, factor: float) -> bool:
    """Scale Gemm's B (and C) by `factor`, taking its alpha/beta in too. False if it cannot."""
    w = g.array(gemm.input[1])
    c = g.array(gemm.input[2]) if len(gemm.input) > 2 and gemm.input[2] else None
    if w is None or w.dtype != np.float32 or (len(gemm.input) > 2 and gemm.input[2] and c is None):
        return False
    alpha, beta = float(_attr(gemm, "alpha", 1.0)), float(_attr(gemm, "beta", 1.0))
    gemm.input[1] = g.add((w.astype(np.float64) * alpha * factor).astype(np.float32), f"{gemm.input[1]}.scaled")
    if c is not None:
        gemm.input[2] = g.add((c.astype(np.float64) * beta * factor).astype(np.float32), f"{gemm.input[2]}.scaled")
    keep = [a for a in gemm.attribute if a.name not in ("alpha", "beta")]
    del gemm.attribute[:]
    gemm.attribute.extend(keep)
    return True
