"""fp16 and int8 variants of an exported fp32 ONNX model, with parity gates and an accuracy guard.

int8 is onnxruntime's static quantization in QDQ format: `quant_pre_process` first, per-channel
symmetric int8 weights, calibrated on real training images. Activation schemes (`target`):
- `cpu`: asymmetric uint8 activations, the U8S8 pair x86 VNNI kernels are fastest with, laid out
  for onnxruntime (recipe.CPU_RECIPE); `openvino`: the same without the packed first
  convolution, which OpenVINO runs slower (OPENVINO_RECIPE);
- `tensorrt`: symmetric signed int8 activations with zero point 0 and float biases — the only Q/DQ
  form TensorRT takes (it rejects uint8 or non-zero zero points, which would split the graph).
The uint8 preprocessing head (Cast, Transpose, Sub, Mul) is never quantized: it is exact
arithmetic on pixel values and costs nothing.

The accuracy guard measures fp32 and int8 top-1 on the validation split (or, without labels, the
int8 model's top-1 agreement with fp32); while the drop exceeds `max_drop`, the node whose
quantization introduces the most error (lowest signal-to-quantization-noise ratio, from
onnxruntime's QDQ debugging tools) is kept in float and quantization is redone.
`classifier.py` applies all this to any contract classifier file.

Only this module and export.py touch onnxruntime.quantization; nothing here imports torch.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from toolkit.edge.onnxgraph import input_signature, topological_sort
from toolkit.edge.options import CALIBRATION_METHODS, INT8_TARGETS
from toolkit.edge.quantize.config import DEFAULTS
from toolkit.edge.quantize.nhwc import flatten_nhwc, nhwc_input_head
from toolkit.edge.quantize.recipe import (
    CPU_RECIPE,
    OPENVINO_RECIPE,
    Int8Recipe,
    drop_output_qdq,
    drop_unused_initializers,
    finish_input_head,
    fold_input_head,
)
from toolkit.edge.wrap.graph import PREFIX as WRAP_PREFIX  # the head `toolkit wrap` puts in front

TARGETS = INT8_TARGETS
# ONNX op types of a uint8 input head (pixel arithmetic, exact in float), never quantized.
HEAD_OP_TYPES = {"Cast", "Transpose", "Sub", "Mul", "Div", "Slice"}
QUANTIZABLE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops that may sit between quantized compute nodes (residual adds and pooling of foreign nets
# included, so onnxruntime fuses them into int8 kernels); anything else (the uint8 head, a
# generator's tanh → uint8 tail, batch norm) stays float so pixel arithmetic is exact.
PASS_THROUGH_OPS = ("Relu", "LeakyRelu", "MaxPool", "Reshape", "Flatten", "Add", "GlobalAveragePool",
                    "AveragePool")


class QuantizeError(ValueError):
    """A quantization request that cannot be carried out (a bad option, a model it does not take,
    an accuracy the guard cannot hold); the message is one line for the user."""


@dataclass
class GuardReport:
    fp32_accuracy: float
    int8_accuracy: float
    excluded: list[str] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)

    @property
    def drop_points(self) -> float:
        return (self.fp32_accuracy - self.int8_accuracy) * 100


def _batches(images: np.ndarray, batch_size: int):
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


CALIBRATION_BATCH = 32


def usable_calibration(images: np.ndarray, method: str) -> np.ndarray:
    """The histogram calibrators (entropy, percentile) stack every batch's outputs into one array,
    so all batches must have the same size: drop the remainder (minmax takes any)."""
    if method == "minmax" or len(images) <= CALIBRATION_BATCH:
        return images
    return images[:len(images) - len(images) % CALIBRATION_BATCH]


def _reader(input_name: str, images: np.ndarray, batch_size: int = CALIBRATION_BATCH, advance=None):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = _batches(images, batch_size)

        def get_next(self):
            batch = next(self.it, None)
            if batch is None:
                return None
            if advance:
                advance(len(batch))
            return {input_name: batch}

        def rewind(self):
            self.it = _batches(images, batch_size)

    return Reader()


def has_convolutions(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)


def preprocess_head(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that run before the first compute node (the uint8 input head), and every
    node of a wrapped model's head wherever the optimiser put it."""
    names = []
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE_OPS:
            break
        if node.op_type in HEAD_OP_TYPES:
            names.append(node.name)
    names += [n.name for n in model.graph.node if n.name.startswith(WRAP_PREFIX) and n.name not in names]
    return names


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]


