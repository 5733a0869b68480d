"""Bring a foreign ONNX image classifier into the artifact contract (docs/contract.md), once.

    toolkit wrap theirs.onnx --out mine.onnx --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --labels labels.txt

The foreign model takes float input in its own layout, channel order and normalisation. The
wrapped model takes `image` uint8 [N, H, W, 3] RGB and returns `logits` float32 [N, K], with the
contract's metadata. The preprocessing becomes ONNX nodes in front of the untouched original graph
and the post-processing nodes behind it, joined with `onnx.compose.merge_models`:

    x = pixels, channels reversed if the model wants BGR, transposed if it wants NCHW
    x = (x / scale − mean) / std         (mean and std given R,G,B whatever the model's channel
                                          order, so reversed along with the pixels for BGR;
                                          computed as x · 1/(scale·std) − mean/std in one
                                          BatchNormalization node for NCHW, Sub and Mul for NHWC)
    logits = output, or log(max(output, 1e-38)) when the model returns probabilities

The parity gate runs the original model on the same real images preprocessed in numpy (float64,
the formula above) and the wrapped one on the uint8 pixels: max |Δ| ≤ 1e-4 (1e-2 for a model with
fp16 input) and identical top-1, or nothing is written. Never imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx

from toolkit.edge.contract import ExportError, Parity, logit_gate, read_metadata, run_onnx, write_model
from toolkit.edge.data.fsio import read_regular_file
from toolkit.edge.errors import first_line, shown
from toolkit.edge.words import counted
from toolkit.edge.wrap.graph import (
    FLOAT_TYPES,
    TINY,
    Interface,
    WrapError,
    WrapSpec,
    build_wrapped,
    interface,
    load_foreign,
    model_order_stats,
)
from toolkit.edge.wrap.irversion import lower_ir_version, runnable_file

__all__ = ["WrapError", "WrapResult", "WrapSpec", "parse_labels", "parse_triple", "wrap"]

LAYOUTS = ("nchw", "nhwc")
CHANNELS = ("rgb", "bgr")
OUTPUT_KINDS = ("logits", "probabilities")
PARITY_MAX_DIFF = 1e-4
# An fp16 model rounds its input to fp16 (steps of 2⁻¹⁰ relative): where the graph's float32 head and
# numpy's float64 formula round a pixel to neighbouring fp16 values, outputs differ by ~1e-3.
PARITY_MAX_DIFF_FP16 = 1e-2
PARITY_IMAGES = 64


@dataclass
class WrapResult:
    path: Path
    name: str
    layout: str
    input_size: tuple[int, int]
    labels: list[str]
    precision: str
    max_abs_diff: float
    n_images: int

    def describe(self) -> str:
        return (f"wrote {self.path}: {self.name}, {self.precision}, uint8 [N, {self.input_size[0]}, "
                f"{self.input_size[1]}, 3] → logits [N, {len(self.labels)}] (source layout "
                f"{self.layout.upper()}); parity on {counted(self.n_images, 'image')}: "
                f"max |Δ| {self.max_abs_diff:.1e}, top-1 identical")


# ----------------------------------------------------------------------------- option parsing

def parse_labels(text: str) -> list[str]:
    """`--labels`: a file with one label per line, or a comma-separated list."""
    path = Path(text)
    if path.is_file():
        lines = read_regular_file(path, 16 * 2**20).decode("utf-8", "replace").splitlines()
        labels = [line.strip() for line in lines if line.strip()]
    else:
        labels = [part.strip() for part in text.split(",")]
    if not labels or any(not label for label in labels):
        raise WrapError(f"--labels {shown(text)}: empty label (give a file with one label per line, or a,b,c)")
    return labels


def parse_triple(text: str, option: str, positive: bool = False) -> tuple[float, float, float]:
    """`--mean` / `--std`: R,G,B (or one value for all three channels)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise WrapError(f"{option} {text!r}: expected numbers R,G,B") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(np.isfinite(values)) or (positive and min(values) <= 0):
        raise WrapError(f"{option} {text!r}: expected three finite{' positive' if positive else ''} numbers R,G,B")
    return values[0], values[1], values[2]


# ----------------------------------------------------------------------------- parity

def load_images(source: str | os.PathLike, size: tuple[int, int], limit: int = PARITY_IMAGES) -> np.ndarray:
    """Up to `limit` real images (evenly spaced over the files of a folder, searched recursively),
    decoded and resized to `size`: uint8 [n, H, W, 3]."""
    from toolkit.edge.data.images import ImageError, expand_inputs, is_image_name, load_image, resize

    files = [f for f in expand_inputs([source]) if is_image_name(f)]
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]
    images = []
    for f in files:
        try:
            images.append(resize(load_image(f), *size))
        except ImageError:
            continue
    if not images:
        raise WrapError(f"{shown(source)}: no readable images for the parity check")
    return np.stack(images)


