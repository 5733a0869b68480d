"""ONNX graphs of the spectral ops, built with onnx.helper and numpy constants (no torch).

Every graph takes `image` uint8 [N, H, W, 3] and returns `transformed` of the same shape: uint8
for the image ops, float32 for fft-spectrum. Two forms:

- "matmul": the transform as MatMuls with constant float32 basis matrices for one fixed H×W (a
  Hartley basis for the low-pass, the cos/sin halves of the DFT matrix for the spectrum, one
  projection per axis for walsh-compress). No DFT node, so it runs on every provider.
- "dft": ONNX `DFT` (CPU only in onnxruntime), for any H×W at run time. The low-pass mask is
  computed in the graph in float64 by the very operations numpy uses (`index · (1/n)`, squares,
  sqrt, ≤ a float64 threshold), so it keeps exactly the bins the float64 rule keeps.

The node sequences follow those the torch exporter produces for `toolkit.pytorch.nets.spectral`
(the same operations in the same order, hence the same rounding), so a transform fused in front of
a classifier and a transform file agree; the graph tests compare both against the float64 reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from toolkit.edge.contract import OPSET
from toolkit.edge.spectral import ops

IR_VERSION = 10            # what onnxruntime ≥ 1.20 reads; onnx.helper would stamp its newest
INPUT_NAME = "image"
# ONNX names are single-assignment, so the output cannot share the input's name.
OUTPUT_NAME = "transformed"
FLOAT, DOUBLE, INT64, UINT8 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.UINT8


class _Graph:
    """A small node/initializer accumulator with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | float | list, dtype: type | str, hint: str = "c") -> str:
        """A constant initializer. Basis matrices come in as float64 and are rounded once here."""
        name = self.name(hint)
        array = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def planar_float(self) -> str:
        """uint8 [N, H, W, 3] → float32 [N, 3, H, W] on the 0..255 scale."""
        return self.op("Cast", self.op("Transpose", INPUT_NAME, perm=[0, 3, 1, 2]), to=FLOAT)

    def to_uint8_nhwc(self, y: str) -> None:
        """float32 [N, 3, H, W] on the 0..255 scale → uint8 [N, H, W, 3], rounded half to even."""
        clipped = self.op("Clip", y, self.const(0.0, np.float32), self.const(255.0, np.float32))
        as_uint8 = self.op("Cast", self.op("Round", clipped), to=UINT8)
        self.op("Transpose", as_uint8, out=OUTPUT_NAME, perm=[0, 2, 3, 1])

    def model(self, doc: str, size: tuple[int, int] | None, output_type: int) -> onnx.ModelProto:
        dims: list[str | int] = ["N", "H", "W", 3] if size is None else ["N", size[0], size[1], 3]
        graph = helper.make_graph(
            self.nodes, doc.replace(" ", "_"),
            [helper.make_tensor_value_info(INPUT_NAME, UINT8, dims)],
            [helper.make_tensor_value_info(OUTPUT_NAME, output_type, dims)],
            initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="toolkit", doc_string=doc)
        model.ir_version = IR_VERSION
        return model


# ----------------------------------------------------------------------------- matmul form

def _lowpass_matmul(g: _Graph, radius: float, size: tuple[int, int]) -> None:
    h, w = size
    k_h = g.const(ops.hartley_matrix(h), np.float32, "k_h")
    k_w = g.const(ops.hartley_matrix(w), np.float32, "k_w")
    mask = g.const(ops.lowpass_mask(h, w, radius, onesided=False), np.float32, "mask")
    # The op is linear, so it runs on the 0..255 scale directly: no /255 and ×255 round trip.
    spectrum = g.op("MatMul", g.op("MatMul", k_h, g.planar_float()), k_w)
    filtered = g.op("Mul", spectrum, mask)
    g.to_uint8_nhwc(g.op("MatMul", g.op("MatMul", k_h, filtered), k_w))


def _slice(g: _Graph, x: str, rows: tuple[int, int], cols: tuple[int, int]) -> str:
    """x[..., rows[0]:rows[1], cols[0]:cols[1]] of a 4-D tensor."""
    starts = g.const([rows[0], cols[0]], np.int64)
    ends = g.const([rows[1], cols[1]], np.int64)
    return g.op("Slice", x, starts, ends, g.const([2, 3], np.int64))


