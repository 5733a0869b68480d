"""The transform stage: FFT low-pass, FFT spectrum and Walsh–Hadamard compression of images.

    toolkit transform photo.jpg --op fft-lowpass --radius 0.3 --out out/ --compare
    toolkit transform a.png b.png --op walsh-compress --keep 0.25 --out out/
    toolkit transform photo.jpg --op fft-spectrum --out spectrum.png

This module holds
- the float64 numpy reference of each op, exactly as GUIDE §1 defines it (tests and the export
  parity gate compare against it);
- `transform_module` (the torch module, for fusing a transform in front of a classifier) and
  `export_transform` (a transform ONNX file under the artifact contract);
- `run_transform`, what the CLI calls: it runs the ONNX form of an op on image files of any
  size. A matmul-form graph is built for each image size on first use and cached under
  $TOOLKIT_CACHE/transforms (default ~/.cache/toolkit/transforms); building needs torch,
  running does not, and nothing at module level imports it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

OPS = {"fft-lowpass": "radius", "fft-spectrum": None, "walsh-compress": "keep"}   # op → its parameter
PREPROCESS_OPS = ("fft-lowpass", "walsh-compress")    # the ops that map an image to an image
FORMS = ("dft", "matmul")
INPUT_NAME = "image"
# ONNX names are single-assignment, so the output cannot share the input's name.
OUTPUT_NAME = "transformed"


class TransformError(ValueError):
    """A transform request that cannot be carried out; the message is one line for the user."""


# ----------------------------------------------------------------------------- definitions (float64)

def lowpass_mask(height: int, width: int, radius: float, onesided: bool = True) -> np.ndarray:
    """Bins kept by fft-lowpass: sqrt(fy² + fx²) ≤ radius · 0.5 cycles per pixel.

    Bool [H, W//2 + 1] in rfft2 layout, or [H, W] in fft2 layout with onesided=False."""
    fy = np.fft.fftfreq(height)
    fx = np.fft.rfftfreq(width) if onesided else np.fft.fftfreq(width)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) <= radius * 0.5


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def sequency_hadamard(n: int) -> np.ndarray:
    """The n×n Sylvester Hadamard matrix, rows sorted by sequency (sign changes), divided by √n.

    Orthonormal: S · Sᵀ = I. Row k changes sign exactly k times."""
    if not is_power_of_two(n):
        raise ValueError(f"the Walsh–Hadamard transform needs a power-of-two size, got {n}")
    h = np.ones((1, 1))
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    sign_changes = np.count_nonzero(np.diff(h, axis=1), axis=1)
    return h[np.argsort(sign_changes, kind="stable")] / np.sqrt(n)


def walsh_keep(n: int, keep: float) -> int:
    """How many sequencies walsh-compress keeps along an axis of length n: ceil(keep · n)."""
    return math.ceil(keep * n)


def _unit(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] images, got {images.dtype} {list(images.shape)}")
    return images.astype(np.float64) / 255.0


def _quantize(y: np.ndarray) -> np.ndarray:
    return np.round(np.clip(255.0 * y, 0.0, 255.0)).astype(np.uint8)


def reference_lowpass(images: np.ndarray, radius: float) -> np.ndarray:
    """fft-lowpass on uint8 [N, H, W, 3] → uint8, in float64."""
    x = _unit(images)
    h, w = x.shape[1:3]
    spectrum = np.fft.rfft2(x, axes=(1, 2), norm="ortho")
    mask = lowpass_mask(h, w, radius)[None, :, :, None]
    return _quantize(np.fft.irfft2(spectrum * mask, s=(h, w), axes=(1, 2), norm="ortho"))


def reference_spectrum(images: np.ndarray) -> np.ndarray:
    """fft-spectrum on uint8 [N, H, W, 3] → float64 log1p(|fftshift(fft2)|)."""
    spectrum = np.fft.fft2(_unit(images), axes=(1, 2), norm="ortho")
    return np.log1p(np.abs(np.fft.fftshift(spectrum, axes=(1, 2))))


def reference_walsh(x: np.ndarray) -> np.ndarray:
    """Forward 2-D sequency-ordered Walsh–Hadamard transform over axes (1, 2) of [N, H, W, C]."""
    s_h, s_w = sequency_hadamard(x.shape[1]), sequency_hadamard(x.shape[2])
    return np.einsum("ha,nawc,bw->nhbc", s_h, x, s_w)