def _ensure_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    return model


def preprocess_for_quantization(fp32_path: Path, out_path: Path) -> onnx.ModelProto:
    """onnxruntime's quant_pre_process (shape inference + graph optimisation), with named nodes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    model = _ensure_node_names(onnx.load(str(out_path)))
    onnx.save(model, str(out_path))
    return model


def quantize_int8_static(pre_path: Path, out_path: Path, calibration: np.ndarray,
                         method: str = DEFAULTS.calibration_method, exclude: Sequence[str] = (), advance=None,
                         target: str = DEFAULTS.target,
                         recipe: Int8Recipe | None = None) -> onnx.ModelProto:
    """One static QDQ quantization pass of an already pre-processed fp32 model. `recipe` (target cpu
    only; default CPU_RECIPE) lays the graph out for onnxruntime's kernels: see recipe.py."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise QuantizeError(f"unknown calibration method {method!r} (choose from {', '.join(CALIBRATION_METHODS)})")
    if target not in TARGETS:
        raise QuantizeError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    model = onnx.load(str(pre_path))
    input_name = input_signature(model)[0].name
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    tensorrt = target == "tensorrt"
    extra: dict[str, object] = {"ActivationSymmetric": tensorrt, "WeightSymmetric": True}
    if tensorrt:
        # TensorRT computes biases itself in float; an int32 bias DequantizeLinear is not its form.
        extra["QuantizeBias"] = False
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    calibration = usable_calibration(calibration, method)
    recipe = None if tensorrt else recipe or (OPENVINO_RECIPE if target == "openvino" else CPU_RECIPE)
    exclude = preprocess_head(model) + list(exclude)
    source, head = pre_path, None
    if recipe and recipe.integer_head:
        head = fold_input_head(model, recipe.border, recipe.pack)
        if head is not None:
            extra["TensorQuantOverrides"] = head.overrides()
    flattened = flatten_nhwc(model) if recipe and recipe.nhwc_flatten else 0
    if head is not None or flattened:
        source = out_path.with_name(f".{out_path.name}.head.onnx")
        onnx.save(model, str(source))
    # A packed head's unpacking Transposes and an NHWC flatten's Transpose run in uint8 (onnxruntime's
    # NHWC layout then cancels them).
    op_types = list(QUANTIZABLE_OPS + PASS_THROUGH_OPS) + (["Transpose"] if flattened or (head and head.packed) else [])
    try:
        quantize_static(str(source), str(out_path), _reader(input_name, calibration, advance=advance),
                        quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel if recipe else True,
                        reduce_range=False, activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                        weight_type=QuantType.QUInt8 if recipe and recipe.weight_type == "uint8" else QuantType.QInt8,
                        op_types_to_quantize=op_types,
                        nodes_to_exclude=exclude, calibrate_method=calibrate, extra_options=extra)
    finally:
        if source != pre_path:
            source.unlink(missing_ok=True)
    quantized = onnx.load(str(out_path))
    if head is not None:
        finish_input_head(quantized, head)
        if recipe and recipe.nhwc_head:
            nhwc_input_head(quantized)
    if recipe and recipe.float_logits:
        drop_output_qdq(quantized)
    if recipe:
        drop_unused_initializers(quantized)
        onnx.save(quantized, str(out_path))
    return quantized


