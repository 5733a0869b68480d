"""The graph side of `toolkit wrap`: read a foreign ONNX classifier, tell its interface, and join
the contract's preprocessing and post-processing to it with `onnx.compose.merge_models`.

Reading is guarded (toolkit.edge.modelfile.check_model_file): one regular file under protobuf's 2 GB
limit, external data only from inside the model's own folder. The foreign graph itself is never
edited beyond what joining needs (opset raised to 13 if older, a fixed batch made dynamic, names
prefixed only on a collision).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolkit.edge import contract
from toolkit.edge.contract import MIN_OPSET_WRAPPED, WRAPPED_KEY, opset_version
from toolkit.edge.errors import first_line, shown
from toolkit.edge.onnxgraph import DeclaredTensor, graph_inputs

TINY = 1e-38                     # log(0) would be -inf; the smallest normal float32 keeps logits finite
PREFIX = "toolkit_wrap/"
FLOAT_TYPES: dict[int, type] = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16,
                                TensorProto.DOUBLE: np.float64}
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger"}


class WrapError(ValueError):
    """The model cannot be wrapped as asked; the message is one line for the user."""


@dataclass(frozen=True)
class WrapSpec:
    """How the foreign model wants its input, and what to call the result."""
    layout: str | None = None            # nchw | nhwc; None: inferred from which axis has size 3
    channels: str = "rgb"                # rgb | bgr
    scale: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)   # R,G,B whatever `channels` is
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)    # R,G,B whatever `channels` is
    labels: list[str] | None = None
    size: tuple[int, int] | None = None  # where the model's spatial size is dynamic
    output: str | None = None            # where the model has several outputs
    outputs: str = "logits"              # logits | probabilities
    name: str | None = None


# ----------------------------------------------------------------------------- reading the foreign model

def load_foreign(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file made elsewhere, external data included — read only if every external
    file lies inside the model's own folder (the contract's reading check)."""
    from onnx.external_data_helper import load_external_data_for_model

    path = Path(path)
    try:
        found = contract.check_model_file(path)
    except contract.ModelFileError as exc:
        raise WrapError(str(exc)) from None
    if found.total_size > contract.PROTOBUF_LIMIT:
        raise WrapError(f"{shown(path)}: model and external data exceed protobuf's 2 GB limit, so the wrapped "
                        f"model cannot be one file")
    if found.external:
        load_external_data_for_model(found.proto, str(path.parent))
    return found.proto


def _dims(value_info) -> list[int | None] | None:
    """The fixed sizes of a value's dims (None where not fixed); None where it declares no shape."""
    if not value_info.type.tensor_type.HasField("shape"):
        return None
    return DeclaredTensor.of(value_info).sizes()


def source_precision(model: onnx.ModelProto) -> str:
    """fp32, fp16 or int8: what the foreign model computes in."""
    if any(n.op_type in QUANTIZED_OPS for n in model.graph.node):
        return "int8"
    weights = {TensorProto.FLOAT16: 0, TensorProto.FLOAT: 0}
    for t in model.graph.initializer:
        if t.data_type in weights:
            weights[t.data_type] += int(np.prod(t.dims))
    return "fp16" if weights[TensorProto.FLOAT16] > weights[TensorProto.FLOAT] else "fp32"


# ----------------------------------------------------------------------------- the model's interface

@dataclass
class Interface:
    input: str
    dtype: int
    layout: str
    height: int
    width: int
    static_batch: int | None
    output: str
    out_rank: int | None
    classes: int | None


