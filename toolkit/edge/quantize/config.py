"""The quantize options, declared once: `toolkit quantize`, `toolkit export --precision fp16|int8`
and `toolkit.quantize` take their options, defaults, help texts and limits from QuantizeOptions.
Standard library only (the CLI reads it at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.edge.options import option


@dataclass
class QuantizeOptions:
    """How an fp16 or int8 variant of an fp32 classifier is made and guarded. The closed sets
    (precision, split, calibration_method, target) are toolkit.edge.options' Literals: the CLI
    declares them as its options' types, quantize_classifier checks them."""

    precision: str = option("int8", "int8 (static QDQ) or fp16.")
    split: str = option("val", "Part of the fixed split the guard measures on.")
    calibration_images: int = option(500, "int8: training images used for calibration.", min=1)
    calibration_method: str = option("minmax", "int8: how ranges are calibrated.")
    max_drop: float = option(0.5, "int8: largest allowed validation-accuracy drop, in points.", min=0.0)
    unlabeled: bool = option(False, "Ignore labels: guard on top-1 agreement with fp32.")
    min_agreement: float = option(0.98, "Unlabelled guard: least top-1 agreement with fp32.", min=0.0, max=1.0)
    target: str = option("cpu", "int8 scheme: cpu (uint8 activations, onnxruntime's layout), openvino "
                                       "(the same, OpenVINO's layout) or tensorrt (symmetric int8, zero point 0).")
    guard_images: int | None = option(None, "Measure the guard on this many images of the split (default: all).",
                                      min=1)
    dynamic: bool = option(False, "int8: dynamic quantization (refused for models with convolutions).")


DEFAULTS = QuantizeOptions()            # for the library functions that take the options one by one
