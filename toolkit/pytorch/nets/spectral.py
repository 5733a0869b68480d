"""Spectral layers: FFT low-pass, FFT log-magnitude spectrum and Walsh–Hadamard compression.

The ops are defined in docs/transforms.md; their math (masks, bases) and float64 numpy reference live in
`toolkit.edge.spectral.ops`, the leaf module this file shares with the torch-free ONNX graph builders of
`toolkit.edge.spectral.graphs` (which `toolkit transform` runs). These modules exist to fuse a
transform in front of a classifier for training and export.
The op modules take the artifact layout, uint8 [N, H, W, 3] RGB, and return uint8 [N, H, W, 3]
(`round(clip(255·y))`), except FFTSpectrum, which returns float32 [N, H, W, 3].

Each Fourier op comes in two forms, picked by `form`:

- "dft": torch.fft, which the dynamo exporter lowers to ONNX `DFT`. The graph works for any H×W
  at run time, but onnxruntime has a `DFT` kernel on CPU only.
- "matmul": the transform as MatMuls with constant basis matrices built for one fixed `size`
  (H, W). The graph holds no `DFT` node, so it runs on CPU, CUDA and TensorRT alike and can be
  quantized.

The Walsh op has only the matmul form: its 2-D transform is two products with the
sequency-ordered Hadamard matrix. A fast-Walsh–Hadamard butterfly (log2 n add/sub stages per
axis, ~200 small nodes) computed walsh-compress 13–17× slower than the MatMul graph at 32×32 and
~7× slower at 256×256 in onnxruntime on CPU, so there is no butterfly form.

    from toolkit.pytorch.nets.spectral import FFTLowpass
    y = FFTLowpass(0.5, form="matmul", size=(32, 32))(images)   # uint8 NHWC → uint8 NHWC
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from toolkit.edge.spectral.ops import (
    FORMS,
    check_op,
    fourier_matrices,
    hartley_matrix,
    lowpass_mask,
    lowpass_threshold,
    sequency_hadamard,
    walsh_projection,
)

__all__ = ["FFTLowpass", "FFTSpectrum", "InverseWalshHadamard2d", "WalshCompress", "WalshHadamard2d",
           "fourier_matrices", "hartley_matrix", "transform_module"]


def _planar(image: torch.Tensor) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float32 [N, 3, H, W], still on the 0..255 scale."""
    return image.permute(0, 3, 1, 2).to(torch.float32)


def _to_uint8(y: torch.Tensor) -> torch.Tensor:
    """float32 [N, 3, H, W] on the 0..255 scale → uint8 [N, H, W, 3], rounded half to even."""
    return torch.round(torch.clamp(y, 0.0, 255.0)).to(torch.uint8).permute(0, 2, 3, 1)