def interface(model: onnx.ModelProto, spec: WrapSpec) -> Interface:
    """Which input and output to wrap, in which layout and size; WrapError if it cannot be told."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        raise WrapError(f"wrap takes a model with one image input; this one has {len(inputs)} "
                        f"({', '.join(i.name for i in inputs)})")
    inp = inputs[0]
    dtype = inp.type.tensor_type.elem_type
    if dtype not in FLOAT_TYPES:
        raise WrapError(f"input {inp.name} is {TensorProto.DataType.Name(dtype).lower()}; "
                        f"wrap takes float image inputs")
    dims = _dims(inp)
    if dims is None or len(dims) != 4:
        raise WrapError(f"input {inp.name} has shape {dims}; wrap takes 4-D image inputs [N, C, H, W] or [N, H, W, C]")
    layout = spec.layout or _infer_layout(inp.name, dims)
    channels, spatial = (dims[1], dims[2:]) if layout == "nchw" else (dims[3], dims[1:3])
    if channels not in (3, None):
        raise WrapError(f"input {inp.name} {_shape(dims)} has {channels} channels in {layout.upper()}; "
                        f"wrap takes RGB or BGR (3 channels)")
    if None in spatial:
        if spec.size is None:
            raise WrapError(f"input {inp.name} {_shape(dims)} has a dynamic spatial size; give --size H W")
        height, width = spec.size
    else:
        height, width = int(spatial[0] or 0), int(spatial[1] or 0)
        if spec.size is not None and tuple(spec.size) != (height, width):
            raise WrapError(f"--size {spec.size[0]} {spec.size[1]} does not match the model's fixed "
                            f"{height}×{width} input")
    if min(height, width) < 1:
        raise WrapError(f"image size {height}×{width} is not positive")

    names = [o.name for o in model.graph.output]
    if spec.output is not None and spec.output not in names:
        raise WrapError(f"--output {spec.output}: the model's outputs are {', '.join(names)}")
    if spec.output is None and len(names) != 1:
        raise WrapError(f"the model has {len(names)} outputs ({', '.join(names)}); choose one with --output")
    out = next(o for o in model.graph.output if o.name == (spec.output or names[0]))
    if out.type.tensor_type.elem_type not in FLOAT_TYPES:
        raise WrapError(f"output {out.name} is not a float tensor")
    out_dims = _dims(out)
    classes = None
    if out_dims is not None:
        if len(out_dims) < 2 or any(d != 1 for d in out_dims[2:]):
            raise WrapError(f"output {out.name} has shape {_shape(out_dims)}; wrap takes class scores [N, K]")
        classes = out_dims[1]
    if spec.labels is not None and classes is not None and len(spec.labels) != classes:
        raise WrapError(f"{len(spec.labels)} labels given but the model's output {out.name!r} has {classes} classes")
    return Interface(input=inp.name, dtype=dtype, layout=layout, height=height, width=width,
                     static_batch=dims[0], output=out.name, out_rank=len(out_dims) if out_dims else None,
                     classes=classes)


def _shape(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _infer_layout(name: str, dims: list) -> str:
    nchw, nhwc = dims[1] == 3, dims[3] == 3
    if nchw and nhwc:
        raise WrapError(f"input {name} {_shape(dims)}: both axis 1 and axis 3 have size 3; give --layout nchw|nhwc")
    if not (nchw or nhwc):
        raise WrapError(f"input {name} {_shape(dims)}: cannot tell the layout (no axis 1 or 3 of size 3); "
                        f"give --layout nchw|nhwc")
    return "nchw" if nchw else "nhwc"


# ----------------------------------------------------------------------------- building the wrapped model

def model_order_stats(spec: WrapSpec) -> tuple[np.ndarray, np.ndarray]:
    """mean and std (float64) in the model's channel order: the user states them R,G,B, as the
    published statistics are, so a BGR model gets them reversed along with its pixels."""
    mean, std = np.asarray(spec.mean, dtype=np.float64), np.asarray(spec.std, dtype=np.float64)
    return (mean[::-1], std[::-1]) if spec.channels == "bgr" else (mean, std)


def _constant(name: str, values, layout: str) -> TensorProto:
    shape = (1, 3, 1, 1) if layout == "nchw" else (1, 1, 1, 3)
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32).reshape(shape), name)


def _preprocess_model(spec: WrapSpec, io: Interface, base: onnx.ModelProto) -> onnx.ModelProto:
    """uint8 [N, H, W, 3] RGB → the foreign model's input, as a graph of its own."""
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    x = "image"

    def add(op: str, inputs: list[str], **attrs) -> None:
        nonlocal x
        out = f"{PREFIX}{len(nodes)}_{op.lower()}"
        nodes.append(helper.make_node(op, [x, *inputs], [out], name=f"{PREFIX}{op}_{len(nodes)}", **attrs))
        x = out

    if spec.channels == "bgr":
        for name, v in (("starts", -1), ("ends", -(2**63)), ("axes", 3), ("steps", -1)):
            inits.append(numpy_helper.from_array(np.asarray([v], dtype=np.int64), f"{PREFIX}reverse_{name}"))
        add("Slice", [f"{PREFIX}reverse_{n}" for n in ("starts", "ends", "axes", "steps")])
    if io.layout == "nchw":
        add("Transpose", [], perm=[0, 3, 1, 2])     # on uint8: a quarter of the bytes of float
    add("Cast", [], to=TensorProto.FLOAT)
    mean, std = model_order_stats(spec)
    offset = np.float64(spec.scale) * mean
    gain = 1.0 / (np.float64(spec.scale) * std)
    if io.layout == "nchw" and np.any(offset != 0) and np.any(gain != 1):
        # Inference BatchNormalization is x·gain + bias per channel in one pass over the float
        # tensor, where Sub then Mul take two (measured: the head costs half as much at 224×224).
        bias = -mean / std
        for name, values in (("gain", gain), ("bias", bias), ("zero", np.zeros(3)), ("one", np.ones(3))):
            inits.append(numpy_helper.from_array(values.astype(np.float32), f"{PREFIX}bn_{name}"))
        add("BatchNormalization", [f"{PREFIX}bn_{n}" for n in ("gain", "bias", "zero", "one")], epsilon=0.0)
    elif np.any(offset != 0):
        inits.append(_constant(f"{PREFIX}offset", offset, io.layout))
        add("Sub", [f"{PREFIX}offset"])
    if np.any(gain != 1) and nodes[-1].op_type != "BatchNormalization":
        inits.append(_constant(f"{PREFIX}gain", gain, io.layout))
        add("Mul", [f"{PREFIX}gain"])
    if io.dtype != TensorProto.FLOAT:
        add("Cast", [], to=io.dtype)
    nodes[-1].output[0] = f"{PREFIX}input"
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", io.height, io.width, 3])
    graph = helper.make_graph(nodes, "toolkit_preprocess", [image],
                              [helper.make_tensor_value_info(f"{PREFIX}input", io.dtype, None)], inits)
    return helper.make_model(graph, opset_imports=list(base.opset_import), ir_version=base.ir_version)


