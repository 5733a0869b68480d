"""The spectral ops in numpy: definitions, parameter rules, basis matrices, float64 references.

A leaf module (numpy and the standard library only): both the ONNX graph builders of the runtime
layer (`toolkit.edge.spectral.graphs`) and the torch modules of the torch layer
(`toolkit.pytorch.nets.spectral`) take their math from here, so the two can never disagree about
what an op is. The definitions (docs/transforms.md), on x = image / 255 per channel:

- fft-lowpass(radius): keep the rfft2 bins with sqrt(fy² + fx²) ≤ radius · 0.5 cycles per pixel.
- fft-spectrum: log1p(|fftshift(fft2(x, norm="ortho"))|), float32.
- walsh-compress(keep): keep the top-left ceil(keep·H) × ceil(keep·W) block of sequency-ordered
  Walsh–Hadamard coefficients (H, W powers of two).
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.edge.options import FORMS

# Each spectral op (toolkit.edge.options.SPECTRAL_OPS) → the name of its one parameter, if it has one.
OP_PARAMETER: dict[str, str | None] = {"fft-lowpass": "radius", "fft-spectrum": None, "walsh-compress": "keep"}
IMAGE_OPS = ("fft-lowpass", "walsh-compress")    # the ops that map an image to an image (`--preprocess`)

# Resource limits, so that the work is bounded by a stated size and not by what a tiny file claims.
# matmul: the constant basis matrices grow with the square of a side (4 bytes · side² each; the
# spectrum holds 2·H² + 2·W² floats), so a side is capped: at 2048 px a graph holds ≤ 64 MiB.
# dft: no constants, but memory and time grow with the pixel count (~0.7 s and ~150 MB for a
# 1000×1000 image on one core), so the area is capped at 4 Mpx.
MAX_MATMUL_SIDE = 2048
MAX_DFT_PIXELS = 4 * 1024 * 1024


class TransformError(ValueError):
    """A transform request that cannot be carried out; the message is one line for the user."""


# ----------------------------------------------------------------------------- parameters

def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def check_size(op: str, form: str, size: tuple[int, int]) -> None:
    """Refuse an image size the op or form cannot take, or that exceeds the stated limits."""
    h, w = size
    if h < 1 or w < 1:
        raise TransformError(f"size must be positive, got {h}×{w}")
    if op == "walsh-compress" and not (is_power_of_two(h) and is_power_of_two(w)):
        raise TransformError(f"walsh-compress needs a power-of-two height and width, got {h}×{w}")
    if form == "matmul" and max(h, w) > MAX_MATMUL_SIDE:
        raise TransformError(f"{h}×{w} is over the matmul form's limit of {MAX_MATMUL_SIDE} px per side")
    if form == "dft" and h * w > MAX_DFT_PIXELS:
        raise TransformError(f"{h}×{w} is over the dft form's limit of {MAX_DFT_PIXELS:,} pixels")


def check_op(op: str, params: dict, form: str = "matmul", size: tuple[int, int] | None = None) -> dict:
    """Validate an op request; returns the params normalised to floats. Raises TransformError."""
    if op not in OP_PARAMETER:
        raise TransformError(f"unknown op {op!r} (choose from {', '.join(OP_PARAMETER)})")
    if form not in FORMS:
        raise TransformError(f"unknown form {form!r} (choose from {', '.join(FORMS)})")
    name = OP_PARAMETER[op]
    expected = {name} if name else set()
    if set(params) != expected:
        wanted = f"'{name}'" if name else "no parameters"
        raise TransformError(f"{op} takes {wanted}, got {sorted(params) or 'none'}")
    if name:
        try:
            value = float(params[name])
        except (TypeError, ValueError):
            raise TransformError(f"{op}: {name} must be a number, got {params[name]!r}") from None
        if not 0.0 < value <= 1.0:
            raise TransformError(f"{op}: {name} must be in (0, 1], got {params[name]}")
        params = {name: value}
    if op == "walsh-compress" and form != "matmul":
        raise TransformError("walsh-compress has only the matmul form")
    if size is not None:
        check_size(op, form, (int(size[0]), int(size[1])))
    return params


def parse_preprocess(spec: str) -> tuple[str, dict]:
    """'fft-lowpass:0.5' → ('fft-lowpass', {'radius': 0.5}); 'walsh-compress:0.5' → (…, {'keep': 0.5}).

    Only the ops that map an image to an image qualify: they go in front of a classifier."""
    op, sep, value = spec.partition(":")
    if op not in IMAGE_OPS or not sep:
        raise ValueError(f"--preprocess expects fft-lowpass:RADIUS or walsh-compress:KEEP, got {spec!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"--preprocess {spec!r}: {value!r} is not a number") from None
    name = OP_PARAMETER[op]
    assert name is not None
    try:
        return op, check_op(op, {name: number})
    except TransformError as exc:
        raise ValueError(f"--preprocess {spec!r}: {exc}") from None


def describe(op: str, params: dict) -> str:
    return op + "".join(f" {k}={v:g}" for k, v in sorted(params.items()))


# ----------------------------------------------------------------------------- masks and bases (float64)

def lowpass_threshold(radius: float) -> float:
    """The cut-off in cycles per pixel, as the float64 rule computes it. A graph must compare
    against exactly this double: rounded to float32 (0.3 · 0.5 → 0.15000001) it keeps bins that
    lie on the circle, such as 6/40 on a 40-pixel side, which the rule drops."""
    return float(radius) * 0.5


def lowpass_mask(height: int, width: int, radius: float, onesided: bool = True) -> np.ndarray:
    """Bins kept by fft-lowpass: sqrt(fy² + fx²) ≤ radius · 0.5 cycles per pixel.

    Bool [H, W//2 + 1] in rfft2 layout, or [H, W] in fft2 layout with onesided=False."""
    fy = np.fft.fftfreq(height)
    fx = np.fft.rfftfreq(width) if onesided else np.fft.fftfreq(width)
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) <= lowpass_threshold(radius)


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