def rank_nodes_by_error(pre_path: Path, qdq_path: Path, images: np.ndarray,
                        candidates: list[str]) -> list[tuple[str, float]]:
    """Candidate nodes ordered from most to least harmful: the SQNR (dB) of each node's output
    in the QDQ model against the same tensor in the float model (lower = more error)."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    model = onnx.load(str(pre_path))
    input_name = input_signature(model)[0].name
    output_of = {n.name: n.output[0] for n in model.graph.node}
    with tempfile.TemporaryDirectory() as tmp:
        aug_float, aug_qdq = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(pre_path), str(aug_float))
        modify_model_output_intermediate_tensors(str(qdq_path), str(aug_qdq))
        providers = ["CPUExecutionProvider"]
        float_acts = collect_activations(str(aug_float), _reader(input_name, images), execution_providers=providers)
        qdq_acts = collect_activations(str(aug_qdq), _reader(input_name, images), execution_providers=providers)
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    scored = []
    for name in candidates:
        err = errors.get(output_of.get(name, ""), {})
        sqnr = err.get("xmodel_err")
        if sqnr is not None:
            scored.append((name, float(sqnr)))
    # The node whose output has drifted furthest from float is the first to keep in float.
    return sorted(scored, key=lambda t: t[1])


def accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    from toolkit.edge.infer import predict
    from toolkit.edge.runtime import open_model
    preds = predict(open_model(path, "cpu"), images)
    return float(np.mean(preds == labels)), preds


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, val_images: np.ndarray,
                  val_labels: np.ndarray | None, method: str = DEFAULTS.calibration_method,
                  max_drop: float = DEFAULTS.max_drop, log=print, progress=None, target: str = DEFAULTS.target,
                  min_agreement: float = DEFAULTS.min_agreement) -> tuple[onnx.ModelProto, GuardReport]:
    """Static int8 QDQ with the accuracy guard. `val_labels` index the model's logits; without
    them (None) the guard holds top-1 agreement with fp32 ≥ `min_agreement` instead.
    Returns the quantized proto (metadata not yet set) and the guard's report."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if val_labels is None:
        # Agreement mode: fp32 agrees with itself, so the "drop" is the disagreement in points.
        _, reference = accuracy(fp32_path, val_images, np.zeros(len(val_images), dtype=np.int64))
        fp32_acc, val_labels, max_drop, what = 1.0, reference, (1.0 - min_agreement) * 100, "agreement with fp32"
    else:
        fp32_acc, _ = accuracy(fp32_path, val_images, val_labels)
        what = "validation accuracy"
    with tempfile.TemporaryDirectory() as tmp:
        pre_path, qdq_path = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx"
        pre = preprocess_for_quantization(fp32_path, pre_path)
        candidates = quantizable_nodes(pre)
        excluded: list[str] = []
        report = GuardReport(fp32_accuracy=fp32_acc, int8_accuracy=0.0)
        ranking: list[tuple[str, float]] | None = None
        while True:
            advance = progress("calibrating", len(calibration)) if progress else None
            proto = quantize_int8_static(pre_path, qdq_path, calibration, method, excluded, advance, target)
            acc, _ = accuracy(qdq_path, val_images, val_labels)
            report.int8_accuracy = acc
            report.attempts.append({"excluded": list(excluded), "accuracy": acc})
            versus = f" vs fp32 {fp32_acc:.2%}" if what == "validation accuracy" else ""   # fp32 agrees with itself
            log(f"int8 ({method}, {target}, {len(excluded)} node(s) kept in float): {what} {acc:.2%}{versus} "
                f"(drop {report.drop_points:.2f} pt, limit {max_drop:g})")
            if report.drop_points <= max_drop:
                report.excluded = excluded
                return proto, report
            remaining = [c for c in candidates if c not in excluded]
            if not remaining:
                report.excluded = excluded
                raise QuantizeError(
                    f"int8 cannot hold the accuracy limit: drop {report.drop_points:.2f} pt > {max_drop:g} pt "
                    f"even with every node kept in float")
            if ranking is None:
                # Rank once, on the fully quantized model: the errors each node introduces.
                ranking = rank_nodes_by_error(pre_path, qdq_path, calibration[:128], remaining)
                log("most sensitive nodes (output SQNR, dB): "
                    + ", ".join(f"{n} {s:.1f}" for n, s in ranking[:5]))
            next_node = next((n for n, _ in ranking if n not in excluded), remaining[0])
            excluded.append(next_node)
            if len(excluded) == len(candidates):
                report.excluded = excluded
                raise QuantizeError(
                    f"int8 cannot hold the accuracy limit: drop > {max_drop:g} pt until every node is kept in float")
            log(f"keeping {next_node} in float and quantizing again")


def refuse_dynamic(model: onnx.ModelProto) -> None:
    if has_convolutions(model):
        raise QuantizeError(
            "dynamic int8 is refused for models with convolutions: onnxruntime turns Conv into ConvInteger, "
            "about 6× slower than fp32 on CPU; use static int8 (the default), calibrated on real images")


def convert_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and compute, with the model's input and output types unchanged (casts inside)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(fp32, keep_io_types=True, disable_shape_infer=False)
    # The converter appends its input casts at the end of the node list, which the checker rejects.
    try:
        topological_sort(model.graph)
    except ValueError as exc:
        raise QuantizeError(f"fp16: {exc}") from None
    return model
