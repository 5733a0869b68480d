"""The int8 recipe: the choices that decide how fast onnxruntime's CPU kernels run a QDQ model,
separate from calibration and the accuracy guard (quantize.py). Never imports torch.

What the profile of the contract CNN at batch 256 showed (benchmarks/int8_experiments.py, table in
benchmarks/results/int8-experiments.md): the float input head (Cast → Sub(mean) → Mul(1/std) on
every pixel, then QuantizeLinear) cost about a sixth of the time, and the first convolution reads
it through a float → uint8 round trip. The recipe's `integer_head` removes both:

    uint8 image → Transpose → Pad(spatial, per-channel mean) → DequantizeLinear(scale 1, zero point z)
                → QLinearConv(weights · 1/(255·std), bias folded with the mean) → …

The normalisation is folded into the first convolution's weights and bias, so its input is the
pixel value itself: uint8 with scale 1 and zero point z (the channels' mean pixel, rounded) — an
exact representation, where the float head's QuantizeLinear rounded every pixel. Padding is made
explicit with each channel's own mean pixel (rounded to an integer), which is what zero padding of
the normalised image means, so borders stay right; `border="zero-point"` lets the convolution pad
with z instead (one op fewer, borders off by the channels' distance from z). `float_logits` drops
the QuantizeLinear → DequantizeLinear pair on the graph's outputs, so the last Gemm writes float
logits directly instead of rounding them to 256 levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PIXELS = "toolkit_int8/pixels"      # the centred pixels the first convolution quantizes (scale 1)
BORDERS = ("exact", "zero-point")


@dataclass(frozen=True)
class Int8Recipe:
    """How a QDQ model is laid out for onnxruntime's CPU kernels (target cpu)."""
    integer_head: bool = True           # fold the uint8 head into the first convolution (see above)
    border: str = "exact"               # exact | zero-point: how the folded convolution pads
    float_logits: bool = True           # no Q/DQ pair on the graph outputs
    per_channel: bool = True            # per-output-channel weight scales (else one per tensor)
    weight_type: str = "int8"           # int8 | uint8 (VNNI multiplies uint8 × int8 natively)
    im2col: bool = False                # the folded k×k convolution reads k² shifted copies as a 1×1 conv


CPU_RECIPE = Int8Recipe()
TODAY_RECIPE = Int8Recipe(integer_head=False, float_logits=False)   # the recipe before the experiments


@dataclass
class FoldedHead:
    """What `fold_input_head` did: the tensor to quantize with scale 1 and zero point `zero`."""
    pixels: str
    zero: int
    cast: str                           # the Cast node, removed again once the model is quantized
    center: str                         # the Sub node that centres the pixels on `zero`

    def overrides(self) -> dict:
        """quantize_static's TensorQuantOverrides: the pixels are exact as uint8 with scale 1."""
        return {self.pixels: [{"scale": np.array(1.0, np.float32), "zero_point": np.array(self.zero, np.uint8)}]}


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _remove(graph, first_outputs: set[str]) -> None:
    """Remove the nodes whose first output is named in `first_outputs`. (Nodes are named by their
    outputs: protobuf hands out a new Python object per access, so object identity means nothing.)"""
    kept = [n for n in graph.node if n.output[0] not in first_outputs]
    del graph.node[:]
    graph.node.extend(kept)


