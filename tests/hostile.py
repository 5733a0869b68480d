"""What the reliability tests feed the toolkit: tiny contract models built with onnx.helper (no
torch, milliseconds to make), and hostile files — pipes, devices, lying headers, odd names."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from toolkit._version import __version__
from toolkit.edge.data.datasets import CIFAR10_LABELS

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, meta: dict[str, str]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in {"toolkit.precision": "fp32", "toolkit.version": __version__, **meta}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def classifier(path: Path, nan_when_dark: bool = False) -> Path:
    """A contract classifier (uint8 [N, 32, 32, 3] → logits [N, 10]) scoring the mean colour.
    With `nan_when_dark`, an image whose mean red is below 128 gets NaN logits (log of a negative)."""
    weights = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32) / 255
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["scores"])]
    inits = [numpy_helper.from_array(weights, "w")]
    if nan_when_dark:
        nodes += [helper.make_node("Slice", ["m", "start", "end", "axis"], ["red"]),
                  helper.make_node("Sub", ["red", "half"], ["d"]),
                  helper.make_node("Log", ["d"], ["log"]),
                  helper.make_node("Mul", ["log", "zero"], ["z"]),       # 0 · NaN = NaN, 0 · finite = 0
                  helper.make_node("Add", ["scores", "z"], ["logits"])]
        inits += [numpy_helper.from_array(np.array(v, dtype=dt), n) for n, v, dt in
                  (("start", [0], np.int64), ("end", [1], np.int64), ("axis", [1], np.int64),
                   ("half", 128.0, np.float32), ("zero", 0.0, np.float32))]
    else:
        nodes.append(helper.make_node("Identity", ["scores"], ["logits"]))
    graph = helper.make_graph(nodes, "tiny_classifier",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return _save(graph, path, {"toolkit.task": "classify", "toolkit.model": "tiny-classifier",
                               "toolkit.labels": json.dumps(CIFAR10_LABELS)})


def generator(path: Path) -> Path:
    """A contract generator (float z [N, 100] → uint8 [N, 64, 64, 3]): a grey level per latent."""
    nodes = [helper.make_node("ReduceMean", ["z"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "ones"], ["spread"]),
             helper.make_node("Sigmoid", ["spread"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["v"]),
             helper.make_node("Cast", ["v"], ["flat"], to=TensorProto.UINT8),
             helper.make_node("Reshape", ["flat", "shape"], ["image"])]
    inits = [numpy_helper.from_array(np.full((1, 64 * 64 * 3), 10.0, np.float32), "ones"),
             numpy_helper.from_array(np.array(255.0, np.float32), "scale"),
             numpy_helper.from_array(np.array([-1, 64, 64, 3], np.int64), "shape")]
    graph = helper.make_graph(nodes, "tiny_generator",
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 100])],
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 64, 64, 3])], inits)
    return _save(graph, path, {"toolkit.task": "generate", "toolkit.model": "tiny-generator",
                               "toolkit.latent_dim": "100"})


def image(path: Path, colour: tuple[int, int, int] = (200, 40, 40), size: tuple[int, int] = (32, 32),
          **save: object) -> Path:
    """A small solid picture (width, height = size); the format follows the suffix."""
    Image.new("RGB", size, colour).save(path, **save)
    return path


def png_claiming(width: int, height: int, payload: bytes = b"") -> bytes:
    """A PNG whose header declares width × height RGB pixels but whose data holds only `payload`
    (compressed): a tiny file that lies about its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(payload))
            + chunk(b"IEND", b""))


@contextlib.contextmanager
def fifo(path: Path, patience_s: float = 20.0) -> Iterator[Path]:
    """A named pipe. Should the code under test open it and block, a watchdog opens the other end
    after `patience_s` and closes it, so the test fails on its assertions instead of hanging."""
    os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        if not done.wait(patience_s):
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    watchdog = threading.Thread(target=release, daemon=True)
    watchdog.start()
    try:
        yield path
    finally:
        done.set()
        watchdog.join()


def every_file(folder: Path) -> set[str]:
    """Every file and folder under `folder`, hidden ones included (to prove nothing was left behind)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}