def _postprocess_model(spec: WrapSpec, io: Interface, classes: int | None, base: onnx.ModelProto) -> onnx.ModelProto:
    """The chosen output → `logits` float32 [N, K]."""
    nodes, inits, x = [], [], f"{PREFIX}output"
    steps: list[tuple[str, list[str], dict]] = []
    if io.out_rank != 2:
        steps.append(("Flatten", [], {"axis": 1}))
    out_type = next(o.type.tensor_type.elem_type for o in base.graph.output if o.name == io.output)
    if out_type != TensorProto.FLOAT:
        steps.append(("Cast", [], {"to": TensorProto.FLOAT}))
    if spec.outputs == "probabilities":
        inits.append(numpy_helper.from_array(np.asarray(TINY, dtype=np.float32), f"{PREFIX}tiny"))
        steps += [("Max", [f"{PREFIX}tiny"], {}), ("Log", [], {})]
    if not steps:
        steps.append(("Identity", [], {}))
    for i, (op, extra, attrs) in enumerate(steps):
        out = "logits" if i == len(steps) - 1 else f"{PREFIX}post_{i}"
        nodes.append(helper.make_node(op, [x, *extra], [out], name=f"{PREFIX}{op}_post_{i}", **attrs))
        x = out
    graph = helper.make_graph(nodes, "toolkit_postprocess",
                              [helper.make_tensor_value_info(f"{PREFIX}output", TensorProto.UNDEFINED, None)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes or "K"])],
                              inits)
    graph.input[0].type.tensor_type.elem_type = out_type
    return helper.make_model(graph, opset_imports=list(base.opset_import), ir_version=base.ir_version)