def reference_inverse_walsh(y: np.ndarray) -> np.ndarray:
    s_h, s_w = sequency_hadamard(y.shape[1]), sequency_hadamard(y.shape[2])
    return np.einsum("ha,nhbc,bw->nawc", s_h, y, s_w)


def reference_walsh_compress(images: np.ndarray, keep: float) -> np.ndarray:
    """walsh-compress on uint8 [N, H, W, 3] → uint8, in float64."""
    coefficients = reference_walsh(_unit(images))
    h, w = coefficients.shape[1:3]
    kept = np.zeros_like(coefficients)
    kh, kw = walsh_keep(h, keep), walsh_keep(w, keep)
    kept[:, :kh, :kw] = coefficients[:, :kh, :kw]
    return _quantize(reference_inverse_walsh(kept))


def reference(op: str, params: dict, images: np.ndarray) -> np.ndarray:
    """The float64 reference of any op."""
    if op == "fft-lowpass":
        return reference_lowpass(images, params["radius"])
    if op == "fft-spectrum":
        return reference_spectrum(images)
    if op == "walsh-compress":
        return reference_walsh_compress(images, params["keep"])
    raise ValueError(f"unknown op {op!r}")


# ----------------------------------------------------------------------------- parameters

def check_op(op: str, params: dict, form: str = "matmul", size: tuple[int, int] | None = None) -> dict:
    """Validate an op request; returns the params normalised to floats. Raises TransformError."""
    if op not in OPS:
        raise TransformError(f"unknown op {op!r} (choose from {', '.join(OPS)})")
    if form not in FORMS:
        raise TransformError(f"unknown form {form!r} (choose from {', '.join(FORMS)})")
    name = OPS[op]
    expected = {name} if name else set()
    if set(params) != expected:
        wanted = f"'{name}'" if name else "no parameters"
        raise TransformError(f"{op} takes {wanted}, got {sorted(params) or 'none'}")
    if name:
        value = float(params[name])
        if not 0.0 < value <= 1.0:
            raise TransformError(f"{op}: {name} must be in (0, 1], got {params[name]}")
        params = {name: value}
    if op == "walsh-compress" and form != "matmul":
        raise TransformError("walsh-compress has only the matmul form")
    if size is not None:
        h, w = size
        if h < 1 or w < 1:
            raise TransformError(f"size must be positive, got {h}×{w}")
        if op == "walsh-compress" and not (is_power_of_two(h) and is_power_of_two(w)):
            raise TransformError(f"walsh-compress needs a power-of-two height and width, got {h}×{w}")
    return params


def parse_preprocess(spec: str) -> tuple[str, dict]:
    """'fft-lowpass:0.5' → ('fft-lowpass', {'radius': 0.5}); 'walsh-compress:0.5' → (…, {'keep': 0.5}).

    Only the ops that map an image to an image qualify: they go in front of a classifier."""
    op, sep, value = spec.partition(":")
    if op not in PREPROCESS_OPS or not sep:
        raise ValueError(f"--preprocess expects fft-lowpass:RADIUS or walsh-compress:KEEP, got {spec!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"--preprocess {spec!r}: {value!r} is not a number") from None
    try:
        return op, check_op(op, {OPS[op]: number})
    except TransformError as exc:
        raise ValueError(f"--preprocess {spec!r}: {exc}") from None


def describe(op: str, params: dict) -> str:
    return op + "".join(f" {k}={v:g}" for k, v in sorted(params.items()))


# ----------------------------------------------------------------------------- torch module and export

def transform_module(op: str, params: dict, form: str = "matmul", size: tuple[int, int] | None = None):
    """The torch module of an op: uint8 [N, H, W, 3] → uint8 [N, H, W, 3] (fft-spectrum: float32).

    form 'matmul' is built for `size` = (H, W); form 'dft' takes any size (`size` is ignored).
    Fusion in front of a classifier: nn.Sequential(transform_module(...), classifier)."""
    from toolkit.build.nets import spectral

    params = check_op(op, params, form, size)
    if op == "fft-lowpass":
        return spectral.FFTLowpass(params["radius"], form, size)
    if op == "fft-spectrum":
        return spectral.FFTSpectrum(form, size)
    return spectral.WalshCompress(params["keep"], size)


def parity_images(size: tuple[int, int], n: int = 4, seed: int = 0) -> np.ndarray:
    """Test images for the parity gate: uniform noise (every frequency present) plus smooth
    ramps that push the output against 0 and 255, where the clip matters."""
    rng = np.random.default_rng(seed)
    h, w = size
    noise = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, h * w * 3).reshape(1, h, w, 3)
    ramps = np.concatenate([ramp, 255 - ramp]).round().astype(np.uint8)
    return np.concatenate([noise, ramps])