def _attribute(node, name: str, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def fold_input_head(model: onnx.ModelProto, border: str = "exact", im2col: bool = False) -> FoldedHead | None:
    """Rewrite, in place, the contract head `uint8 NHWC → Transpose → Cast → Sub(mean) → Mul(scale)
    → Conv` into the integer head; None (model untouched) when the graph does not start that way.
    `im2col`: a k×k, stride-1 first convolution over C channels becomes a 1×1 convolution over the
    k²·C channels of k² shifted uint8 copies of the padded image (Slice + Concat); onnxruntime's
    int8 kernels run a 3-channel convolution far below their speed on wide inputs."""
    if border not in BORDERS:
        raise ValueError(f"unknown border {border!r} (choose from {', '.join(BORDERS)})")
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    users = _consumers(graph)
    image = graph.input[0]
    dims = image.type.tensor_type.shape.dim
    if image.type.tensor_type.elem_type != TensorProto.UINT8 or len(dims) != 4 or \
            not all(d.HasField("dim_value") for d in dims[1:]):
        return None
    chain, name = [], image.name
    for op in ("Transpose", "Cast", "Sub", "Mul", "Conv"):
        following = users.get(name, [])
        if len(following) != 1 or following[0].op_type != op:
            return None
        chain.append(following[0])
        name = following[0].output[0]
    transpose, cast, sub, mul, conv = chain
    if list(_attribute(transpose, "perm", [])) != [0, 3, 1, 2] or _attribute(cast, "to") != TensorProto.FLOAT \
            or sub.input[1] not in consts or mul.input[1] not in consts or conv.input[1] not in consts \
            or (len(conv.input) > 2 and conv.input[2] not in consts) or _attribute(conv, "group", 1) != 1 \
            or _attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    weights = numpy_helper.to_array(consts[conv.input[1]]).astype(np.float64)
    channels = weights.shape[1]
    mean = np.broadcast_to(numpy_helper.to_array(consts[sub.input[1]]).astype(np.float64).reshape(-1), channels)
    scale = np.broadcast_to(numpy_helper.to_array(consts[mul.input[1]]).astype(np.float64).reshape(-1), channels)
    if weights.ndim != 4 or dims[3].dim_value != channels or np.any(mean < 0) or np.any(mean > 255):
        return None
    bias = (numpy_helper.to_array(consts[conv.input[2]]).astype(np.float64) if len(conv.input) > 2
            else np.zeros(weights.shape[0]))
    zero = int(np.round(mean.mean()))
    # conv(W, (p - mean)·scale) + b = conv(W·scale, p - z) + b - Σ W·scale·(mean - z), exactly.
    folded = weights * scale[None, :, None, None]
    folded_bias = bias - (folded * (mean - zero)[None, :, None, None]).sum(axis=(1, 2, 3))
    prefix = "toolkit_int8/"
    inits = [numpy_helper.from_array(folded.astype(np.float32), prefix + "conv_weight"),
             numpy_helper.from_array(folded_bias.astype(np.float32), prefix + "conv_bias"),
             numpy_helper.from_array(np.array(zero, np.float32), prefix + "zero")]
    nodes = [helper.make_node("Transpose", [image.name], [prefix + "nchw"], perm=[0, 3, 1, 2],
                              name=prefix + "transpose")]
    pixels_u8 = prefix + "nchw"
    pads = list(_attribute(conv, "pads", [0, 0, 0, 0]))
    kernel = weights.shape[2:]
    im2col = im2col and kernel[0] > 1 and list(_attribute(conv, "strides", [1, 1])) == [1, 1] \
        and list(_attribute(conv, "dilations", [1, 1])) == [1, 1]
    if im2col and border != "exact" and any(pads):
        # The shifted copies need the border in the tensor: pad with the zero point z.
        inits += [numpy_helper.from_array(np.array([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]], np.int64),
                                          prefix + "pads"),
                  numpy_helper.from_array(np.array(zero, np.uint8), prefix + "pad_value")]
        nodes.append(helper.make_node("Pad", [pixels_u8, prefix + "pads", prefix + "pad_value"],
                                      [prefix + "padded"], name=prefix + "pad"))
        pixels_u8 = prefix + "padded"
        _set_pads(conv, [0, 0, 0, 0])
    if border == "exact" and any(pads):
        # Zero padding of the normalised image is each channel's mean pixel: pad with 0, then put the
        # (rounded) mean into the border; Where broadcasts a [C, H, W] mask over the batch.
        top, left, bottom, right = pads
        height, width = dims[1].dim_value + top + bottom, dims[2].dim_value + left + right
        border_mask = np.ones((channels, height, width), bool)
        border_mask[:, top:height - bottom, left:width - right] = False
        fill = np.round(mean).astype(np.uint8).reshape(channels, 1, 1)
        inits += [numpy_helper.from_array(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), prefix + "pads"),
                  numpy_helper.from_array(border_mask, prefix + "border"),
                  numpy_helper.from_array(fill, prefix + "fill")]
        nodes += [helper.make_node("Pad", [pixels_u8, prefix + "pads"], [prefix + "padded"], name=prefix + "pad"),
                  helper.make_node("Where", [prefix + "border", prefix + "fill", prefix + "padded"],
                                   [prefix + "filled"], name=prefix + "fill")]
        pixels_u8 = prefix + "filled"
        _set_pads(conv, [0, 0, 0, 0])
    if im2col:
        pixels_u8, folded = _shifted_copies(nodes, inits, pixels_u8, conv, folded, dims, pads)
        inits[0] = numpy_helper.from_array(folded.astype(np.float32), prefix + "conv_weight")
    nodes += [helper.make_node("Cast", [pixels_u8], [prefix + "float"], to=TensorProto.FLOAT, name=prefix + "cast"),
              helper.make_node("Sub", [prefix + "float", prefix + "zero"], [PIXELS], name=prefix + "center")]
    conv.input[0], conv.input[1] = PIXELS, prefix + "conv_weight"
    if len(conv.input) > 2:
        conv.input[2] = prefix + "conv_bias"
    else:
        conv.input.append(prefix + "conv_bias")
    old = {transpose.name, cast.name, sub.name, mul.name}
    kept = [n for n in graph.node if n.name not in old]
    del graph.node[:]
    graph.node.extend(nodes + kept)
    graph.initializer.extend(inits)
    return FoldedHead(PIXELS, zero, prefix + "cast", prefix + "center")