def _spectrum_matmul(g: _Graph, size: tuple[int, int]) -> None:
    h, w = size
    cos_h, sin_h = ops.fourier_matrices(h)
    cos_w, sin_w = ops.fourier_matrices(w)
    # [C_H; S_H] x [C_Wᵀ | S_Wᵀ] gives the four real products in two MatMuls; the /255 of
    # x = image/255 is folded into the row basis.
    rows = g.const(np.concatenate([cos_h, sin_h]) / 255.0, np.float32, "rows")
    cols = g.const(np.concatenate([cos_w.T, sin_w.T], axis=1), np.float32, "cols")
    p = g.op("MatMul", g.op("MatMul", rows, g.planar_float()), cols)     # [[CxCᵀ, CxSᵀ], [SxCᵀ, SxSᵀ]]
    real = g.op("Sub", _slice(g, p, (0, h), (0, w)), _slice(g, p, (h, 2 * h), (w, 2 * w)))
    imag = g.op("Add", _slice(g, p, (0, h), (w, 2 * w)), _slice(g, p, (h, 2 * h), (0, w)))
    power = g.op("Add", g.op("Mul", real, real), g.op("Mul", imag, imag))
    _log1p_nhwc(g, g.op("Sqrt", power))


def _log1p_nhwc(g: _Graph, magnitude: str) -> None:
    log1p = g.op("Log", g.op("Add", magnitude, g.const(1.0, np.float32)))
    g.op("Transpose", log1p, out=OUTPUT_NAME, perm=[0, 2, 3, 1])


def _walsh_matmul(g: _Graph, keep: float, size: tuple[int, int]) -> None:
    h, w = size
    p_h = g.const(ops.walsh_projection(h, keep), np.float32, "p_h")
    p_w = p_h if w == h else g.const(ops.walsh_projection(w, keep), np.float32, "p_w")
    g.to_uint8_nhwc(g.op("MatMul", g.op("MatMul", p_h, g.planar_float()), p_w))


# ----------------------------------------------------------------------------- dft form

def _side(g: _Graph, axis: int) -> str:
    """The image's size along `axis` as an int64 scalar."""
    return g.op("Squeeze", g.op("Shape", INPUT_NAME, start=axis, end=axis + 1))


def _sqrt_of_dim(g: _Graph, x: str, axis: int, dtype: int) -> str:
    """sqrt(x.shape[axis]) in `dtype`: the 1/√n of norm="ortho", as the exporter computed it."""
    return g.op("Sqrt", g.op("Cast", g.op("Shape", x, start=axis, end=axis + 1), to=dtype))


def _lowpass_dft(g: _Graph, radius: float) -> None:
    h, w = _side(g, 1), _side(g, 2)
    x = g.planar_float()
    zero, one = g.const(0.0, np.float64), g.const(1.0, np.float64)
    # fy = fftfreq(H) = [0, 1, …, (H−1)//2, −H//2, …, −1] · (1/H) and fx = rfftfreq(W) in float64.
    h_f64 = g.op("Cast", h, to=DOUBLE)
    ky = g.op("Range", zero, h_f64, one)
    positive = g.op("Cast", g.op("Div", g.op("Add", h, g.const(1, np.int64)), g.const(2, np.int64)), to=DOUBLE)
    ky = g.op("Where", g.op("Less", ky, positive), ky, g.op("Sub", ky, h_f64))
    fy = g.op("Mul", ky, g.op("Reciprocal", h_f64))
    half_w = g.op("Add", g.op("Div", w, g.const(2, np.int64)), g.const(1, np.int64))
    kx = g.op("Range", zero, g.op("Cast", half_w, to=DOUBLE), one)
    fx = g.op("Mul", kx, g.op("Reciprocal", g.op("Cast", w, to=DOUBLE)))
    radius2 = g.op("Add", g.op("Unsqueeze", g.op("Mul", fy, fy), g.const([1], np.int64)),
                   g.op("Unsqueeze", g.op("Mul", fx, fx), g.const([0], np.int64)))
    threshold = g.const(ops.lowpass_threshold(radius), np.float64, "threshold")
    mask = g.op("Cast", g.op("LessOrEqual", g.op("Sqrt", radius2), threshold), to=FLOAT)   # [H, W//2+1]
    # rfft2 (ortho): the 1/√n scaling goes before each forward DFT, as the exporter put it.
    last = g.const([-1], np.int64)
    xc = g.op("Unsqueeze", x, last)                                            # [N, 3, H, W, 1]
    xc = g.op("Div", xc, _sqrt_of_dim(g, xc, 3, FLOAT))
    width_len = g.op("Squeeze", g.op("Shape", xc, start=3, end=4), g.const([0], np.int64))
    rows_spectrum = g.op("DFT", xc, width_len, axis=3, inverse=0, onesided=1)
    rows_spectrum = g.op("Div", rows_spectrum, _sqrt_of_dim(g, rows_spectrum, 2, FLOAT))
    height_len = g.op("Squeeze", g.op("Shape", rows_spectrum, start=2, end=3), g.const([0], np.int64))
    spectrum = g.op("DFT", rows_spectrum, height_len, axis=2, inverse=0, onesided=0)
    filtered = g.op("Mul", spectrum, g.op("Unsqueeze", mask, last))           # both Re and Im
    # irfft2 (ortho): onnxruntime's inverse DFT divides by n, so multiply by √n after each.
    columns = g.op("DFT", filtered, axis=2, inverse=1, onesided=0)
    columns = g.op("Mul", columns, _sqrt_of_dim(g, columns, 2, FLOAT))
    image = g.op("DFT", columns, w, axis=3, inverse=1, onesided=1)
    image = g.op("Mul", image, _sqrt_of_dim(g, image, 3, FLOAT))
    real = g.op("Slice", image, g.const([0], np.int64), g.const([1], np.int64), last)
    g.to_uint8_nhwc(g.op("Squeeze", real, last))


