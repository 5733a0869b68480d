"""The artifact contract (docs/contract.md): what every ONNX file the toolkit writes obeys, and what a file
must be before any command loads it. Every stage uses this module; it never imports torch.

Writing: `set_metadata`, `replace_metadata`, `read_metadata`, `prune_opsets`, `check_contract` and
`write_model` — the one writer of every ONNX file the toolkit makes, exports, wraps or quantizes
(checked, written to a temp file beside the target, gated, renamed; nothing is left behind on
failure) — plus `run_onnx`, `compare_outputs` and `logit_gate` for the parity gates.

Minimum opset: 17 for what the toolkit builds itself; 13 for a wrapped foreign model (`wrap`
keeps the original graph's opset, raised to 13 if older, since converting a foreign graph further
risks changing it), told by its `toolkit.wrapped` metadata, which its fp16 and int8 variants inherit.

Reading (`inspect_model`, `check_model_file`, `ModelFile`, `ModelFileError`, `read_metadata`) lives
in toolkit.edge.modelfile, below this module and the runtimes, and is re-exported here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from toolkit._version import __version__
from toolkit.edge.data.fsio import atomic_write
from toolkit.edge.errors import first_line
from toolkit.edge.modelfile import (  # noqa: F401  (re-exported: the reading half of the contract)
    PROTOBUF_LIMIT,
    ExternalFile,
    ModelFile,
    ModelFileError,
    check_model_file,
    external_location,
    graph_tensors,
    inspect_model,
    read_metadata,
)
from toolkit.edge.words import counted

OPSET = 18                          # what the toolkit builds its own graphs at (torch export, transform graphs)
MIN_OPSET = 17                      # files the toolkit builds (torch export, transform graphs)
MIN_OPSET_WRAPPED = 13              # a wrapped foreign graph keeps its own opset, at least this
WRAPPED_KEY = "toolkit.wrapped"     # set by `toolkit wrap`; marks the file as a wrapped foreign model
REQUIRED_KEYS = ("toolkit.task", "toolkit.model", "toolkit.precision", "toolkit.version")


class ExportError(RuntimeError):
    """Writing an artifact failed (a contract check or a parity gate); nothing was written at the
    output path. The message is one line for the user."""


# ----------------------------------------------------------------------------- metadata

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
    for tensor in graph_tensors(proto.graph):
        if external_location(tensor) is not None:
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