def parity_error(op: str, params: dict, output: np.ndarray, images: np.ndarray) -> float:
    """The gate's measure: max grey-level difference for image ops; for the spectrum the max of
    |Δ| / max(|ref|, 1): relative error, turning absolute below 1 (the log-magnitude of a
    full-scale bin), since a float32 transform cannot resolve bins near zero relatively."""
    expected = reference(op, params, images)
    diff = np.abs(output.astype(np.float64) - expected.astype(np.float64))
    if op == "fft-spectrum":
        return float(np.max(diff / np.maximum(np.abs(expected), 1.0)))
    return float(np.max(diff))


PARITY_LIMIT = {"fft-lowpass": 1.0, "walsh-compress": 1.0, "fft-spectrum": 1e-4}


def export_transform(op: str, params: dict, form: str, size: tuple[int, int], out: str | os.PathLike) -> Path:
    """Write the ONNX file of an op under the transform contract and gate it against the
    float64 reference (≤ 1 grey level; spectrum ≤ 1e-4 relative). Raises TransformError for a
    bad request, toolkit.build.export.ExportError when the gate fails (no file is left at `out`).

    form 'matmul': input uint8 [N, H, W, 3] with H×W = `size`, no DFT node.
    form 'dft': input uint8 [N, H, W, 3] with any H, W; `size` is the size it is exported and
    gated at (it is also gated at a second, non-square size)."""
    import torch

    from toolkit.build.export import ExportError, run_onnx, set_metadata, torch_to_onnx, write_model

    size = (int(size[0]), int(size[1]))
    params = check_op(op, params, form, size)
    module = transform_module(op, params, form, size)
    example = torch.from_numpy(parity_images(size, n=2))
    dynamic_dims = None
    if form == "dft":
        dynamic_dims = {INPUT_NAME: {1: torch.export.Dim("H", min=2), 2: torch.export.Dim("W", min=2)}}
    proto = torch_to_onnx(module, (example,), [INPUT_NAME], [OUTPUT_NAME], dynamic_dims=dynamic_dims)
    set_metadata(proto, task="transform", model=op, precision="fp32", op=op,
                 params=json.dumps(params, sort_keys=True), form=form,
                 size="any" if form == "dft" else f"{size[0]}x{size[1]}")

    gate_sizes = [size] if form == "matmul" else [size, (size[0] + 3, size[1] + 6)]

    def gate(path: Path) -> None:
        for gate_size in gate_sizes:
            images = parity_images(gate_size)
            error = parity_error(op, params, run_onnx(path, images), images)
            if not error <= PARITY_LIMIT[op]:
                raise ExportError(f"{describe(op, params)} ({form}) differs from the float64 reference "
                                  f"by {error:.3g} at {gate_size[0]}×{gate_size[1]} (limit {PARITY_LIMIT[op]:g})")

    return write_model(proto, out, gate=gate)


# ----------------------------------------------------------------------------- running on files

def cache_dir() -> Path:
    root = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
    return Path(root) / "transforms"


def cached_transform(op: str, params: dict, form: str, size: tuple[int, int]) -> Path:
    """The ONNX file for an op, built and gated on first use. The dft form serves every size."""
    from toolkit import __version__

    params = check_op(op, params, form, size)
    shape = "any" if form == "dft" else f"{size[0]}x{size[1]}"
    values = "".join(f"_{k}{v:g}" for k, v in sorted(params.items()))
    path = cache_dir() / f"{op}{values}_{form}_{shape}_v{__version__}.onnx"
    if not path.is_file():
        try:
            export_transform(op, params, form, size, path)
        except ImportError:
            raise TransformError(f"building the {form} form of {op} for {shape} needs PyTorch, "
                                 "which is not installed here") from None
    return path


