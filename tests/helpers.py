"""The one module of shared test builders: what more than one test module makes or checks. Test
modules and conftest import this module, never each other, so a test file can move or be deleted
without breaking another one (tests/test_suite_layout.py holds that rule).

- Paths and data: REPO, DATA (the real CIFAR-10 tree `make data` extracts), SAMPLES (the shipped
  sample images), write_class_tree.
- Contract models built with onnx.helper (no torch, milliseconds to make): tiny_classifier (a Conv
  net), colour_classifier (scores the mean colour; NaN on demand), grey_generator, contract_cnn
  (8×8 input with the normalisation head the int8 recipe folds).
- Foreign models: foreign_classifier (float input, no metadata), stamped_classifier (any IR
  version and opset), bare_cnn_onnx (the shipped CNN as
  plain torch.onnx.export writes it; needs torch).
- Checks: check_classifier_contract.
- Inputs for the decoder and the CLI: image, encoded_images (every format the decoder takes),
  png_claiming (a header that lies), fifo (a pipe with a watchdog), every_file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from toolkit._version import __version__
from toolkit.edge.data.datasets import CIFAR10_LABELS

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data" / "cifar10-png" / "train"
SAMPLES = REPO / "models" / "samples"
CIFAR_MEAN, CIFAR_STD = "0.4914,0.4822,0.4465", "0.2470,0.2435,0.2616"   # R,G,B, as `toolkit wrap` takes them
LABELS = ["cat", "dog"]
# conftest's fixtures that build a model with torch (about 10 s on 2 cores): a test asking for one is slow.
TORCH_FIXTURES = frozenset({"fresh_weights", "fresh_onnx"})
OPSET = 17
# contract_cnn's normalisation head, in pixel units (the shape the int8 recipe folds into the first Conv).
CNN_MEAN = np.array([125.3, 123.0, 113.9])
CNN_SCALE = 1 / (255 * np.array([0.247, 0.2435, 0.2616]))


# ----------------------------------------------------------------------------- data

def write_class_tree(root: Path, per_class: int = 10, size=(32, 32), seed: int = 0,
                     classes: Sequence[str] = CIFAR10_LABELS) -> Path:
    """A class-per-folder tree of small JPEGs whose colour depends on the class, so a model can learn it."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([(c * 53) % 256, (c * 97) % 256, (c * 151) % 256], dtype=np.float64)
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 20, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=90)
    return root


# ----------------------------------------------------------------------------- contract models

def _save(graph: onnx.GraphProto, path: Path, meta: dict[str, str]) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in {"toolkit.precision": "fp32", "toolkit.version": __version__, **meta}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def tiny_classifier(path: Path, model_name: str = "tiny", labels: Sequence[str] = LABELS) -> Path:
    """uint8 [N, 32, 32, 3] → Cast → Transpose → Conv(3→4, 3×3, same) → Relu → GlobalAveragePool →
    Flatten → MatMul → logits. Nodes are named, so placement reports can be checked by name."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.01, "conv_w"),
               numpy_helper.from_array(rng.standard_normal((4, len(labels))).astype(np.float32), "fc_w")]
    nodes = [helper.make_node("Cast", ["image"], ["x"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["x"], ["nchw"], name="nchw", perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "conv_w"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"], name="pool"),
             helper.make_node("Flatten", ["pooled"], ["flat"], name="flat"),
             helper.make_node("MatMul", ["flat", "fc_w"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 32, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(labels)])],
                              weights)
    # IR 8: what every onnxruntime from 1.14 on loads.
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    for key, value in {"toolkit.task": "classify", "toolkit.model": model_name, "toolkit.precision": "fp32",
                       "toolkit.labels": json.dumps(list(labels))}.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def colour_classifier(path: Path, nan_when_dark: bool = False) -> Path:
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


def grey_generator(path: Path) -> Path:
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


def contract_cnn(pads=(1, 1, 1, 1)) -> onnx.ModelProto:
    """uint8 [N, 8, 8, 3] → Transpose → Cast → Sub(mean) → Mul(1/std) → Conv(3→4) → Relu → GAP → MatMul."""
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(CNN_MEAN.reshape(1, 3, 1, 1).astype(np.float32), "pre.mean"),
              numpy_helper.from_array(CNN_SCALE.reshape(1, 3, 1, 1).astype(np.float32), "pre.scale"),
              numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
              numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
              numpy_helper.from_array(rng.standard_normal((4, 2)).astype(np.float32), "fc")]
    nodes = [helper.make_node("Transpose", ["image"], ["t"], perm=[0, 3, 1, 2], name="t"),
             helper.make_node("Cast", ["t"], ["f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Sub", ["f", "pre.mean"], ["s"], name="sub"),
             helper.make_node("Mul", ["s", "pre.scale"], ["x"], name="mul"),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=list(pads), name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["fl"], name="flatten"),
             helper.make_node("MatMul", ["fl", "fc"], ["logits"], name="fc")]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 8, 8, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def check_classifier_contract(path: Path, precision: str) -> None:
    """Assert that `path` is the CIFAR-10 CNN under the artifact contract, in `precision`."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert all(o.version >= 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.task"] == "classify" and meta["toolkit.model"] == "cifar-cnn"
    assert meta["toolkit.precision"] == precision and "toolkit.version" in meta
    assert json.loads(meta["toolkit.labels"]) == CIFAR10_LABELS
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert out.name == "logits" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


