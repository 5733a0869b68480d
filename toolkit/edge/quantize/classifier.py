"""fp16 and int8 variants of any contract classifier file: zoo, wrapped, or exported from a user's module.

    toolkit quantize mine.onnx --precision int8 --data data/cifar10-png/train --out mine.int8.onnx
    toolkit quantize mine.onnx --precision int8 --target tensorrt --data photos/ --out mine.trt.int8.onnx

`quantize_classifier` is what `toolkit quantize`, `toolkit export --precision` and the Python API
call, with their QuantizeOptions (quantize/config.py). Data: a class-per-folder tree or CIFAR-10
batches give labelled images — calibration from the training part of the fixed split, the accuracy
guard on `split`; a flat folder of images (or `unlabeled=True`) gives unlabelled images, and the
guard then holds top-1 agreement with the fp32 model instead of accuracy. Every variant is also
gated against fp32 logits before it is written. Never imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from toolkit.edge.contract import (
    ExportError,
    ModelFileError,
    Parity,
    check_model_file,
    logit_gate,
    read_metadata,
    replace_metadata,
    run_onnx,
    write_model,
)
from toolkit.edge.data.datasets import evenly_spaced
from toolkit.edge.errors import shown
from toolkit.edge.onnxgraph import input_signature
from toolkit.edge.options import QUANTIZED_PRECISIONS, SPLITS
from toolkit.edge.quantize import variants
from toolkit.edge.quantize.config import QuantizeOptions
from toolkit.edge.quantize.variants import QuantizeError
from toolkit.edge.words import counted

FP16_MIN_AGREEMENT, FP16_MAX_DIFF = 0.99, 0.1      # fp16 vs fp32 logits
INT8_MIN_AGREEMENT = 0.97                          # int8 vs fp32 top-1, whatever the guard measured
GATE_IMAGES = 1000


@dataclass
class QuantizeResult:
    path: Path
    precision: str
    target: str
    guard: str                        # accuracy | agreement | logits (fp16)
    fp32_score: float | None = None
    score: float | None = None
    excluded: list[str] = field(default_factory=list)
    agreement: float = 1.0            # top-1 agreement with fp32 on the gate images
    max_abs_diff: float = 0.0
    n_gate: int = 0

    @property
    def drop_points(self) -> float | None:
        return None if self.score is None or self.fp32_score is None else (self.fp32_score - self.score) * 100

    def describe(self) -> str:
        text = f"wrote {self.path} ({self.precision}"
        text += f", target {self.target})" if self.precision == "int8" else ")"
        if self.guard == "accuracy":
            text += (f"; validation accuracy {self.score:.2%} vs fp32 {self.fp32_score:.2%} "
                     f"({-(self.drop_points or 0.0):+.2f} pt)")
        elif self.guard == "agreement":
            text += f"; top-1 agreement with fp32 {self.score:.2%} on the guard images"
        if self.excluded:
            text += f"; kept in float: {', '.join(self.excluded)}"
        return text + (f"; gate on {counted(self.n_gate, 'image')}: agreement {self.agreement:.2%}, "
                       f"max |Δ| {self.max_abs_diff:.3g}")


@dataclass
class QuantizationData:
    calibration: np.ndarray
    guard: np.ndarray
    labels: np.ndarray | None        # index the model's labels; None: guard on agreement


# ----------------------------------------------------------------------------- the source model

def classifier_facts(path: Path) -> tuple[onnx.ModelProto, dict[str, str], tuple[int, int]]:
    """The model, its metadata and input H×W, read with the contract's reading checks (one file,
    no external data): a contract classifier in fp32, or QuantizeError."""
    try:
        proto = check_model_file(path).proto
    except ModelFileError as exc:
        raise QuantizeError(str(exc)) from None
    meta = read_metadata(proto)
    if meta.get("toolkit.task") != "classify":
        raise QuantizeError(f"{shown(path)}: not a contract classifier (toolkit.task is "
                            f"{meta.get('toolkit.task', 'missing')}); bring it in with `toolkit wrap` first")
    if meta.get("toolkit.precision", "fp32") != "fp32":
        raise QuantizeError(f"{shown(path)}: already {meta['toolkit.precision']}; quantize the fp32 model")
    inputs = input_signature(proto)
    dims = inputs[0].dims if len(inputs) == 1 else ()
    if len(dims) != 4 or dims[3] != 3 or not isinstance(dims[1], int) or not isinstance(dims[2], int) \
            or min(dims[1], dims[2]) < 1:
        raise QuantizeError(f"{shown(path)}: input is not uint8 [N, H, W, 3] with a fixed H×W")
    return proto, meta, (dims[1], dims[2])


# ----------------------------------------------------------------------------- data

def _is_labelled(root: Path) -> bool:
    from toolkit.edge.data.datasets import is_cifar_batches
    from toolkit.edge.data.images import is_image_name
    if is_cifar_batches(root):
        return True
    return any(d.is_dir() and not d.name.startswith(".") and any(is_image_name(f) for f in d.iterdir())
               for d in root.iterdir())


def read_quantization_data(data: str | os.PathLike, size: tuple[int, int], model_labels: list[str],
                           options: QuantizeOptions, log=print) -> QuantizationData:
    """`options.calibration_images` calibration images from the training part of the fixed split;
    `options.guard_images` guard images (and labels, when the data has them and `options.unlabeled`
    is off) from `options.split`."""
    from toolkit.edge.data.datasets import read_split, split_indices
    from toolkit.edge.data.images import ImageError, list_images, load_image, resize
    from toolkit.edge.infer import match_labels

    split, calibration_images, guard_images = options.split, options.calibration_images, options.guard_images
    root = Path(data)
    if not root.is_dir():
        raise QuantizeError(f"{shown(root)}: not a folder of images")
    if split not in SPLITS:
        raise QuantizeError(f"--split {split!r}: choose from {', '.join(SPLITS)}")

    def skip(message: str) -> None:
        log(f"skipping {message}")

    if _is_labelled(root):
        calibration = read_split(root, "train", size, limit=calibration_images, on_error=skip).images
        guard = read_split(root, split, size, limit=guard_images, on_error=skip)
        if options.unlabeled:
            return QuantizationData(calibration, guard.images, None)
        try:
            labels = match_labels(model_labels, guard.class_names, str(root))[guard.labels]
        except ValueError as exc:
            raise QuantizeError(f"{exc}; pass --unlabeled to guard on agreement with fp32 instead") from None
        return QuantizationData(calibration, guard.images, labels)
    files = list_images(root)
    if not files:
        raise QuantizeError(f"{shown(root)}: no images (a class-per-folder tree, CIFAR-10 batches or a flat folder)")
    log(f"note: {shown(root)} is a flat folder: the guard holds top-1 agreement with fp32")
    train, val = split_indices(np.zeros(len(files), dtype=np.int64))
    parts = {"train": train, "val": val, "all": np.arange(len(files))}
    decoded = []
    picks = (("train", evenly_spaced(train, calibration_images)), (split, evenly_spaced(parts[split], guard_images)))
    for part, index in picks:
        images = []
        for i in index:
            try:
                images.append(resize(load_image(files[i]), *size))
            except ImageError as exc:
                skip(str(exc))
        if not images:
            raise QuantizeError(f"{shown(root)}: no readable images in the {part} part of the fixed split")
        decoded.append(np.stack(images))
    return QuantizationData(decoded[0], decoded[1], None)


# ----------------------------------------------------------------------------- the variant

def _write(proto: onnx.ModelProto, out: Path, reference: np.ndarray, images: np.ndarray,
           min_agreement: float, max_diff: float | None, result: QuantizeResult) -> None:
    """The contract's writer, gated on the variant's logits against fp32; the gate's numbers go
    into `result`."""
    found: list[Parity] = []
    try:
        write_model(proto, out, logit_gate(reference, images, "fp32", min_agreement, max_diff, found, QuantizeError))
    except ExportError as exc:
        raise QuantizeError(f"the {result.precision} model breaks the contract: {exc}") from None
    finally:
        if found:
            result.agreement = found[0].top1_agreement or 0.0
            result.max_abs_diff, result.n_gate = found[0].max_abs_diff, found[0].n


def _check_request(source: Path, out: Path, data: str | os.PathLike | None, options: QuantizeOptions) -> Path:
    """The data folder; QuantizeError, before any work, for options outside their sets or limits."""
    precision, target = options.precision, options.target
    if precision not in QUANTIZED_PRECISIONS:
        raise QuantizeError(f"--precision {precision!r}: choose from {', '.join(QUANTIZED_PRECISIONS)}")
    if target not in variants.TARGETS or (target != "cpu" and precision != "int8"):
        raise QuantizeError(f"--target {target!r}: choose from {', '.join(variants.TARGETS)} (int8 only)")
    if options.calibration_method not in variants.CALIBRATION_METHODS:
        raise QuantizeError(f"--calibration-method {options.calibration_method!r}: choose from "
                            f"{', '.join(variants.CALIBRATION_METHODS)}")
    if not 0 < options.min_agreement <= 1 or options.max_drop < 0 or options.calibration_images < 1:
        raise QuantizeError("--min-agreement must lie in (0, 1], --max-drop ≥ 0, --calibration-images ≥ 1")
    if out.exists() and out.resolve() == source.resolve():
        raise QuantizeError(f"--out {shown(out)} is the input model; choose another file")
    if data is None:
        raise QuantizeError(f"{precision} needs real images for calibration and its gates (pass --data)")
    return Path(data)


def quantize_classifier(source: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None,
                        options: QuantizeOptions | None = None, log=print, progress=None) -> QuantizeResult:
    """An fp16 or static int8 variant of the fp32 contract classifier `source`, written to `out`
    only if its guard and its gate against fp32 hold; `data` gives calibration and guard images."""
    source, out, options = Path(source), Path(out), options or QuantizeOptions()
    precision, target, method = options.precision, options.target, options.calibration_method
    root = _check_request(source, out, data, options)
    fp32, meta, size = classifier_facts(source)
    if options.dynamic:
        variants.refuse_dynamic(fp32)
    labels = json.loads(meta.get("toolkit.labels", "[]"))
    images = read_quantization_data(root, size, labels, options, log)
    images.calibration = variants.usable_calibration(images.calibration, method)
    gate_images = images.guard[evenly_spaced(np.arange(len(images.guard)), GATE_IMAGES)]
    reference = run_onnx(source, gate_images)
    result = QuantizeResult(path=out, precision=precision, target=target, guard="logits")
    if precision == "fp16":
        proto = variants.convert_fp16(fp32)
        min_gate, max_diff = FP16_MIN_AGREEMENT, FP16_MAX_DIFF
    else:
        q_tmp = out.with_name(f".{out.name}.q.{os.getpid()}.onnx")
        try:
            proto, guard = variants.quantize_int8(source, q_tmp, images.calibration, images.guard, images.labels,
                                                  method, options.max_drop, log=log, progress=progress,
                                                  target=target, min_agreement=options.min_agreement)
        finally:
            q_tmp.unlink(missing_ok=True)
        calibration: dict[str, object] = {"method": method, "images": len(images.calibration),
                                          "excluded_nodes": guard.excluded}
        if target != "cpu":
            calibration["target"] = target
        meta["toolkit.calibration"] = json.dumps(calibration, separators=(",", ":"))
        result.guard = "agreement" if images.labels is None else "accuracy"
        result.fp32_score, result.score, result.excluded = guard.fp32_accuracy, guard.int8_accuracy, guard.excluded
        min_gate, max_diff = INT8_MIN_AGREEMENT, None
    meta["toolkit.precision"] = precision
    replace_metadata(proto, meta)
    _write(proto, out, reference, gate_images, min_gate, max_diff, result)
    return result
