"""The ONNX graph utilities every stage shares: loading a file or refusing it in one line, the
inputs a caller must feed and their signature, node order, and the small lookups the graph
rewrites (quantize/recipe.py, quantize/nhwc.py) are made of. Never imports torch.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from toolkit.edge.errors import first_line, shown


def parse_onnx(data: bytes, name: str | os.PathLike, error: type[Exception] = ValueError) -> onnx.ModelProto:
    """The model serialised in `data` (read from the file `name`), or `error` with one line."""
    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001  (protobuf raises several types for bytes that are not ONNX)
        raise error(f"{shown(name)}: not an ONNX model ({first_line(exc, 200)})") from None


def load_onnx(path: str | os.PathLike, error: type[Exception] = ValueError) -> onnx.ModelProto:
    """The model in the file at `path`, external data not loaded, or `error` with one line. The
    readers (modelfile.inspect_model) add the size, file-type and external-data checks."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{shown(path)}: no such model file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{shown(path)}: {exc.strerror or first_line(exc)}") from None
    return parse_onnx(data, path, error)


# ----------------------------------------------------------------------------- inputs and outputs

@dataclass(frozen=True)
class DeclaredTensor:
    """A graph input or output as declared: dims are ints (fixed), strings (symbolic) or None
    (unknown); no dims at all where the graph declares no shape."""
    name: str
    dtype: str                          # ONNX's element type in lower case: float, uint8, float16 …
    dims: tuple[int | str | None, ...]

    @classmethod
    def of(cls, value: onnx.ValueInfoProto) -> DeclaredTensor:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        return cls(value.name, onnx.TensorProto.DataType.Name(tensor.elem_type).lower(), dims)

    def sizes(self) -> list[int | None]:
        """Each dimension's fixed size, None where it is symbolic or unknown."""
        return [d if isinstance(d, int) else None for d in self.dims]

    @property
    def static(self) -> bool:
        """Whether every dimension is a fixed size."""
        return all(isinstance(d, int) for d in self.dims)

    def type_and_shape(self, shape: tuple[int, ...] | None = None) -> str:
        """`float [N, 3, ?, ?]`: the declared dims, or `shape` where one is given."""
        dims = shape if shape is not None else self.dims
        return f"{self.dtype} [{', '.join('?' if d is None else str(d) for d in dims)}]"

    def describe(self, shape: tuple[int, ...] | None = None) -> str:
        return f"{shown(self.name)} {self.type_and_shape(shape)}"


def _graph(model: onnx.ModelProto | onnx.GraphProto) -> onnx.GraphProto:
    return model.graph if isinstance(model, onnx.ModelProto) else model


def graph_inputs(model: onnx.ModelProto | onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller must feed, in declared order: graph inputs that are not initializers
    (older exporters list every weight as an input with a default)."""
    graph = _graph(model)
    initializers = {t.name for t in graph.initializer}
    return [value for value in graph.input if value.name not in initializers]


def input_signature(model: onnx.ModelProto | onnx.GraphProto) -> list[DeclaredTensor]:
    """`graph_inputs` as TensorSpecs."""
    return [DeclaredTensor.of(value) for value in graph_inputs(model)]


def output_signature(model: onnx.ModelProto | onnx.GraphProto) -> list[DeclaredTensor]:
    return [DeclaredTensor.of(value) for value in _graph(model).output]


# ----------------------------------------------------------------------------- nodes

def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name → the nodes that read it, in graph order."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of the attribute `name` of `node`, or `default` where the node does not set it."""
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def remove_nodes(graph: onnx.GraphProto, first_outputs: set[str]) -> None:
    """Remove, in place, the nodes whose first output is named in `first_outputs`. (Nodes are named
    by their outputs: protobuf hands out a new Python object per access, so identity means nothing.)"""
    kept = [n for n in graph.node if n.output[0] not in first_outputs]
    del graph.node[:]
    graph.node.extend(kept)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Order the graph's nodes, in place, so every input is produced before it is read (ONNX
    requires it); Kahn's algorithm, keeping the present order among nodes that are ready together.
    Names no node produces (graph inputs, initializers, outer-scope names) count as available; a
    cycle is a ValueError, since no order can fix it."""
    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    waiting = [{producer[name] for name in node.input if name in producer} for node in nodes]
    readers: dict[int, list[int]] = {}
    for i, needs in enumerate(waiting):
        for j in needs:
            readers.setdefault(j, []).append(i)
    ready = [i for i, needs in enumerate(waiting) if not needs]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in readers.get(i, []):
            waiting[k].discard(i)
            if not waiting[k]:
                heapq.heappush(ready, k)
    if len(order) != len(nodes):
        stuck = [nodes[i] for i in range(len(nodes)) if waiting[i]]
        names = ", ".join(shown(n.name or n.output[0]) for n in stuck[:3])
        raise ValueError(f"the graph has a cycle: {len(stuck)} node(s) never get their inputs ({names}"
                         f"{', …' if len(stuck) > 3 else ''})")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
