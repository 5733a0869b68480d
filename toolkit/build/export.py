"""torch → ONNX under the artifact contract (GUIDE §1), with a parity gate.

Every file written here is a single self-describing ONNX file: opset ≥ 17, no external data,
`toolkit.*` metadata, checked with `onnx.checker.check_model(full_check=True)`, written to a
temp file in the target folder and renamed only after every check has passed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from toolkit import __version__

OPSET = 18


class ExportError(RuntimeError):
    """Export or its parity gate failed; nothing was written at the output path."""


# ----------------------------------------------------------------------------- contract helpers

def set_metadata(proto: onnx.ModelProto, task: str, model: str, precision: str, **extra: str) -> onnx.ModelProto:
    meta = {"toolkit.task": task, "toolkit.model": model, "toolkit.precision": precision,
            "toolkit.version": __version__}
    meta.update({f"toolkit.{k}": (v if isinstance(v, str) else json.dumps(v)) for k, v in extra.items()})
    return replace_metadata(proto, {**read_metadata(proto), **meta})


def replace_metadata(proto: onnx.ModelProto, meta: dict[str, str]) -> onnx.ModelProto:
    """Make `meta` the model's whole metadata (a converted variant takes its source's metadata)."""
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    return proto


def read_metadata(proto_or_path) -> dict[str, str]:
    proto = proto_or_path if isinstance(proto_or_path, onnx.ModelProto) else onnx.load(str(proto_or_path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def prune_opsets(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop opset imports no node uses (graph optimisers add a list of them)."""
    used = {n.domain or "" for n in proto.graph.node} | {""}
    keep = [o for o in proto.opset_import if (o.domain or "") in used or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return proto


def check_contract(proto: onnx.ModelProto) -> None:
    """The checks every toolkit ONNX file must pass (raises ExportError)."""
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 17:
        raise ExportError(f"opset {opset} < 17")
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ExportError(f"initializer {t.name} uses external data")
    meta = read_metadata(proto)
    for key in ("toolkit.task", "toolkit.model", "toolkit.precision", "toolkit.version"):
        if key not in meta:
            raise ExportError(f"metadata {key} missing")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"onnx checker: {str(exc).splitlines()[0]}") from None


