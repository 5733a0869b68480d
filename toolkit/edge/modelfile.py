"""Reading a model file: what an ONNX file is and whether any command may load it.

`inspect_model` says what a file is (size, metadata, external data, where each external file
lies) and `check_model_file` refuses what no command should load — an empty or non-ONNX file, a
toolkit model whose weights sit in external files (the contract says one file), and a foreign
model whose external data would be read from outside its own folder. The folder check is done
here on real paths (symlinks resolved), not left to the runtime. Below both the contract's
writer (toolkit.edge.contract, which re-exports these names) and the runtimes that open files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from toolkit.edge.data.fsio import InputError, read_regular_file
from toolkit.edge.errors import shown
from toolkit.edge.onnxgraph import parse_onnx

PROTOBUF_LIMIT = 2**31 - 1          # one serialized ModelProto cannot be larger


class ModelFileError(ValueError):
    """A file no command should load as a model; the message is one line for the user."""


def read_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds: initializers, sparse initializers, attribute tensors, subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from graph_tensors(sub)


def external_location(tensor: onnx.TensorProto) -> str | None:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


@dataclass(frozen=True)
class ExternalFile:
    """One external-data file a model refers to."""
    location: str            # as written in the model
    tensors: int             # how many tensors it holds
    inside: bool             # resolves (symlinks followed) inside the model's folder
    size: int | None         # bytes; None when outside the folder (never looked at) or missing

    def describe(self) -> str:
        if not self.inside:
            return "outside the model's folder: refused, not read"
        return "missing" if self.size is None else f"{self.size / 1e6:.2f} MB"


@dataclass
class ModelFile:
    """What an ONNX file is, read without loading its external data."""
    path: Path
    proto: onnx.ModelProto
    file_size: int
    external: list[ExternalFile] = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, str]:
        return read_metadata(self.proto)

    @property
    def is_contract(self) -> bool:
        """Made (or wrapped) by the toolkit: it claims the contract, so it must be one file."""
        return "toolkit.task" in self.metadata

    @property
    def total_size(self) -> int:
        """The file plus every external file inside its folder that exists."""
        return self.file_size + sum(e.size or 0 for e in self.external if e.inside)


def _inside(folder: Path, location: str) -> Path | None:
    """The real path of `location` relative to `folder` if it lies inside the folder, else None."""
    if not location or os.path.isabs(location):
        return None
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    return Path(target) if os.path.commonpath([root, target]) == root and target != root else None


def _external_files(proto: onnx.ModelProto, folder: Path) -> list[ExternalFile]:
    counts: dict[str, int] = {}
    for tensor in graph_tensors(proto.graph):
        location = external_location(tensor)
        if location is not None:
            counts[location] = counts.get(location, 0) + 1
    found = []
    for location, n in counts.items():
        target = _inside(folder, location)
        size = None
        if target is not None and target.is_file():
            size = target.stat().st_size
        found.append(ExternalFile(location=location, tensors=n, inside=target is not None, size=size))
    return found


def _all_text(message) -> bool:
    """Whether every string field (names, op types, metadata) is text: protobuf hands a string that
    is not UTF-8 over as bytes, which every later step (sorting, joining, printing) trips on."""
    # The type constants are read off each field's descriptor: google.protobuf ships no type stubs.
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else [value]
        if descriptor.type == descriptor.TYPE_STRING and any(isinstance(v, bytes) for v in values):
            return False
        if descriptor.type == descriptor.TYPE_MESSAGE and not all(_all_text(v) for v in values):
            return False
    return True


def inspect_model(path: str | os.PathLike) -> ModelFile:
    """Parse an ONNX file (bounded read, regular files only, external data not loaded).

    Raises ModelFileError for a missing, unreadable, empty or non-ONNX file."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ModelFileError(f"{shown(path)}: no such model file")
    if path.is_file() and path.stat().st_size > PROTOBUF_LIMIT:
        raise ModelFileError(f"{shown(path)}: {path.stat().st_size / 1e9:.1f} GB is over protobuf's 2 GB limit for "
                             f"one ONNX file; keep the weights in external data beside it")
    try:
        data = read_regular_file(path, PROTOBUF_LIMIT)
    except InputError as exc:
        raise ModelFileError(str(exc)) from None
    if not data:
        raise ModelFileError(f"{shown(path)}: empty file (0 bytes), not an ONNX model")
    proto = parse_onnx(data, path, ModelFileError)
    if proto.ir_version <= 0 or not proto.HasField("graph") or not proto.graph.output:
        raise ModelFileError(f"{shown(path)}: not an ONNX model (no graph with outputs)")
    if not _all_text(proto):
        raise ModelFileError(f"{shown(path)}: not a usable ONNX model (names or metadata are not UTF-8)")
    return ModelFile(path=path, proto=proto, file_size=len(data), external=_external_files(proto, path.parent))


def check_model_file(path: str | os.PathLike) -> ModelFile:
    """`inspect_model`, then refuse what must not be loaded (ModelFileError, one line):
    a toolkit model with external data, external data outside the model's folder or missing."""
    model = inspect_model(path)
    if not model.external:
        return model
    names = ", ".join(shown(e.location) for e in model.external)
    if model.is_contract:
        raise ModelFileError(f"{shown(model.path)}: a toolkit model must be one file, but its weights sit in "
                             f"external data ({names}); re-export it or wrap the original")
    for ext in model.external:
        if not ext.inside:
            raise ModelFileError(f"{shown(model.path)}: external data {shown(ext.location)} lies outside the "
                                 f"model's folder; refused")
        if ext.size is None:
            raise ModelFileError(f"{shown(model.path)}: external data file {shown(ext.location)} not found beside "
                                 f"the model")
    return model
