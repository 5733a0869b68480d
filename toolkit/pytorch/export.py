"""Export from torch under the artifact contract (docs/contract.md), per task, each gated on parity.

    classifier  any classify model of zoo.REGISTRY: uint8 NHWC → logits, optionally a transform fused
                in front (`preprocess`) and/or flip averaging inside the graph (`tta`); fp32 is gated
                on PyTorch, fp16/int8 variants are made by edge.quantize.classifier from that fp32 file
    generator   the DCGAN: z → uint8 NHWC; fp32 gated on PyTorch, fp16/int8 on PSNR against fp32
    transform   edge.spectral.transforms.export_transform (no torch)

Contract checks, metadata and the atomic, gated write live in edge.contract; the torch → ONNX step
and its graph clean-ups in onnx_export.py. Every public export returns an `Exported`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import toolkit.zoo as zoo
from toolkit.edge.contract import (
    ExportError,
    Parity,
    logit_gate,
    read_metadata,
    replace_metadata,
    run_onnx,
    set_metadata,
    write_model,
)
from toolkit.edge.onnxgraph import input_signature
from toolkit.edge.options import PRECISIONS, SPECTRAL_OPS
from toolkit.edge.quantize.config import QuantizeOptions
from toolkit.edge.quantize.variants import TARGETS
from toolkit.pytorch.onnx_export import torch_to_onnx

__all__ = [
    "DEFAULT_DATA",
    "ExportError",
    "Exported",
    "classifier_module",
    "default_output",
    "export_classifier",
    "export_classifier_variant",
    "export_generator",
    "export_model",
    "generator_module",
]

# Relative to the working directory: `make models` and the README's commands run from the checkout.
DEFAULT_DATA = Path("data") / "cifar10-png" / "train"
FP32_TOLERANCE = 1e-3                           # max |Δlogit| between PyTorch and onnxruntime fp32
FP16_MIN_AGREEMENT, FP16_MAX_DIFF = 0.99, 0.1   # fp16 vs fp32 logits when no real images are at hand
GENERATOR_MAX_PIXEL_DIFF = 1                    # fp32 generator: PyTorch vs onnxruntime
TRANSFORM_MODELS = SPECTRAL_OPS                  # the spectral ops export as weight-free models, without torch
# Shipped files whose default name does not say which weights they hold (the Makefile's rules):
# a default output path never replaces them with a model made from other weights.
SHIPPED_FROM_OTHER_WEIGHTS = {"cifar_cnn.fft_lowpass.onnx": "cifar_cnn_lowpass.safetensors"}

Log = Callable[[str], object]


@dataclass
class Exported:
    """What an export wrote and what its gate measured."""
    path: Path
    precision: str
    summary: str                                  # one line for the user
    facts: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return self.summary


def _spec(model: str, task: str | None = None) -> zoo.ModelSpec:
    known = [*zoo.REGISTRY, *TRANSFORM_MODELS]
    if model not in zoo.REGISTRY:
        raise ExportError(f"unknown model {model} (known: {', '.join(known)})")
    spec = zoo.REGISTRY[model]
    if task is not None and spec.task != task:
        raise ExportError(f"{model} is a {spec.task} model, not {task}")
    return spec


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB"


def default_output(spec: zoo.ModelSpec, precision: str = "fp32", preprocess: str | None = None,
                   tta: bool = False, target: str = "cpu", weights: str | os.PathLike | None = None) -> Path:
    """<weights folder>/<weights stem>[.<preprocess op>][.tta][.trt|.ov][.<precision>].onnx, named after
    the weights it is made from (models/<name>… for the shipped ones; .trt, .ov: the TensorRT and
    OpenVINO int8 files). A name that a shipped file built from other weights holds is refused."""
    source = Path(weights) if weights else spec.weights_path
    parts = [source.name.removesuffix(source.suffix)]
    if preprocess:
        parts.append(preprocess.split(":")[0].replace("-", "_"))
    if tta:
        parts.append("tta")
    if target in zoo.TARGET_SUFFIX:
        parts.append(zoo.TARGET_SUFFIX[target])
    if precision != "fp32":
        parts.append(precision)
    path = source.parent / (".".join(parts) + ".onnx")
    made_from = SHIPPED_FROM_OTHER_WEIGHTS.get(path.name)
    if made_from is not None and source.name != made_from and path.parent.resolve() == zoo.MODELS_DIR.resolve():
        raise ExportError(f"{path} is the shipped model made from {made_from}, not from {source.name}; "
                          f"give --out FILE (or --weights {zoo.MODELS_DIR / made_from})")
    return path


# ----------------------------------------------------------------------------- classifier

def validation_images(data: str | os.PathLike | None, n: int, size: tuple[int, int] = (32, 32),
                      log: Log = print) -> np.ndarray:
    """`n` real validation images (the fixed split) for the parity gate. Without data, seeded
    random images are used, and the user is told so."""
    from toolkit.edge.data.datasets import read_split
    root = Path(data) if data else DEFAULT_DATA
    if root.exists():
        return read_split(root, "val", size, limit=n).images
    if data:
        raise ExportError(f"{root}: parity data not found")
    log(f"note: {root} not found; parity is measured on {n} random images, not real ones (pass --data)")
    return np.random.default_rng(0).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def classifier_module(weights: str | os.PathLike | None = None, preprocess: str | None = None,
                      model: str = "cifar-cnn", tta: bool = False):
    """The contract form of a zoo classifier in torch: uint8 NHWC → logits, eval mode.
    `preprocess` ('fft-lowpass:0.5', 'walsh-compress:0.5') runs a transform first; `tta` averages
    the logits of the image and its mirror."""
    import torch

    from toolkit.pytorch.checkpoint import load_weights
    from toolkit.pytorch.nets.layers import Classifier, FlipAveraged

    spec = _spec(model, "classify")
    net = spec.build()
    if weights is not None:
        load_weights(net, weights)
    module: torch.nn.Module = Classifier(net, spec.mean, spec.std)
    if preprocess:
        from toolkit.edge.spectral.ops import parse_preprocess
        from toolkit.pytorch.nets.spectral import transform_module
        op, params = parse_preprocess(preprocess)
        module = torch.nn.Sequential(transform_module(op, params, "matmul", spec.input_size), module)
    if tta:
        module = FlipAveraged(module)
    return module.eval()


def torch_logits(module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    import torch
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])


def export_classifier(out: str | os.PathLike, weights: str | os.PathLike | None = None,
                      data: str | os.PathLike | None = None, preprocess: str | None = None,
                      parity_images: int = 256, log: Log = print, *, model: str = "cifar-cnn",
                      tta: bool = False) -> Exported:
    """Export a zoo classifier (fp32) under the classifier contract, gated on PyTorch/onnxruntime
    parity over real validation images: top-1 agreement must be 100% and max |Δlogit| ≤ 1e-3."""
    import torch

    spec = _spec(model, "classify")
    out = Path(out)
    module = classifier_module(weights, preprocess, model, tta)
    example = torch.zeros((2, *spec.input_size, 3), dtype=torch.uint8)
    proto = torch_to_onnx(module, (example,), ["image"], ["logits"], log=log)
    extra: dict[str, object] = {"labels": spec.labels}
    if preprocess:
        extra["preprocess"] = preprocess
    if tta:
        extra["tta"] = "1"
    set_metadata(proto, "classify", spec.name, "fp32", **extra)
    images = validation_images(data, parity_images, spec.input_size, log)
    parity: list[Parity] = []
    write_model(proto, out, logit_gate(torch_logits(module, images), images, "PyTorch", 1.0, FP32_TOLERANCE, parity))
    gate = f"{parity[0].describe()} vs PyTorch"
    return Exported(out, "fp32", f"wrote {out} (fp32, {_size(out)}); {gate}", {"gate": gate, **parity[0].__dict__})


def _fp16_on_random_images(fp32_path: Path, out: Path, log: Log) -> Exported:
    """fp16 without real images: the logit gate against fp32 runs on seeded random images."""
    from toolkit.edge.quantize import variants as quantize

    fp32 = onnx.load(str(fp32_path))
    size = tuple(d or 0 for d in input_signature(fp32)[0].sizes()[1:3])
    log(f"note: {DEFAULT_DATA} not found; the fp16 gate runs on 1000 random images (pass --data for real ones)")
    images = np.random.default_rng(0).integers(0, 256, (1000, *size, 3), dtype=np.uint8)
    proto = quantize.convert_fp16(fp32)
    replace_metadata(proto, {**read_metadata(fp32), "toolkit.precision": "fp16"})
    parity: list[Parity] = []
    write_model(proto, out, logit_gate(run_onnx(fp32_path, images), images, "fp32", FP16_MIN_AGREEMENT, FP16_MAX_DIFF,
                                       parity))
    gate = f"{parity[0].describe()} vs fp32"
    return Exported(out, "fp16", f"wrote {out} (fp16, {_size(out)}); {gate}", {"gate": gate, **parity[0].__dict__})


def export_classifier_variant(out: str | os.PathLike, options: QuantizeOptions,
                              weights: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                              log: Log = print, progress=None, *, model: str = "cifar-cnn",
                              tta: bool = False) -> Exported:
    """fp16 or int8 classifier (`options.precision`): export fp32 (gated against PyTorch) to a temp
    file, then let edge.quantize.classifier make the variant with its guard and its gate against fp32."""
    from toolkit.edge.quantize.classifier import QuantizeError, quantize_classifier

    out, precision = Path(out), options.precision
    root = Path(data) if data else (DEFAULT_DATA if DEFAULT_DATA.exists() else None)
    if root is None and precision == "int8":
        raise ExportError(f"{DEFAULT_DATA} not found: int8 needs real images for calibration and its guard "
                          f"(pass --data)")
    with tempfile.TemporaryDirectory(prefix="toolkit-export-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        inner = export_classifier(fp32, weights, root, log=log, model=model, tta=tta)
        log(f"fp32 step: {inner.facts['gate']}")
        if root is None:
            return _fp16_on_random_images(fp32, out, log)
        try:
            result = quantize_classifier(fp32, out, root, options, log=log, progress=progress)
        except QuantizeError as exc:
            raise ExportError(str(exc)) from None
    return Exported(result.path, precision, result.describe(),
                    {"excluded": result.excluded, "fp32_score": result.fp32_score, "score": result.score,
                     "agreement": result.agreement, "max_abs_diff": result.max_abs_diff})


# ----------------------------------------------------------------------------- generator

def generator_module(weights: str | os.PathLike | None = None):
    """The contract form of the shipped DCGAN generator in torch: z → uint8 NHWC, eval mode."""
    from toolkit.pytorch.checkpoint import load_weights
    from toolkit.pytorch.nets.layers import ImageGenerator

    g = zoo.DCGAN.build()
    if weights is not None:
        load_weights(g, weights)
    return ImageGenerator(g).eval()


def fixed_latents(n: int = 256, latent_dim: int = 100, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def export_generator(out: str | os.PathLike, weights: str | os.PathLike | None = None, precision: str = "fp32",
                     min_psnr: float = 30.0, log: Log = print) -> Exported:
    """Export the DCGAN generator. fp32 is gated on PyTorch parity (max pixel difference ≤ 1 on
    fixed latents); fp16 / int8 variants are gated on PSNR against fp32 on the same latents."""
    import torch

    from toolkit.edge.quantize import variants as quantize

    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision} (choose from {', '.join(PRECISIONS)})")
    spec = zoo.DCGAN
    out = Path(out)
    module = generator_module(weights)
    z = fixed_latents(256, spec.latent_dim)
    with torch.no_grad():
        reference = module(torch.from_numpy(z)).numpy()
    proto = torch_to_onnx(module, (torch.from_numpy(z[:2]),), ["z"], ["image"], log=log)
    set_metadata(proto, "generate", spec.name, "fp32", latent_dim=str(spec.latent_dim))
    facts: dict[str, Any] = {}

    def fp32_gate(tmp_path: Path) -> None:
        diff = int(np.max(np.abs(run_onnx(tmp_path, z).astype(np.int16) - reference.astype(np.int16))))
        facts["max_pixel_diff"] = diff
        if diff > GENERATOR_MAX_PIXEL_DIFF:
            raise ExportError(f"parity gate failed: max pixel difference {diff} > {GENERATOR_MAX_PIXEL_DIFF}")

    if precision == "fp32":
        write_model(proto, out, fp32_gate)
        return Exported(out, precision, f"wrote {out} (fp32, {_size(out)}); parity on {len(z)} latents: max pixel "
                                        f"difference {facts['max_pixel_diff']} vs PyTorch", facts)

    with tempfile.TemporaryDirectory(prefix="toolkit-export-") as tmp:
        fp32_path, q_path = Path(tmp) / "fp32.onnx", Path(tmp) / "q.onnx"
        write_model(proto, fp32_path, fp32_gate)
        fp32_images = run_onnx(fp32_path, z)
        if precision == "fp16":
            variant = quantize.convert_fp16(onnx.load(str(fp32_path)))
        else:
            pre = Path(tmp) / "pre.onnx"
            quantize.preprocess_for_quantization(fp32_path, pre)
            variant = quantize.quantize_int8_static(pre, q_path, fixed_latents(512, spec.latent_dim, seed=99), "minmax")
        replace_metadata(variant, read_metadata(proto))
        set_metadata(variant, "generate", spec.name, precision, latent_dim=str(spec.latent_dim))

        def variant_gate(tmp_path: Path) -> None:
            facts["psnr_db"] = round(psnr(fp32_images, run_onnx(tmp_path, z)), 2)
            if facts["psnr_db"] < min_psnr:
                raise ExportError(f"{precision} generator loses the pictures: PSNR {facts['psnr_db']:.1f} dB "
                                  f"vs fp32 < {min_psnr:g} dB; not written")

        write_model(variant, out, variant_gate)
    return Exported(out, precision, f"wrote {out} ({precision}, {_size(out)}); PSNR vs fp32 on {len(z)} latents: "
                                    f"{facts['psnr_db']:.1f} dB", facts)


# ----------------------------------------------------------------------------- the export command

def export_model(model: str, precision: str = "fp32", weights: str | os.PathLike | None = None,
                 out: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                 preprocess: str | None = None, quantize: QuantizeOptions | None = None, radius: float = 0.5,
                 keep: float = 0.5, size: list[int] | tuple[int, ...] | None = None, form: str = "matmul",
                 tta: bool = False, log: Log = print, progress=None) -> Exported:
    """What `toolkit export` does: validate the request, then dispatch on the model's task.
    `quantize`: how fp16 and int8 variants are made (its precision is `precision`'s)."""
    quantize = quantize or QuantizeOptions()
    target = quantize.target
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision} (choose from {', '.join(PRECISIONS)})")
    if target not in TARGETS:
        raise ExportError(f"unknown target {target} (choose from {', '.join(TARGETS)})")
    if target != "cpu" and precision != "int8":
        raise ExportError(f"--target {target} applies to int8 classifiers only")
    if model in TRANSFORM_MODELS:
        from toolkit.edge.spectral.transforms import export_transform
        if precision != "fp32" or tta or preprocess:
            raise ExportError("transforms are exported in fp32, without --tta, --preprocess or --target")
        if size is not None and len(size) != 2:
            raise ExportError("--size takes two values: --size H W")
        params = {"fft-lowpass": {"radius": radius}, "walsh-compress": {"keep": keep}}.get(model, {})
        path = export_transform(model, params, form, (int(size[0]), int(size[1])) if size else (32, 32),
                                Path(out) if out else zoo.MODELS_DIR / f"{model.replace('-', '_')}.onnx")
        return Exported(path, "fp32", f"wrote {path} ({_size(path)}); matches the float64 reference "
                                      f"(transform {model}, {form} form)")
    spec = _spec(model)
    if size is not None:
        raise ExportError(f"--size applies to transforms and --module; {model} takes {spec.input_size[0]}x"
                          f"{spec.input_size[1]} images")
    weights = Path(weights) if weights else spec.weights_path
    if not weights.is_file():
        raise ExportError(f"{weights}: weights not found (train first, or pass --weights)")
    if spec.task == "generate":
        if preprocess or tta or target != "cpu":
            raise ExportError("--preprocess, --tta and --target apply to classifiers only")
        return export_generator(out or default_output(spec, precision, weights=weights), weights, precision, log=log)
    if preprocess and precision != "fp32":
        raise ExportError("--preprocess applies to the fp32 classifier only")
    path = Path(out) if out else default_output(spec, precision, preprocess, tta, target, weights)
    if precision == "fp32":
        return export_classifier(path, weights, data, preprocess, log=log, model=spec.name, tta=tta)
    return export_classifier_variant(path, replace(quantize, precision=precision), weights, data, log, progress,
                                     model=spec.name, tta=tta)
