"""The artifact contract (docs/contract.md): what every ONNX file the toolkit writes obeys, and what a file
must be before any command loads it. Every stage uses this module; it never imports torch.

Writing: `set_metadata`, `replace_metadata`, `read_metadata`, `prune_opsets`, `check_contract` and
`write_model` — the one writer of every ONNX file the toolkit makes, exports, wraps or quantizes
(checked, written to a temp file beside the target, gated, renamed; nothing is left behind on
failure) — plus `run_onnx`, `compare_outputs` and `logit_gate` for the parity gates.

Minimum opset: 17 for what the toolkit builds itself; 13 for a wrapped foreign model (`wrap`
keeps the original graph's opset, raised to 13 if older, since converting a foreign graph further
risks changing it), told by its `toolkit.wrapped` metadata, which its fp16 and int8 variants inherit.

Reading: `inspect_model` says what a file is (size, metadata, external data, where each external
file lies) and `check_model_file` refuses what no command should load — an empty or non-ONNX file,
a toolkit model whose weights sit in external files (the contract says one file), and a foreign
model whose external data would be read from outside its own folder. The folder check is done
here on real paths (symlinks resolved), not left to the runtime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from toolkit._version import __version__
from toolkit.edge.data.fsio import InputError, atomic_write, read_regular_file
from toolkit.edge.errors import first_line, shown
from toolkit.edge.onnxgraph import parse_onnx
from toolkit.edge.words import counted

OPSET = 18                          # what the toolkit builds its own graphs at (torch export, transform graphs)
MIN_OPSET = 17                      # files the toolkit builds (torch export, transform graphs)
MIN_OPSET_WRAPPED = 13              # a wrapped foreign graph keeps its own opset, at least this
WRAPPED_KEY = "toolkit.wrapped"     # set by `toolkit wrap`; marks the file as a wrapped foreign model
REQUIRED_KEYS = ("toolkit.task", "toolkit.model", "toolkit.precision", "toolkit.version")
PROTOBUF_LIMIT = 2**31 - 1          # one serialized ModelProto cannot be larger


class ExportError(RuntimeError):
    """Writing an artifact failed (a contract check or a parity gate); nothing was written at the
    output path. The message is one line for the user."""


class ModelFileError(ValueError):
    """A file no command should load as a model; the message is one line for the user."""


# ----------------------------------------------------------------------------- metadata

def read_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def replace_metadata(proto: onnx.ModelProto, meta: Mapping[str, str]) -> onnx.ModelProto:
    """Make `meta` the model's whole metadata (a converted variant takes its source's metadata)."""
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    return proto


def set_metadata(proto: onnx.ModelProto, task: str, model: str, precision: str, **extra: object) -> onnx.ModelProto:
    """Set the contract's keys (and `toolkit.<key>` for each extra; non-strings as JSON), keeping
    whatever else the model carries."""
    meta = {"toolkit.task": task, "toolkit.model": model, "toolkit.precision": precision,
            "toolkit.version": __version__}
    meta.update({f"toolkit.{k}": (v if isinstance(v, str) else json.dumps(v)) for k, v in extra.items()})
    return replace_metadata(proto, {**read_metadata(proto), **meta})


# ----------------------------------------------------------------------------- writing

def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
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
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _external_location(tensor: onnx.TensorProto) -> str | None:
    if tensor.data_location != onnx.TensorProto.EXTERNAL:
        return None
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def prune_opsets(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop opset imports no node uses (graph optimisers and quantizers add a list of them)."""
    used = {n.domain or "" for n in proto.graph.node} | {""}
    keep = [o for o in proto.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return proto


def opset_version(proto: onnx.ModelProto) -> int:
    """The model's default-domain (ai.onnx) opset; 0 if it imports none."""
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def min_opset(proto: onnx.ModelProto) -> int:
    """The least opset the contract admits for this file: 13 for a wrapped foreign model (and the
    variants made from it, which keep its metadata), 17 for everything the toolkit builds."""
    return MIN_OPSET_WRAPPED if WRAPPED_KEY in read_metadata(proto) else MIN_OPSET


def check_contract(proto: onnx.ModelProto) -> None:
    """The checks every toolkit ONNX file must pass before it is written (raises ExportError)."""
    opset, least = opset_version(proto), min_opset(proto)
    if opset < least:
        raise ExportError(f"opset {opset} < {least}")
    for tensor in _tensors(proto.graph):
        if _external_location(tensor) is not None:
            raise ExportError(f"tensor {tensor.name} uses external data; the contract is one file")
    meta = read_metadata(proto)
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        raise ExportError(f"metadata {', '.join(missing)} missing")
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise ExportError("the model exceeds protobuf's 2 GB limit for one ONNX file")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001  (the checker raises several types)
        raise ExportError(f"onnx checker: {first_line(exc)}") from None


def write_model(proto: onnx.ModelProto, path: str | os.PathLike, gate: Callable[[Path], None] | None = None) -> Path:
    """Prune, check, write `proto` to a temp file beside `path`, run `gate(temp_path)` (which raises
    on failure) and only then rename it to `path`. On any failure nothing is left at `path`."""
    prune_opsets(proto)
    check_contract(proto)

    def write(tmp: Path) -> None:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        if gate is not None:
            gate(tmp)

    return atomic_write(path, write)


# ----------------------------------------------------------------------------- parity

@dataclass
class Parity:
    n: int
    max_abs_diff: float
    top1_agreement: float | None = None

    def describe(self) -> str:
        text = f"parity on {counted(self.n, 'input')}: max |Δ| {self.max_abs_diff:.2e}"
        if self.top1_agreement is not None:
            text += f", top-1 agreement {self.top1_agreement:.2%}"
        return text


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, classify: bool) -> Parity:
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)))) if reference.size else 0.0
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if classify else None
    return Parity(n=len(reference), max_abs_diff=diff, top1_agreement=agree)


def run_onnx(path: str | os.PathLike, feed: np.ndarray, batch_size: int = 256, output: str | None = None,
             fixed_batch: int | None = None) -> np.ndarray:
    """Run one output (default: the first) of a model on the CPU over `feed`, in batches: the
    reference runner of every gate (runtime.ort.reference_run). A model whose batch is fixed at B
    (`fixed_batch`) gets chunks of exactly B, the last one padded."""
    from toolkit.edge.runtime.ort import reference_run

    return reference_run(path, feed, batch_size, output, fixed_batch)


def logit_gate(reference: np.ndarray, images: np.ndarray, against: str, min_agreement: float = 1.0,
               max_diff: float | None = None, found: list[Parity] | None = None,
               error: type[Exception] = ExportError) -> Callable[[Path], None]:
    """A `write_model` gate for classifiers: the written file's logits on `images` against
    `reference` (what `against` gives on the same images) — top-1 agreement ≥ `min_agreement` and
    max |Δ| ≤ `max_diff`, else `error` and nothing is written. Each measurement is appended to `found`."""
    def gate(path: Path) -> None:
        parity = compare_outputs(reference, run_onnx(path, images), classify=True)
        if found is not None:
            found.append(parity)
        if (parity.top1_agreement or 0.0) < min_agreement or (max_diff is not None and parity.max_abs_diff > max_diff):
            need = "identical top-1" if min_agreement >= 1 else f"≥ {min_agreement:.0%} top-1 agreement"
            need += f" and max |Δ| ≤ {max_diff:g}" if max_diff is not None else ""
            raise error(f"parity gate failed against {against}: {parity.describe()} (need {need}); nothing written")
    return gate


# ----------------------------------------------------------------------------- reading

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
    for tensor in _tensors(proto.graph):
        location = _external_location(tensor)
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
