"""`toolkit info`: what an ONNX file is — inputs and outputs, metadata, opset, op counts, size
(external files included) and whether it keeps the one-file contract. Never imports torch."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from rich.console import Group
from rich.table import Table

from toolkit.edge.contract import ModelFile, inspect_model
from toolkit.edge.errors import shown
from toolkit.edge.onnxgraph import input_signature, output_signature


def _size_line(model: ModelFile) -> str:
    if not model.external:
        return f"{model.total_size / 1e6:.2f} MB"
    return (f"{model.total_size / 1e6:.2f} MB in all ({model.file_size / 1e6:.2f} MB file + "
            f"{(model.total_size - model.file_size) / 1e6:.2f} MB external data)")


def _status(model: ModelFile) -> str:
    """One line on the contract: a toolkit file must be one file; a foreign one may point beside itself."""
    outside = [e for e in model.external if not e.inside]
    missing = [e for e in model.external if e.inside and e.size is None]
    if model.is_contract and model.external:
        return ("contract: VIOLATED — a toolkit model must be one file, its weights sit in external data "
                "(refused by every command)")
    if outside:
        return "foreign model: external data outside its folder (refused by every command)"
    if missing:
        return "foreign model: external data file missing (refused by every command)"
    if model.is_contract:
        return "contract: one file, toolkit metadata present"
    return "foreign model (no toolkit metadata): `toolkit wrap` brings it into the contract"


def describe_model(path: str | os.PathLike) -> Group:
    """A rich renderable describing an ONNX file. ModelFileError for a file that is not one."""
    model = inspect_model(Path(path))
    proto = model.proto
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    io = Table(title=f"{shown(model.path.name)} — {_size_line(model)}, opset {opsets}")
    io.add_column("")
    io.add_column("name")
    io.add_column("type and shape")
    for kind, values in (("input", input_signature(proto)), ("output", output_signature(proto))):
        for v in values:
            io.add_row(kind, shown(v.name), v.type_and_shape())
    parts: list = [io]
    if model.external:
        ext = Table(title="external data")
        ext.add_column("file", overflow="fold")
        ext.add_column("tensors", justify="right")
        ext.add_column("size / where")
        for e in model.external:
            ext.add_row(shown(e.location), str(e.tensors), e.describe())
        parts.append(ext)
    meta = Table(title="metadata")
    meta.add_column("key")
    meta.add_column("value", overflow="fold")
    for p in proto.metadata_props:
        meta.add_row(shown(p.key), shown(p.value))
    ops = Table(title=f"ops ({len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers)")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, count in sorted(Counter(n.op_type for n in proto.graph.node).items(), key=lambda t: (-t[1], t[0])):
        ops.add_row(shown(op), str(count))
    return Group(*parts, meta, ops, _status(model))