def _set_pads(conv, pads: list[int]) -> None:
    for attribute in conv.attribute:
        if attribute.name == "pads":
            attribute.ints[:] = pads


def _shifted_copies(nodes: list, inits: list, pixels: str, conv, weights: np.ndarray, dims,
                    pads: list[int]) -> tuple[str, np.ndarray]:
    """Append the Slice + Concat nodes that turn the padded uint8 NCHW image into its k² shifted
    copies [N, k²·C, H', W'] (copy s = ky·k + kx holds channels s·C … s·C + C − 1), make `conv` a
    1×1 convolution, and return the new input's name and the matching [O, k²·C, 1, 1] weights."""
    prefix = "toolkit_int8/im2col/"
    out_c, channels, kh, kw = weights.shape
    out_h = dims[1].dim_value + pads[0] + pads[2] - kh + 1
    out_w = dims[2].dim_value + pads[1] + pads[3] - kw + 1
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), prefix + "axes"))
    copies = []
    for ky in range(kh):
        for kx in range(kw):
            tag = f"{ky}_{kx}"
            inits += [numpy_helper.from_array(np.array([ky, kx], np.int64), prefix + "start" + tag),
                      numpy_helper.from_array(np.array([ky + out_h, kx + out_w], np.int64), prefix + "end" + tag)]
            nodes.append(helper.make_node("Slice", [pixels, prefix + "start" + tag, prefix + "end" + tag,
                                                    prefix + "axes"], [prefix + "copy" + tag], name=prefix + tag))
            copies.append(prefix + "copy" + tag)
    nodes.append(helper.make_node("Concat", copies, [prefix + "copies"], axis=1, name=prefix + "concat"))
    for attribute in conv.attribute:
        if attribute.name == "kernel_shape":
            attribute.ints[:] = [1, 1]
    return prefix + "copies", weights.transpose(0, 2, 3, 1).reshape(out_c, kh * kw * channels, 1, 1)


def finish_input_head(model: onnx.ModelProto, head: FoldedHead) -> None:
    """After quantization, in place: QuantizeLinear(Cast(u8) - z, scale 1, zero point z) is the
    uint8 tensor itself, so the first convolution's DequantizeLinear reads it directly. A no-op
    when the first convolution was kept in float (the guard excluded it)."""
    graph = model.graph
    quantize = next((n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == head.pixels), None)
    if quantize is None:
        return
    cast = next(n for n in graph.node if n.name == head.cast)
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] == quantize.output[0]:
            node.input[0] = cast.input[0]
    if any(head.pixels in n.input for n in graph.node if n is not quantize):
        return                          # the float pixels have another reader: keep them
    center = next(n for n in graph.node if n.name == head.center)
    _remove(graph, {quantize.output[0], cast.output[0], center.output[0]})


def drop_output_qdq(model: onnx.ModelProto) -> int:
    """Remove, in place, every QuantizeLinear → DequantizeLinear pair that only feeds a graph output,
    so the producer (e.g. a QGemm) writes float directly. Returns how many pairs were removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    users = _consumers(graph)
    produced_by = {name: n for n in graph.node for name in n.output}
    renames: dict[str, str] = {}           # the producer's float output → the graph output's name
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in outputs]:
        q = produced_by.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(users.get(q.output[0], [])) != 1:
            continue
        if q.input[0] in produced_by and len(users.get(q.input[0], [])) == 1 and q.input[0] not in outputs:
            renames[q.input[0]] = dq.output[0]
    _remove(graph, {n.output[0] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                    and (n.input[0] in renames or n.output[0] in renames.values())})
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    return len(renames)