def write_model(proto: onnx.ModelProto, path: str | os.PathLike, gate=None) -> Path:
    """Check `proto`, write it to a temp file beside `path`, run `gate(temp_path)` (which raises
    on failure) and only then rename it into place. On any failure no file is left at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prune_opsets(proto)
    check_contract(proto)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        if gate is not None:
            gate(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def torch_to_onnx(module, example_inputs: tuple, input_names: list[str], output_names: list[str],
                  dynamic_batch: bool = True, dynamic_dims: dict | None = None) -> onnx.ModelProto:
    """Export with the dynamo exporter (it lowers torch.fft to ONNX DFT; the old one cannot)."""
    import torch

    # The exporter logs about optional torchvision ops and deprecated pytree types; not the user's concern.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("torch._export").setLevel(logging.ERROR)
    dynamic_shapes = None
    if dynamic_batch or dynamic_dims:
        batch = torch.export.Dim("N")
        shapes = []
        for name in input_names:
            dims = {0: batch} if dynamic_batch else {}
            dims.update((dynamic_dims or {}).get(name, {}))
            shapes.append(dims)
        # Positional, not keyed by name: the module's forward() argument may be called anything
        # (nn.Sequential's is `input`), while input_names is what the ONNX graph shows.
        dynamic_shapes = tuple(shapes)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, example_inputs, dynamo=True, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes,
                                    opset_version=OPSET, external_data=False, verbose=False, optimize=True)
    proto = program.model_proto
    proto.producer_name = "toolkit"
    proto.producer_version = __version__
    return proto


# ----------------------------------------------------------------------------- parity

@dataclass
class Parity:
    n: int
    max_abs_diff: float
    top1_agreement: float | None = None

    def describe(self) -> str:
        s = f"parity on {self.n} inputs: max |Δ| {self.max_abs_diff:.2e}"
        if self.top1_agreement is not None:
            s += f", top-1 agreement {self.top1_agreement:.2%}"
        return s


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, classify: bool) -> Parity:
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)))) if reference.size else 0.0
    agree = float(np.mean(reference.argmax(1) == candidate.argmax(1))) if classify else None
    return Parity(n=len(reference), max_abs_diff=diff, top1_agreement=agree)


def run_onnx(path, feed: np.ndarray, batch_size: int = 256) -> np.ndarray:
    from toolkit.core.sessions import open_model
    model = open_model(path, "cpu")
    return np.concatenate([model.run(feed[i:i + batch_size]) for i in range(0, len(feed), batch_size)])


# ----------------------------------------------------------------------------- classifier

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "cifar10-jpeg" / "train"
FP32_TOLERANCE = 1e-3     # max |Δlogit| between PyTorch and onnxruntime fp32


def validation_images(data: str | os.PathLike | None, n: int, size=(32, 32), log=print) -> np.ndarray:
    """`n` real validation images (the fixed split) for parity checks and calibration-free
    comparisons. Without data, random images are used, and the user is told so."""
    from toolkit.core.data import read_split
    root = Path(data) if data else DEFAULT_DATA
    if root.exists():
        return read_split(root, "val", size, limit=n).images
    if data:
        raise ExportError(f"{root}: parity data not found")
    log(f"warning: {root} not found; parity is measured on {n} random images, not real ones (pass --data)")
    return np.random.default_rng(0).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def classifier_module(weights: str | os.PathLike | None = None, preprocess: str | None = None):
    """The contract form of the shipped CNN in torch: uint8 NHWC → logits, eval mode.
    With `preprocess` ('fft-lowpass:0.5', 'walsh-compress:0.5') the transform runs first."""
    import torch

    from toolkit import zoo
    from toolkit.build.nets.layers import Classifier
    from toolkit.build.checkpoint import load_weights

    spec = zoo.CIFAR_CNN
    net = spec.build()
    if weights is not None:
        load_weights(net, weights)
    model = Classifier(net, spec.mean, spec.std)
    if preprocess:
        from toolkit.core.transforms import parse_preprocess, transform_module
        op, params = parse_preprocess(preprocess)
        model = torch.nn.Sequential(transform_module(op, params, "matmul", spec.input_size), model)
    return model.eval()


def torch_logits(module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    import torch
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(images[i:i + batch_size])).numpy()
                               for i in range(0, len(images), batch_size)])


def export_classifier(out: str | os.PathLike, weights: str | os.PathLike | None = None,
                      data: str | os.PathLike | None = None, preprocess: str | None = None,
                      parity_images: int = 256, log=print) -> Parity:
    """Export the CIFAR CNN (fp32) under the classifier contract, gated on PyTorch/onnxruntime
    parity over real validation images: top-1 agreement must be 100% and max |Δlogit| ≤ 1e-3."""
    import torch

    from toolkit import zoo

    spec = zoo.CIFAR_CNN
    out = Path(out)
    module = classifier_module(weights, preprocess)
    example = torch.zeros((2, *spec.input_size, 3), dtype=torch.uint8)
    proto = torch_to_onnx(module, (example,), ["image"], ["logits"])
    extra = {"labels": spec.labels}
    if preprocess:
        extra["preprocess"] = preprocess
    set_metadata(proto, "classify", spec.name, "fp32", **extra)
    images = validation_images(data, parity_images, spec.input_size, log)
    reference = torch_logits(module, images)
    result: list[Parity] = []
    write_model(proto, out, _logit_gate(reference, images, 1.0, FP32_TOLERANCE, result, "PyTorch"))
    log(f"fp32 export {'passed' if out.name.startswith('.') else f'wrote {out}'}; {result[0].describe()} vs PyTorch")
    return result[0]


# ----------------------------------------------------------------------------- precisions

FP16_MIN_AGREEMENT, FP16_MAX_DIFF = 0.99, 0.1      # fp16 vs fp32 logits
INT8_MIN_AGREEMENT = 0.97                          # int8 vs fp32 top-1
GENERATOR_MAX_PIXEL_DIFF = 1                       # fp32 generator: PyTorch vs onnxruntime


def _logit_gate(reference: np.ndarray, images: np.ndarray, min_agreement: float, max_diff: float | None,
                result: list, against: str = "fp32"):
    """A write_model gate: the candidate's logits on `images` against `reference` logits."""
    def gate(tmp_path):
        parity = compare_outputs(reference, run_onnx(tmp_path, images), classify=True)
        result.append(parity)
        if parity.top1_agreement < min_agreement or (max_diff is not None and parity.max_abs_diff > max_diff):
            limit = f"≥ {min_agreement:.0%} agreement" + (f" and ≤ {max_diff:g}" if max_diff is not None else "")
            raise ExportError(f"parity gate failed against {against}: {parity.describe()} (need {limit})")
    return gate