def walsh_projection(n: int, keep: float) -> np.ndarray:
    """P_n = S_nᵀ · diag(1 for the first ceil(keep·n) sequencies) · S_n, symmetric, float64.

    The kept block is a row range times a column range, so transform → zero → inverse equals
    one projection per axis: y = P_H · x · P_W."""
    kept = sequency_hadamard(n)[: walsh_keep(n, keep)]
    return kept.T @ kept


def hartley_matrix(n: int) -> np.ndarray:
    """The orthonormal discrete Hartley basis cas(2πjk/n)/√n (float64, symmetric, its own inverse).

    It diagonalises the low-pass exactly like the DFT does, because the mask depends only on fy²
    and fx² (it is even in each frequency): y = K_H (mask ⊙ (K_H x K_W)) K_W, all real."""
    angle = 2.0 * np.pi * (np.outer(np.arange(n), np.arange(n)) % n) / n
    return (np.cos(angle) + np.sin(angle)) / np.sqrt(n)


def fourier_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin parts of the orthonormal DFT matrix F = C − iS (float64), rows in fftshift order."""
    rows = np.fft.fftshift(np.arange(n))
    angle = 2.0 * np.pi * (np.outer(rows, np.arange(n)) % n) / n
    return np.cos(angle) / np.sqrt(n), np.sin(angle) / np.sqrt(n)


# ----------------------------------------------------------------------------- float64 references

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
    """Forward 2-D sequency-ordered Walsh–Hadamard transform over axes (1, 2) of [N, H, W, C]:
    S_h · X · S_wᵀ per image and channel.

    Two matrix products (BLAS, O(H·W·(H+W)) per channel): a three-operand einsum sums over both
    axes at once, O(H²·W²): half a minute at 128×128, hours at 2048×2048."""
    s_h, s_w = sequency_hadamard(x.shape[1]), sequency_hadamard(x.shape[2])
    planes = np.moveaxis(x, 3, 1)                             # [N, C, H, W]
    return np.moveaxis(s_h @ planes @ s_w.T, 1, 3)


def reference_inverse_walsh(y: np.ndarray) -> np.ndarray:
    """The inverse of reference_walsh (S is orthonormal): S_hᵀ · Y · S_w."""
    s_h, s_w = sequency_hadamard(y.shape[1]), sequency_hadamard(y.shape[2])
    planes = np.moveaxis(y, 3, 1)
    return np.moveaxis(s_h.T @ planes @ s_w, 1, 3)


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