def _shift(g: _Graph, x: str, side: str, axis: int) -> str:
    """fftshift along one axis of dynamic length n: x[n − n//2:] then x[:n − n//2]."""
    split = g.op("Reshape", g.op("Sub", side, g.op("Div", side, g.const(2, np.int64))), g.const([-1], np.int64))
    axes, step = g.const([axis], np.int64), g.const([1], np.int64)
    tail = g.op("Slice", x, split, g.const([np.iinfo(np.int64).max], np.int64), axes, step)
    head = g.op("Slice", x, g.const([0], np.int64), split, axes, step)
    return g.op("Concat", tail, head, axis=axis)


def _spectrum_dft(g: _Graph) -> None:
    h, w = _side(g, 1), _side(g, 2)
    # float64: onnxruntime's float32 DFT at lengths that are not powers of two errs by ~1e-6 of
    # the largest (DC) coefficient, up to 1e-3 relative on the weakest bins.
    x = g.op("Cast", g.planar_float(), to=DOUBLE)
    x = g.op("Unsqueeze", g.op("Div", x, g.const(255.0, np.float64)), g.const([-1], np.int64))
    zeros = g.op("Expand", g.const(0.0, np.float64), g.op("Shape", x))
    xc = g.op("Concat", x, zeros, axis=-1)                                     # complex, Im = 0
    rows_spectrum = g.op("DFT", xc, axis=3, inverse=0, onesided=0)
    rows_spectrum = g.op("Div", rows_spectrum, _sqrt_of_dim(g, rows_spectrum, 3, DOUBLE))
    spectrum = g.op("DFT", rows_spectrum, axis=2, inverse=0, onesided=0)
    spectrum = g.op("Div", spectrum, _sqrt_of_dim(g, spectrum, 2, DOUBLE))
    magnitude = g.op("ReduceL2", spectrum, g.const([-1], np.int64), keepdims=0)
    shifted = _shift(g, _shift(g, magnitude, h, 2), w, 3)
    _log1p_nhwc(g, g.op("Cast", shifted, to=FLOAT))


# ----------------------------------------------------------------------------- entry point

def build_graph(op: str, params: dict, form: str, size: tuple[int, int] | None) -> onnx.ModelProto:
    """The ONNX graph of an op, without metadata. `size` (H, W) is required for the matmul form
    and ignored by the dft form. Raises ops.TransformError for a bad request."""
    params = ops.check_op(op, params, form, size if form == "matmul" else None)
    if form == "matmul" and size is None:
        raise ops.TransformError("the matmul form needs a fixed size (H, W)")
    fixed = (int(size[0]), int(size[1])) if form == "matmul" and size is not None else None
    g = _Graph()
    if op == "fft-lowpass" and fixed:
        _lowpass_matmul(g, params["radius"], fixed)
    elif op == "fft-lowpass":
        _lowpass_dft(g, params["radius"])
    elif op == "fft-spectrum" and fixed:
        _spectrum_matmul(g, fixed)
    elif op == "fft-spectrum":
        _spectrum_dft(g)
    else:
        assert fixed is not None             # check_op admits walsh-compress in the matmul form only
        _walsh_matmul(g, params["keep"], fixed)
    output_type = FLOAT if op == "fft-spectrum" else UINT8
    return g.model(f"{ops.describe(op, params)} ({form})", fixed, output_type)