def _constant(array: np.ndarray) -> torch.Tensor:
    """A float32 basis matrix, computed in float64 first so it carries one rounding only."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _check_form(form: str, size) -> tuple[int, int] | None:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r} (choose from {', '.join(FORMS)})")
    if form == "matmul":
        if size is None:
            raise ValueError("the matmul form needs a fixed size (H, W)")
        return int(size[0]), int(size[1])
    return None


def _frequencies(n, index: torch.Tensor) -> torch.Tensor:
    """`index · (1/n)` in float64, the very operations numpy.fft.fftfreq uses, so the in-graph
    mask of the dft form decides boundary bins exactly as the reference does (float32 or a
    plain division would flip bins lying on the circle, e.g. at W = 20)."""
    return index * (1.0 / torch.full((), n, dtype=torch.float64))


def _fftshift(x: torch.Tensor) -> torch.Tensor:
    """torch.fft.fftshift over the last two axes, written as slices: the exporter cannot lower
    `roll` by a shift that depends on the (dynamic) size."""
    h, w = x.shape[-2], x.shape[-1]
    x = torch.cat((x[..., h - h // 2:, :], x[..., : h - h // 2, :]), dim=-2)
    return torch.cat((x[..., w - w // 2:], x[..., : w - w // 2]), dim=-1)


class FFTLowpass(nn.Module):
    """fft-lowpass(radius): keep the Fourier bins with sqrt(fy² + fx²) ≤ radius/2 cycles per pixel.

    The matmul form uses the Hartley transform, which diagonalises this filter exactly like the
    DFT does because the mask depends only on fy² and fx² (it is even in each frequency):
    y = K_H (mask ⊙ (K_H x K_W)) K_W, with K = cas(2πjk/n)/√n real, symmetric and self-inverse —
    four real MatMuls and no complex arithmetic.
    """

    k_h: torch.Tensor
    k_w: torch.Tensor
    mask: torch.Tensor

    def __init__(self, radius: float, form: str = "dft", size: tuple[int, int] | None = None):
        super().__init__()
        if not 0.0 < radius <= 1.0:
            raise ValueError(f"radius must be in (0, 1], got {radius}")
        self.radius, self.form = float(radius), form
        self.size = _check_form(form, size)
        if self.size is not None:
            h, w = self.size
            self.register_buffer("k_h", _constant(hartley_matrix(h)), persistent=False)
            self.register_buffer("k_w", _constant(hartley_matrix(w)), persistent=False)
            self.register_buffer("mask", _constant(lowpass_mask(h, w, radius, onesided=False)), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # The op is linear, so it runs on the 0..255 scale directly: no /255 and ×255 round trip.
        x = _planar(image)
        if self.form == "matmul":
            spectrum = self.k_h @ x @ self.k_w
            return _to_uint8(self.k_h @ (spectrum * self.mask) @ self.k_w)
        h, w = x.shape[-2], x.shape[-1]
        ky = torch.arange(h, dtype=torch.float64)
        ky = torch.where(ky < (h + 1) // 2, ky, ky - h)       # fftfreq's order: 0, 1, …, −2, −1
        fy = _frequencies(h, ky)
        fx = _frequencies(w, torch.arange(w // 2 + 1, dtype=torch.float64))
        radius2 = (fy * fy)[:, None] + (fx * fx)[None, :]
        # A float64 tensor, not a Python float: the exporter would make the scalar float32
        # (0.15000001 for radius 0.3) and keep bins lying exactly on the circle.
        threshold = torch.tensor(lowpass_threshold(self.radius), dtype=torch.float64)
        mask = (torch.sqrt(radius2) <= threshold).to(torch.float32)
        spectrum = torch.fft.rfft2(x, norm="ortho")
        return _to_uint8(torch.fft.irfft2(spectrum * mask, s=(h, w), norm="ortho"))


class FFTSpectrum(nn.Module):
    """fft-spectrum: log1p(|fftshift(fft2(x, norm="ortho"))|) per channel, float32 [N, H, W, 3].

    The matmul form computes Re and Im with the cos/sin halves of the DFT matrix, their rows
    already in fftshift order: [C_H; S_H] x [C_Wᵀ | S_Wᵀ] gives the four products in two MatMuls.
    """

    rows: torch.Tensor
    cols: torch.Tensor

    def __init__(self, form: str = "dft", size: tuple[int, int] | None = None):
        super().__init__()
        self.form = form
        self.size = _check_form(form, size)
        if self.size is not None:
            h, w = self.size
            cos_h, sin_h = fourier_matrices(h)
            cos_w, sin_w = fourier_matrices(w)
            # The /255 of x = image/255 is folded into the row basis.
            self.register_buffer("rows", _constant(np.concatenate([cos_h, sin_h]) / 255.0), persistent=False)
            self.register_buffer("cols", _constant(np.concatenate([cos_w.T, sin_w.T], axis=1)), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = _planar(image)
        if self.form == "matmul":
            assert self.size is not None
            h, w = self.size
            p = self.rows @ x @ self.cols                     # [[CxCᵀ, CxSᵀ], [SxCᵀ, SxSᵀ]]
            real = p[..., :h, :w] - p[..., h:, w:]
            imag = p[..., :h, w:] + p[..., h:, :w]
            magnitude = torch.sqrt(real * real + imag * imag)
        else:
            # float64: onnxruntime's float32 DFT at lengths that are not powers of two errs by
            # ~1e-6 of the largest (DC) coefficient, up to 1e-3 relative on the weakest bins.
            spectrum = torch.fft.fft2(x.to(torch.float64) / 255.0, norm="ortho")
            magnitude = _fftshift(torch.abs(spectrum)).to(torch.float32)
        return torch.log1p(magnitude).permute(0, 2, 3, 1)


class WalshHadamard2d(nn.Module):
    """Forward 2-D Walsh–Hadamard transform over the last two axes: Y = S_H · x · S_Wᵀ, with
    S_n the sequency-ordered, orthonormal Hadamard matrix. float tensors [..., H, W] in and out."""

    s_h: torch.Tensor
    s_w_t: torch.Tensor

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        h, w = size
        self.register_buffer("s_h", _constant(sequency_hadamard(h)), persistent=False)
        self.register_buffer("s_w_t", _constant(sequency_hadamard(w).T), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.s_h @ x @ self.s_w_t


class InverseWalshHadamard2d(nn.Module):
    """Inverse 2-D Walsh–Hadamard transform: x = S_Hᵀ · Y · S_W (S is orthonormal)."""

    s_h_t: torch.Tensor
    s_w: torch.Tensor

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        h, w = size
        self.register_buffer("s_h_t", _constant(sequency_hadamard(h).T), persistent=False)
        self.register_buffer("s_w", _constant(sequency_hadamard(w)), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.s_h_t @ y @ self.s_w


class WalshCompress(nn.Module):
    """walsh-compress(keep): keep the top-left ceil(keep·H) × ceil(keep·W) sequency block.

    Because the kept block is a product of a row range and a column range, transform → zero →
    inverse equals one projection per axis: y = P_H · x · P_W with P_n = S_nᵀ · diag(1 for the
    first ceil(keep·n) sequencies) · S_n (symmetric). Computed in float64, that is two MatMuls
    instead of four plus a mask.
    """

    p_h: torch.Tensor
    p_w: torch.Tensor

    def __init__(self, keep: float, size: tuple[int, int]):
        super().__init__()
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        self.keep = float(keep)
        self.size = (int(size[0]), int(size[1]))
        h, w = self.size
        self.register_buffer("p_h", _constant(self.projection(h, keep)), persistent=False)
        self.register_buffer("p_w", _constant(self.projection(w, keep)), persistent=False)

    @staticmethod
    def projection(n: int, keep: float) -> np.ndarray:
        return walsh_projection(n, keep)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return _to_uint8(self.p_h @ _planar(image) @ self.p_w)


def transform_module(op: str, params: dict, form: str = "matmul", size: tuple[int, int] | None = None) -> nn.Module:
    """The torch module of an op: uint8 [N, H, W, 3] → uint8 [N, H, W, 3] (fft-spectrum: float32).

    form 'matmul' is built for `size` = (H, W); form 'dft' takes any size (`size` is ignored).
    Fusion in front of a classifier: nn.Sequential(transform_module(...), classifier).
    Raises toolkit.edge.spectral.ops.TransformError for a bad request."""
    params = check_op(op, params, form, size if form == "matmul" else None)
    if op == "fft-lowpass":
        return FFTLowpass(params["radius"], form, size)
    if op == "fft-spectrum":
        return FFTSpectrum(form, size)
    assert size is not None
    return WalshCompress(params["keep"], size)