def export_classifier_variant(out: Path, precision: str, weights, data, calibration_images: int,
                              calibration_method: str, max_drop: float, dynamic: bool, log=print,
                              progress=None) -> dict:
    """fp16 or int8 classifier: export fp32 (gated against PyTorch) to a temp file, convert, gate
    against fp32 on ≥ 1,000 validation images and, for int8, hold the accuracy guard."""
    from toolkit import zoo
    from toolkit.core import quantize
    from toolkit.core.data import read_split

    spec = zoo.CIFAR_CNN
    out = Path(out)
    fp32_tmp = out.with_name(f".{out.stem}.fp32.{os.getpid()}.onnx")
    try:
        export_classifier(fp32_tmp, weights, data, log=log)
        fp32 = onnx.load(str(fp32_tmp))
        meta = read_metadata(fp32)
        root = Path(data) if data else DEFAULT_DATA
        if not root.exists():
            raise ExportError(f"{root}: {precision} needs real validation images (pass --data)")
        val = read_split(root, "val", spec.input_size)
        labels_idx = np.asarray([spec.labels.index(c) for c in val.class_names])[val.labels]
        parity_set = val.images[np.linspace(0, len(val) - 1, min(len(val), 1000)).astype(int)]
        reference = run_onnx(fp32_tmp, parity_set)
        parity: list[Parity] = []
        info: dict = {"precision": precision}
        if precision == "fp16":
            proto = quantize.convert_fp16(fp32)
            gate = _logit_gate(reference, parity_set, FP16_MIN_AGREEMENT, FP16_MAX_DIFF, parity)
        elif precision == "int8":
            if dynamic:
                quantize.refuse_dynamic(fp32)
            calibration = read_split(root, "train", spec.input_size, limit=calibration_images).images
            proto, guard = quantize.quantize_int8(fp32_tmp, out.with_name(f".{out.stem}.q.{os.getpid()}.onnx"),
                                                  calibration, val.images, labels_idx, calibration_method,
                                                  max_drop, log=log, progress=progress)
            meta["toolkit.calibration"] = json_dumps({"method": calibration_method, "images": len(calibration),
                                              "excluded_nodes": guard.excluded})
            info.update(fp32_accuracy=guard.fp32_accuracy, int8_accuracy=guard.int8_accuracy,
                        excluded=guard.excluded)
            gate = _logit_gate(reference, parity_set, INT8_MIN_AGREEMENT, None, parity)
        else:
            raise ExportError(f"unknown precision {precision!r} (fp32, fp16, int8)")
        replace_metadata(proto, meta)
        set_metadata(proto, "classify", spec.name, precision)
        write_model(proto, out, gate)
        log(f"wrote {out} ({os.path.getsize(out) / 1e6:.2f} MB); {parity[0].describe()} vs fp32")
        info["parity"] = parity[0].__dict__
        return info
    finally:
        fp32_tmp.unlink(missing_ok=True)
        out.with_name(f".{out.stem}.q.{os.getpid()}.onnx").unlink(missing_ok=True)


def json_dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ----------------------------------------------------------------------------- generator

def generator_module(weights: str | os.PathLike | None = None):
    """The contract form of the shipped DCGAN generator in torch: z → uint8 NHWC, eval mode."""
    from toolkit import zoo
    from toolkit.build.nets.layers import ImageGenerator
    from toolkit.build.checkpoint import load_weights

    g = zoo.DCGAN.build()
    if weights is not None:
        load_weights(g, weights)
    return ImageGenerator(g).eval()


