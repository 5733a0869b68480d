"""The IR version a foreign model declares, against the one the installed onnxruntime reads.

The `onnx` package stamps every model it saves with its own newest IR version, which can be newer
than what the installed onnxruntime loads ("Unsupported model IR version: 14, max supported IR
version: 13"), although nothing in the graph needs the newer IR. onnxruntime has no API that says
its highest IR version, so it is read from the runtime itself: a one-node model stamped with the
onnx package's IR version either loads (the runtime reads everything onnx writes) or fails with a
message naming the maximum; when that message cannot be parsed, lower versions are tried in turn.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from toolkit.edge.errors import shown
from toolkit.edge.wrap.graph import WrapError

_MAX_IR = re.compile(r"max supported IR version:\s*(\d+)")
_OLDEST_IR = 3                         # the first IR version with opset imports


def _loads(ir_version: int) -> tuple[bool, str]:
    from toolkit.edge.runtime.ort import load_failure

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=ir_version)
    failure = load_failure(model.SerializeToString())
    return failure is None, failure or ""


@functools.cache
def runtime_ir_version() -> int:
    """The highest IR version the installed onnxruntime loads (at most the onnx package's own)."""
    ok, message = _loads(onnx.IR_VERSION)
    if ok:
        return onnx.IR_VERSION
    if (match := _MAX_IR.search(message)) and _loads(int(match[1]))[0]:
        return int(match[1])
    return next((v for v in range(onnx.IR_VERSION - 1, _OLDEST_IR - 1, -1) if _loads(v)[0]), _OLDEST_IR)


def _max_opsets(ir_version: int) -> dict[str, int]:
    """The newest opset of each standard domain that IR `ir_version` carries (onnx's version table)."""
    rows = [row for row in helper.VERSION_TABLE if row[1] <= ir_version]
    return {"": max(row[2] for row in rows), "ai.onnx.ml": max(row[3] for row in rows)}


def lower_ir_version(model: onnx.ModelProto, source: Path, log: Callable[[str], object]) -> bool:
    """Lower `model`'s IR version in place to what the installed onnxruntime reads, where its opsets
    allow it, saying so in one line; True if it was lowered. A model that needs the newer IR is
    refused in one line that names both versions."""
    import onnxruntime as ort

    readable = runtime_ir_version()
    if model.ir_version <= readable:
        return False
    limits = _max_opsets(readable)
    for opset in model.opset_import:
        domain = "" if opset.domain == "ai.onnx" else opset.domain
        if domain in limits and opset.version > limits[domain]:
            raise WrapError(f"{shown(source)}: IR version {model.ir_version} with {domain or 'ai.onnx'} opset "
                            f"{opset.version}, but onnxruntime {ort.__version__} reads IR ≤ {readable}, which "
                            f"carries opset ≤ {limits[domain]}; export the model with a lower opset")
    original = model.ir_version
    model.ir_version = readable
    log(f"note: {shown(source)} declares IR version {original}; onnxruntime {ort.__version__} reads IR ≤ "
        f"{readable}, and the graph's opsets fit IR {readable}, so the wrapped model declares IR {readable}")
    return True


@contextlib.contextmanager
def runnable_file(model: onnx.ModelProto, source: Path, lowered: bool) -> Iterator[Path]:
    """`source` itself, or, when its IR version was lowered, a temporary copy of `model` to run."""
    if not lowered:
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="toolkit-wrap-") as tmp:
        path = Path(tmp) / source.name
        onnx.save_model(model, os.fspath(path))
        yield path