# ----------------------------------------------------------------------------- foreign models

def foreign_classifier(path, layout="nchw", size=(32, 32), classes=10, batch="N", softmax=False, opset=17,
                       extra_output=False, seed=0, first_conv=None):
    """A small float classifier as another tool would export it: Conv → Relu → global pool → Gemm,
    normalised input in its own layout, no toolkit metadata. `first_conv` ([8, 3, 3, 3]) replaces
    the first layer's random weights; the other weights depend on `seed` only."""
    rng = np.random.default_rng(seed)
    h, w = size
    shape = [batch, 3, h, w] if layout == "nchw" else [batch, h, w, 3]
    drawn = rng.normal(0, 0.5, (8, 3, 3, 3))
    inits = [numpy_helper.from_array((drawn if first_conv is None else first_conv).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv_b"),
             numpy_helper.from_array(rng.normal(0, 1.0, (classes, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, classes).astype(np.float32), "fc_b")]
    nodes, x = [], "input"
    if layout == "nhwc":
        nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes += [helper.make_node("Conv", [x, "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"]),
              helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"], transB=1)]
    out = "scores"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["scores"], ["probs"], axis=1))
        out = "probs"
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, classes])]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT, [batch, 8, 1, 1]))
    graph = helper.make_graph(nodes, "theirs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def stamped_classifier(path: Path, ir_version: int, opset: int) -> Path:
    """A float NCHW classifier, 3×8×8 → 4 classes, saved as the onnx package saves it, with the IR
    version and opset given (newer than onnxruntime reads, older than the contract asks)."""
    weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "theirs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.save_model(model, str(path))
    return path


def bare_cnn_onnx(path, nhwc_bgr=False):
    """The shipped CNN without the contract head, as plain torch.onnx.export writes it: float NCHW
    (or NHWC with BGR channels), normalisation expected outside the graph."""
    import torch

    import toolkit.zoo as zoo
    from toolkit.pytorch.checkpoint import load_weights

    net = zoo.CIFAR_CNN.build()
    load_weights(net, zoo.CIFAR_CNN.weights_path)
    net.eval()
    if nhwc_bgr:
        class NhwcBgr(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(x.flip(3).permute(0, 3, 1, 2))
        net, example = NhwcBgr(net).eval(), torch.zeros(2, 32, 32, 3)
    else:
        example = torch.zeros(2, 3, 32, 32)
    with warnings.catch_warnings():      # the TorchScript exporter is deprecated, and it is what many tools use
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (example,), str(path), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False,
                          opset_version=17)
    return path


# ----------------------------------------------------------------------------- hostile files

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


def encoded_images() -> dict[str, bytes]:
    """Real, small files of every format and mode the decoder takes, keyed by a short name."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {}
    for name, picture, options in [
        ("png", rgb, {"format": "PNG"}),
        ("png-palette", rgb.convert("P"), {"format": "PNG", "transparency": 0}),
        ("png-16bit", Image.fromarray(rng.integers(0, 65535, (24, 20), dtype=np.uint16)), {"format": "PNG"}),
        ("png-rgba", rgb.convert("RGBA"), {"format": "PNG"}),
        ("jpeg", rgb, {"format": "JPEG", "exif": exif}),
        ("jpeg-progressive", rgb, {"format": "JPEG", "progressive": True}),
        ("gif", rgb.convert("P"), {"format": "GIF"}),
        ("bmp", rgb, {"format": "BMP"}),
        ("tiff", rgb, {"format": "TIFF"}),
        ("webp", rgb, {"format": "WEBP"}),
    ]:
        buf = io.BytesIO()
        picture.save(buf, **options)
        files[name] = buf.getvalue()
    return files


def every_file(folder: Path) -> set[str]:
    """Every file and folder under `folder`, hidden ones included (to prove nothing was left behind)."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}