def fixed_latents(n: int = 256, latent_dim: int = 100, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def export_generator(out: str | os.PathLike, weights=None, precision: str = "fp32", min_psnr: float = 30.0,
                     log=print) -> dict:
    """Export the DCGAN generator. fp32 is gated on PyTorch parity (max pixel difference ≤ 1 on
    fixed latents); fp16 / int8 variants are gated on PSNR against fp32 on the same latents."""
    import torch

    from toolkit import zoo
    from toolkit.core import quantize

    spec = zoo.DCGAN
    out = Path(out)
    module = generator_module(weights)
    z = fixed_latents(256, spec.latent_dim)
    with torch.no_grad():
        reference = module(torch.from_numpy(z)).numpy()
    proto = torch_to_onnx(module, (torch.from_numpy(z[:2]),), ["z"], ["image"])
    set_metadata(proto, "generate", spec.name, "fp32", latent_dim=str(spec.latent_dim))
    info: dict = {"precision": precision}

    def fp32_gate(tmp_path):
        diff = int(np.max(np.abs(run_onnx(tmp_path, z).astype(np.int16) - reference.astype(np.int16))))
        info["max_pixel_diff"] = diff
        if diff > GENERATOR_MAX_PIXEL_DIFF:
            raise ExportError(f"parity gate failed: max pixel difference {diff} > {GENERATOR_MAX_PIXEL_DIFF}")

    if precision == "fp32":
        write_model(proto, out, fp32_gate)
        log(f"wrote {out}; parity on {len(z)} latents: max pixel difference {info['max_pixel_diff']}")
        return info

    fp32_tmp = out.with_name(f".{out.stem}.fp32.{os.getpid()}.onnx")
    q_tmp = out.with_name(f".{out.stem}.q.{os.getpid()}.onnx")
    try:
        write_model(proto, fp32_tmp, fp32_gate)
        fp32_images = run_onnx(fp32_tmp, z)
        if precision == "fp16":
            variant = quantize.convert_fp16(onnx.load(str(fp32_tmp)))
        elif precision == "int8":
            with tempfile.TemporaryDirectory() as tmp:
                pre = Path(tmp) / "pre.onnx"
                quantize.preprocess_for_quantization(fp32_tmp, pre)
                calibration = fixed_latents(512, spec.latent_dim, seed=99)
                variant = quantize.quantize_int8_static(pre, q_tmp, calibration, "minmax")
        else:
            raise ExportError(f"unknown precision {precision!r} (fp32, fp16, int8)")
        replace_metadata(variant, read_metadata(proto))
        set_metadata(variant, "generate", spec.name, precision, latent_dim=str(spec.latent_dim))

        def variant_gate(tmp_path):
            info["psnr_db"] = round(psnr(fp32_images, run_onnx(tmp_path, z)), 2)
            if info["psnr_db"] < min_psnr:
                raise ExportError(f"{precision} generator loses the pictures: PSNR {info['psnr_db']:.1f} dB "
                                  f"vs fp32 < {min_psnr:g} dB; not written")

        write_model(variant, out, variant_gate)
        log(f"wrote {out}; PSNR vs fp32 on {len(z)} latents: {info['psnr_db']:.1f} dB")
        return info
    finally:
        fp32_tmp.unlink(missing_ok=True)
        q_tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the export command

TRANSFORM_MODELS = ("fft-lowpass", "fft-spectrum", "walsh-compress")


def export_model(model: str, precision: str = "fp32", weights=None, out=None, data=None, preprocess=None,
                 calibration_images: int = 500, calibration_method: str = "minmax", max_drop: float = 0.5,
                 dynamic: bool = False, radius: float = 0.5, keep: float = 0.5, size=None, form: str = "matmul",
                 log=print, progress=None):
    """What `toolkit export` does: dispatch on the model's task."""
    from toolkit import zoo

    if model in TRANSFORM_MODELS:
        from toolkit.core.transforms import export_transform
        if precision != "fp32":
            raise ExportError("transforms are exported in fp32")
        if size is not None and len(size) != 2:
            raise ExportError("--size takes two values: --size H --size W")
        params = {"fft-lowpass": {"radius": radius}, "walsh-compress": {"keep": keep}}.get(model, {})
        out = out or zoo.MODELS_DIR / f"{model.replace('-', '_')}.onnx"
        return export_transform(model, params, form, tuple(size) if size else (32, 32), out)
    spec = zoo.get(model)
    weights = Path(weights) if weights else spec.weights_path
    if not weights.is_file():
        raise ExportError(f"{weights}: weights not found (train first, or pass --weights)")
    if preprocess and (spec.task != "classify" or precision != "fp32"):
        raise ExportError("--preprocess applies to the fp32 classifier only")
    if spec.task == "generate":
        return export_generator(out or spec.onnx_path(precision), weights, precision, log=log)
    if precision == "fp32":
        default = spec.onnx_path() if not preprocess else \
            zoo.MODELS_DIR / f"{spec.file_stem}.{preprocess.split(':')[0].replace('-', '_')}.onnx"
        return export_classifier(out or default, weights, data, preprocess, log=log)
    return export_classifier_variant(out or spec.onnx_path(precision), precision, weights, data,
                                     calibration_images, calibration_method, max_drop, dynamic, log, progress)


# ----------------------------------------------------------------------------- info

def describe_model(path: str | os.PathLike):
    """A rich renderable describing an ONNX file: I/O, metadata, opset, op counts, size."""
    from collections import Counter

    from rich.console import Group
    from rich.table import Table

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ValueError(f"{path}: not an ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None

    def shape(value_info) -> str:
        t = value_info.type.tensor_type
        dims = [d.dim_param or str(d.dim_value) if (d.dim_param or d.HasField("dim_value")) else "?" for d in t.shape.dim]
        return f"{onnx.TensorProto.DataType.Name(t.elem_type).lower()} [{', '.join(dims)}]"

    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import)
    io = Table(title=f"{path.name} — {path.stat().st_size / 1e6:.2f} MB, opset {opsets}")
    io.add_column("")
    io.add_column("name")
    io.add_column("type and shape")
    for kind, values in (("input", proto.graph.input), ("output", proto.graph.output)):
        for v in values:
            io.add_row(kind, v.name, shape(v))
    meta = Table(title="metadata")
    meta.add_column("key")
    meta.add_column("value", overflow="fold")
    for p in proto.metadata_props:
        meta.add_row(p.key, p.value)
    ops = Table(title=f"ops ({len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers)")
    ops.add_column("op type")
    ops.add_column("count", justify="right")
    for op, count in sorted(Counter(n.op_type for n in proto.graph.node).items(), key=lambda t: (-t[1], t[0])):
        ops.add_row(op, str(count))
    return Group(io, meta, ops)
