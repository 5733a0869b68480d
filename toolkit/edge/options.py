"""The closed sets of option values, declared once: precisions, providers, forms, ops, splits;
and `option`, the field whose default and help a command's option takes (recipes.py, quantize/config.py).

Standard library only, so anything may import it (the CLI at start-up, the leaf `edge/spectral/ops.py`).
Each set is a `Literal`, which gives three things from one declaration: Typer renders it as a
choice (the help lists it; a bad value fails while parsing, before any work, naming the choices),
mypy checks every call site, and the values stay plain `str` for every caller.
The tuple beside each is the same set at run time, for the library's own checks and messages.
"""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any, Literal, get_args

# File precisions (`toolkit.precision` in the metadata). bf16 is a compute mode of a runtime, never
# a file precision: see PrecisionHint.
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

# What `quantize` makes from an fp32 file.
QuantizedPrecision = Literal["fp16", "int8"]
QUANTIZED_PRECISIONS: tuple[QuantizedPrecision, ...] = get_args(QuantizedPrecision)

# openvino is not an onnxruntime provider but the OpenVINO runtime behind the same interface.
Provider = Literal["cpu", "cuda", "tensorrt", "openvino"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)

# OpenVINO's CPU compute precision for fp32/fp16 files (its plugin picks bf16 silently otherwise).
PrecisionHint = Literal["f32", "bf16"]
PRECISION_HINTS: tuple[PrecisionHint, ...] = get_args(PrecisionHint)

# How a spectral op is expressed in ONNX: DFT nodes (CPU only) or MatMuls with constant bases.
Form = Literal["dft", "matmul"]
FORMS: tuple[Form, ...] = get_args(Form)

# The spectral ops (docs/transforms.md); each is also a registry-free model name for `export --model`.
Op = Literal["fft-lowpass", "fft-spectrum", "walsh-compress"]
SPECTRAL_OPS: tuple[Op, ...] = get_args(Op)

# Parts of the fixed split (docs/data.md): val = the last 10% of each class (500 CIFAR-10 files).
Split = Literal["all", "val", "train"]
SPLITS: tuple[Split, ...] = get_args(Split)

# onnxruntime's static-quantization calibration methods.
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = get_args(CalibrationMethod)

# int8 schemes: cpu (uint8 activations, laid out for onnxruntime's x86 VNNI kernels), openvino (the
# same scheme without onnxruntime's packed first convolution) or tensorrt (symmetric int8, zero point 0).
Int8Target = Literal["cpu", "openvino", "tensorrt"]
INT8_TARGETS: tuple[Int8Target, ...] = get_args(Int8Target)

# Where `infer` and `eval` run: this process, or a Ray cluster (toolkit.edge.scale); how the Ray
# engine's result shards are written.
Engine = Literal["local", "ray"]
ENGINES: tuple[Engine, ...] = get_args(Engine)
ResultFormat = Literal["parquet", "jsonl"]
RESULT_FORMATS: tuple[ResultFormat, ...] = get_args(ResultFormat)

Layout = Literal["nchw", "nhwc"]                 # wrap: a foreign model's input layout
Channels = Literal["rgb", "bgr"]                 # wrap: the channel order it expects
OutputKind = Literal["logits", "probabilities"]  # wrap: what its output holds


# ----------------------------------------------------------------------------- options with defaults

def option(default: Any, help: str, **limits: float) -> Any:
    """A dataclass field whose default, help text and limits (`min`, `max`) become the CLI option's."""
    return field(default=default, metadata={"help": help, **limits})


def help_text(cls: type, name: str) -> str:
    """The help of a field; a subclass that only changes a default inherits its base's text."""
    for base in cls.__mro__:
        f = getattr(base, "__dataclass_fields__", {}).get(name)
        if f is not None and "help" in f.metadata:
            return str(f.metadata["help"])
    raise KeyError(name)


def limits(cls: type, name: str) -> dict[str, float]:
    """The `min` and `max` a field's value must respect, where it declares them."""
    f = next(f for f in fields(cls) if f.name == name)
    return {k: v for k, v in f.metadata.items() if k in ("min", "max")}