def default_form(op: str, provider: str) -> str:
    """DFT on CPU for the Fourier ops (one graph for every size, O(n log n)); MatMul elsewhere,
    since onnxruntime has no GPU kernel for DFT and TensorRT rejects it."""
    return "dft" if op != "walsh-compress" and provider == "cpu" else "matmul"


SPECTRUM_DECADES = 4.0


def spectrum_picture(spectrum: np.ndarray) -> np.ndarray:
    """fft-spectrum output float [H, W, 3] → a viewable uint8 picture.

    log1p keeps the weak bins of an ortho-normalised spectrum nearly linear (they are ≪ 1), so
    the picture would be one bright dot; instead it shows log10 |X| over the four decades
    below the peak (80 dB), normalised to 0…255 over all channels."""
    magnitude = np.expm1(spectrum.astype(np.float64))
    decades = np.log10(np.maximum(magnitude, 1e-30))
    top = float(decades.max())
    scaled = np.clip((decades - (top - SPECTRUM_DECADES)) / SPECTRUM_DECADES, 0.0, 1.0)
    return np.round(scaled * 255.0).astype(np.uint8)


@dataclass
class Written:
    """One transformed image: where it came from and the files written for it."""
    source: Path
    output: Path
    compare: Path | None = None


def output_paths(sources: list[Path], out: Path) -> list[Path]:
    """One input and an image-file name: that file. Otherwise `out` is a folder receiving
    <stem>.png (PNG: lossless, so the result is not re-compressed), de-duplicated by a counter."""
    from toolkit.core.data import is_image_name

    if len(sources) == 1 and is_image_name(out) and not out.is_dir():
        return [out]
    if is_image_name(out) and not out.is_dir():
        raise TransformError(f"--out {out} names one file, but {len(sources)} images were given; "
                             "give a folder")
    taken: set[str] = set()
    paths = []
    for source in sources:
        name, n = f"{source.stem}.png", 1
        while name in taken:
            n += 1
            name = f"{source.stem}-{n}.png"
        taken.add(name)
        paths.append(out / name)
    return paths


def run_transform(inputs: list[str | os.PathLike], op: str, params: dict, out: str | os.PathLike,
                  form: str | None = None, compare: bool = False, provider: str = "cpu",
                  on_written: Callable[[Written], None] | None = None,
                  on_error: Callable[[str], None] | None = None) -> int:
    """Transform image files (folders expanded) and write the results; returns how many failed.

    A bad file is reported through `on_error` (one line) and the rest are still processed.
    Raises TransformError for a bad request and runtime.ProviderError / ModelError when the
    provider cannot run the graph."""
    from toolkit.core.data import ImageError, expand_inputs, load_image, make_grid, save_image
    from toolkit.core.sessions import open_model

    form = form or default_form(op, provider)
    params = check_op(op, params, form)
    sources = expand_inputs(list(inputs))
    if not sources:
        raise TransformError("no input images")
    destinations = output_paths(sources, Path(out))
    sessions: dict[Path, object] = {}
    failed = 0
    for source, destination in zip(sources, destinations):
        try:
            image = load_image(source)
            size = image.shape[:2]
            try:
                check_op(op, params, form, size)
            except TransformError as exc:
                raise ImageError(f"{source}: {exc} (crop or resize it first)") from None
            model_path = cached_transform(op, params, form, size)
            if model_path not in sessions:
                sessions[model_path] = open_model(model_path, provider)
            result = sessions[model_path].run(image[None])[0]
            picture = spectrum_picture(result) if op == "fft-spectrum" else result
            save_image(picture, destination)
            written = Written(source, destination)
            if compare:
                written.compare = save_image(make_grid(np.stack([image, picture]), ncols=2),
                                             destination.with_name(f"{destination.stem}.compare.png"))
        except (ImageError, OSError) as exc:
            failed += 1
            if on_error is not None:
                on_error(str(exc) if isinstance(exc, ImageError) else f"{source}: {exc}")
            continue
        if on_written is not None:
            on_written(written)
    return failed