def reference_input(images: np.ndarray, spec: WrapSpec, io: Interface) -> np.ndarray:
    """The documented preprocessing in numpy (float64), as the user's own pipeline would feed it."""
    x = images.astype(np.float64)
    if spec.channels == "bgr":
        x = x[..., ::-1]
    mean, std = model_order_stats(spec)
    x = (x / spec.scale - mean) / std
    if io.layout == "nchw":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x.astype(FLOAT_TYPES[io.dtype]))


def as_logits(output: np.ndarray, spec: WrapSpec) -> np.ndarray:
    """The post-processing in numpy: [N, K] float32, log-probabilities for a probability output."""
    out = output.reshape(len(output), -1).astype(np.float32)
    return np.log(np.maximum(out, np.float32(TINY))) if spec.outputs == "probabilities" else out


def reference_logits(source: Path, images: np.ndarray, spec: WrapSpec, io: Interface) -> np.ndarray:
    """The original model on numpy-preprocessed images, post-processed in numpy."""
    try:
        out = run_onnx(source, reference_input(images, spec, io), 32, io.output, io.static_batch)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise WrapError(f"{shown(source)}: onnxruntime cannot run the model as given: {first_line(exc)}") from None
    return as_logits(out, spec)


def _check_spec(spec: WrapSpec) -> None:
    for value, choices, option in ((spec.layout, LAYOUTS, "--layout"), (spec.channels, CHANNELS, "--channels"),
                                   (spec.outputs, OUTPUT_KINDS, "--outputs")):
        if value is not None and value not in choices:
            raise WrapError(f"{option} {value!r}: choose from {', '.join(choices)}")
    if not (np.isfinite(spec.scale) and spec.scale > 0):
        raise WrapError(f"--scale {spec.scale}: must be a positive number")
    if min(spec.std) <= 0:
        raise WrapError(f"--std {','.join(map(str, spec.std))}: must be positive")
    if spec.size is not None and (len(spec.size) != 2 or min(spec.size) < 1):
        raise WrapError("--size takes two positive numbers: H W")


# ----------------------------------------------------------------------------- wrap

def wrap(source: str | os.PathLike, out: str | os.PathLike, spec: WrapSpec | None = None,
         images: np.ndarray | str | os.PathLike | None = None, log=print) -> WrapResult:
    """Wrap the foreign classifier `source` into a contract model at `out`, gated on parity with
    the original on `images` (uint8 [n, h, w, 3], or a folder of real images)."""
    from toolkit.edge.data.images import resize

    source, out = Path(source), Path(out)
    spec = spec or WrapSpec()
    _check_spec(spec)
    if out.exists() and source.exists() and out.resolve() == source.resolve():
        raise WrapError(f"--out {shown(out)} is the input model; choose another file")
    model = load_foreign(source)
    lowered = lower_ir_version(model, source, log)
    io = interface(model, spec)
    size = (io.height, io.width)
    if images is None:
        raise WrapError("the parity check needs real images (a folder of images)")
    if isinstance(images, np.ndarray):
        pixels = np.stack([resize(img, *size) for img in images])
    else:
        pixels = load_images(images, size)
    with runnable_file(model, source, lowered) as runnable:
        reference = reference_logits(runnable, pixels, spec, io)
    classes = reference.shape[1]
    if spec.labels is not None and len(spec.labels) != classes:
        raise WrapError(f"{len(spec.labels)} labels given but the model outputs {classes} classes")
    if not np.all(np.isfinite(reference)):
        raise WrapError("the original model gives non-finite outputs on the parity images")
    labels = spec.labels or [str(i) for i in range(classes)]
    if spec.labels is None:
        log(f"note: no --labels; the {classes} classes are named 0…{classes - 1}")
    io.classes = classes
    name = spec.name or source.stem
    proto = build_wrapped(model, replace(spec, labels=labels), name, io)
    limit = PARITY_MAX_DIFF_FP16 if io.dtype == onnx.TensorProto.FLOAT16 else PARITY_MAX_DIFF
    found: list[Parity] = []
    parity = logit_gate(reference, pixels, "the original model", 1.0, limit, found, WrapError)

    def gate(tmp: Path) -> None:
        try:
            parity(tmp)
        except WrapError:
            raise
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise WrapError(f"the wrapped model does not run on a batch of {min(len(pixels), 256)} images "
                            f"({first_line(exc)}); export the model with a dynamic batch dimension") from None

    try:
        write_model(proto, out, gate)
    except ExportError as exc:
        raise WrapError(f"the wrapped model breaks the contract: {exc}") from None
    return WrapResult(path=out, name=name, layout=io.layout, input_size=size, labels=labels,
                      precision=read_metadata(proto)["toolkit.precision"], max_abs_diff=found[0].max_abs_diff,
                      n_images=len(pixels))