def _prepare(model: onnx.ModelProto, io: Interface) -> tuple[onnx.ModelProto, Interface]:
    """The foreign graph made ready to join: opset ≥ 13, names that cannot collide with ours, a
    dynamic batch, and the original's initializers no longer listed as inputs. Returns the model
    and its interface under the names it now has."""
    if opset_version(model) < MIN_OPSET_WRAPPED:
        from onnx import version_converter
        try:
            model = version_converter.convert_version(model, MIN_OPSET_WRAPPED)
        except Exception as exc:  # noqa: BLE001  (the converter raises several types)
            raise WrapError(f"cannot convert opset {opset_version(model)} to {MIN_OPSET_WRAPPED}: "
                            f"{first_line(exc)}") from None
        model.ir_version = max(model.ir_version, 7)
    keep = graph_inputs(model)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    names = _all_names(model.graph)
    if {"image", "logits"} & names or any(n.startswith(PREFIX) for n in names):
        model = onnx.compose.add_prefix(model, "src/")
        io = replace(io, input="src/" + io.input, output="src/" + io.output)
    if io.static_batch is not None:
        # A batch fixed at export time is made dynamic; the parity gate runs several images at once,
        # so a graph that really depends on it (a Reshape to [1, -1]) is caught there.
        for value in [*model.graph.input, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            if len(dims):
                dims[0].dim_param = "N"
        del model.graph.value_info[:]
    return model, io


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {t.name for t in graph.initializer} | {n.name for n in graph.node}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def build_wrapped(model: onnx.ModelProto, spec: WrapSpec, name: str, io: Interface) -> onnx.ModelProto:
    """The contract model: preprocessing → the foreign graph → `logits`, with metadata."""
    from toolkit._version import __version__

    precision = source_precision(model)
    model, io = _prepare(model, io)
    pre, post = _preprocess_model(spec, io, model), _postprocess_model(spec, io, io.classes, model)
    try:
        joined = onnx.compose.merge_models(pre, model, io_map=[(f"{PREFIX}input", io.input)])
        joined = onnx.compose.merge_models(joined, post, io_map=[(io.output, f"{PREFIX}output")])
    except Exception as exc:  # noqa: BLE001  (onnx.compose raises several types)
        raise WrapError(f"cannot join the preprocessing to the model: {first_line(exc)}") from None
    _keep_only_output(joined.graph, "logits")
    # merge_models lists each side's opset imports; one entry per domain is what the spec allows.
    opsets = {o.domain: o.version for o in joined.opset_import}
    del joined.opset_import[:]
    joined.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    joined.producer_name, joined.producer_version = "toolkit", __version__
    labels = spec.labels or [str(i) for i in range(io.classes or 0)]
    source = {"layout": io.layout, "channels": spec.channels, "scale": spec.scale, "mean": list(spec.mean),
              "std": list(spec.std), "outputs": spec.outputs, "input": io.input, "output": io.output}
    meta = {p.key: p.value for p in model.metadata_props if not p.key.startswith("toolkit.")}
    meta.update({"toolkit.task": "classify", "toolkit.model": name, "toolkit.precision": precision,
                 "toolkit.version": __version__, "toolkit.labels": json.dumps(labels),
                 WRAPPED_KEY: json.dumps(source)})
    del joined.metadata_props[:]
    helper.set_model_props(joined, meta)
    return joined


def _keep_only_output(graph: onnx.GraphProto, output: str) -> None:
    """Drop the other outputs and every node and initializer only they needed."""
    keep = [o for o in graph.output if o.name == output]
    del graph.output[:]
    graph.output.extend(keep)
    needed, live = {output}, []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(node.input)
            for attr in node.attribute:        # subgraphs (If, Loop) may read outer-scope tensors
                for g in [attr.g] * (attr.type == onnx.AttributeProto.GRAPH) + list(attr.graphs):
                    needed |= _all_names(g)
    del graph.node[:]
    graph.node.extend(reversed(live))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
