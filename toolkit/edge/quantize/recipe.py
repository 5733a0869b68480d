"""The int8 recipe: the choices that decide how fast onnxruntime's CPU kernels run a QDQ model,
separate from calibration and the accuracy guard (variants.py). Never imports torch.

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

from toolkit.edge.onnxgraph import DeclaredTensor, attribute, consumers, input_signature, remove_nodes, topological_sort

PIXELS = "toolkit_int8/pixels"      # the centred pixels the first convolution quantizes (scale 1)
PACKED = "toolkit_int8/packed"      # pack: the image as [N, G·C, H + k − 1, W/G + 1] uint8
BORDERS = ("exact", "zero-point")


@dataclass(frozen=True)
class Int8Recipe:
    """How a QDQ model is laid out for a CPU runtime's kernels (targets cpu and openvino)."""
    integer_head: bool = True           # fold the uint8 head into the first convolution (see above)
    border: str = "exact"               # exact | zero-point: how the folded convolution pads
    float_logits: bool = True           # no Q/DQ pair on the graph outputs
    per_channel: bool = True            # per-output-channel weight scales (else one per tensor)
    weight_type: str = "int8"           # int8 | uint8 (VNNI multiplies uint8 × int8 natively)
    pack: bool = True                   # the first conv reads G neighbouring pixels as one (see fold_input_head)
    nhwc_flatten: bool = True           # flatten NHWC before the first Gemm (see nhwc.flatten_nhwc)
    nhwc_head: bool = False             # pad and dequantize the image before its Transpose (nhwc.nhwc_input_head)


CPU_RECIPE = Int8Recipe()                                           # onnxruntime's CPU kernels
# OpenVINO runs the packed first convolution 2× slower (in int8 it is twice the multiply-adds, and
# OpenVINO's kernels take 3 channels well enough), so its files keep the plain integer head, with the
# padding and DequantizeLinear placed in front of the input's Transpose: for static shapes OpenVINO's
# layout then cancels the Transpose, as it does the NHWC flatten's (benchmarks/results/int8-experiments.md).
OPENVINO_RECIPE = Int8Recipe(pack=False, nhwc_head=True)
# The plain QDQ layout (float input head, uint8 logits, nothing packed): the baseline the int8
# experiments measure each rewrite against, and what the guard tests quantize with.
BASELINE_RECIPE = Int8Recipe(integer_head=False, float_logits=False, pack=False, nhwc_flatten=False)


@dataclass
class FoldedHead:
    """What `fold_input_head` did: the tensor to quantize with scale 1 and zero point `zero`."""
    pixels: str
    zero: int
    cast: str                           # the Cast node, removed again once the model is quantized
    center: str                         # the Sub node that centres the pixels on `zero`
    packed: bool = False                # pack: the unpacking Transposes must be quantized (kept in uint8)

    def overrides(self) -> dict:
        """quantize_static's TensorQuantOverrides: the pixels are exact as uint8 with scale 1."""
        return {self.pixels: [{"scale": np.array(1.0, np.float32), "zero_point": np.array(self.zero, np.uint8)}]}


def fold_input_head(model: onnx.ModelProto, border: str = "exact", pack: bool = False) -> FoldedHead | None:
    """Rewrite, in place, the contract head `uint8 NHWC → Transpose → Cast → Sub(mean) → Mul(scale)
    → Conv` into the integer head; None (model untouched) when the graph does not start that way.
    `pack`: a "same" k×k stride-1 first convolution reads the NHWC image reshaped to [N, H, W/G, G·C]
    (G neighbouring pixels as one, G·C a multiple of 4: G = 4 for RGB) with a k×2 kernel and G·O
    outputs, unpacked again by Transpose → Reshape → Transpose (which onnxruntime's NHWC layout
    cancels). No copy of the image is made, and the convolution takes the fast kernels."""
    if border not in BORDERS:
        raise ValueError(f"unknown border {border!r} (choose from {', '.join(BORDERS)})")
    graph = model.graph
    users = consumers(graph)
    head = _contract_head(graph, users)
    if head is None:
        return None
    image, hwc, (transpose, cast, sub, mul, conv), consts = head
    weights = numpy_helper.to_array(consts[conv.input[1]]).astype(np.float64)
    channels = weights.shape[1]
    mean = np.broadcast_to(numpy_helper.to_array(consts[sub.input[1]]).astype(np.float64).reshape(-1), channels)
    scale = np.broadcast_to(numpy_helper.to_array(consts[mul.input[1]]).astype(np.float64).reshape(-1), channels)
    if weights.ndim != 4 or hwc[2] != channels or np.any(mean < 0) or np.any(mean > 255):
        return None
    bias = (numpy_helper.to_array(consts[conv.input[2]]).astype(np.float64) if len(conv.input) > 2
            else np.zeros(weights.shape[0]))
    zero = int(np.round(mean.mean()))
    # conv(W, (p - mean)·scale) + b = conv(W·scale, p - z) + b - Σ W·scale·(mean - z), exactly.
    folded = weights * scale[None, :, None, None]
    folded_bias = bias - (folded * (mean - zero)[None, :, None, None]).sum(axis=(1, 2, 3))
    prefix = "toolkit_int8/"
    pads = list(attribute(conv, "pads", [0, 0, 0, 0]))
    packed = _packed_head(graph, conv, folded, folded_bias, mean, hwc, pads, users) \
        if pack and border == "exact" else None
    if packed is not None:
        nodes, pack_inits, folded, folded_bias = packed
    inits = [numpy_helper.from_array(folded.astype(np.float32), prefix + "conv_weight"),
             numpy_helper.from_array(folded_bias.astype(np.float32), prefix + "conv_bias"),
             numpy_helper.from_array(np.array(zero, np.float32), prefix + "zero")]
    if packed is not None:
        return _finish_fold(graph, nodes, inits + pack_inits, PACKED, conv, (transpose, cast, sub, mul), zero)
    nodes = [helper.make_node("Transpose", [image.name], [prefix + "nchw"], perm=[0, 3, 1, 2],
                              name=prefix + "transpose")]
    pixels_u8 = prefix + "nchw"
    if border == "exact" and any(pads):
        pixels_u8 = _mean_border(nodes, inits, pixels_u8, pads, mean, hwc)
        _set_ints(conv, "pads", [0, 0, 0, 0])
    return _finish_fold(graph, nodes, inits, pixels_u8, conv, (transpose, cast, sub, mul), zero)


def uint8_image(graph) -> tuple[DeclaredTensor, tuple[int, int, int]] | None:
    """The graph's first input and its (H, W, C) where it is a uint8 [N, H, W, C] image of fixed
    size (the contract's input); else None."""
    inputs = input_signature(graph)
    if not inputs:
        return None
    image = inputs[0]
    hwc = [d for d in image.dims[1:] if isinstance(d, int) and d > 0]
    if image.dtype != "uint8" or len(image.dims) != 4 or len(hwc) != 3:
        return None
    return image, (hwc[0], hwc[1], hwc[2])


def _contract_head(graph, users: dict) -> tuple[DeclaredTensor, tuple[int, int, int], list, dict] | None:
    """The image input, its (H, W, C), the `Transpose → Cast → Sub → Mul → Conv` chain that reads
    it and the graph's constants, where the graph starts with the contract head on a fixed-size
    uint8 NHWC image with constant mean, scale and weights; else None."""
    consts = {t.name: t for t in graph.initializer}
    found = uint8_image(graph)
    if found is None:
        return None
    image, hwc = found
    chain, name = [], image.name
    for op in ("Transpose", "Cast", "Sub", "Mul", "Conv"):
        following = users.get(name, [])
        if len(following) != 1 or following[0].op_type != op:
            return None
        chain.append(following[0])
        name = following[0].output[0]
    transpose, cast, sub, mul, conv = chain
    if list(attribute(transpose, "perm", [])) != [0, 3, 1, 2] or attribute(cast, "to") != TensorProto.FLOAT \
            or sub.input[1] not in consts or mul.input[1] not in consts or conv.input[1] not in consts \
            or (len(conv.input) > 2 and conv.input[2] not in consts) or attribute(conv, "group", 1) != 1 \
            or attribute(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    return image, hwc, chain, consts


def _mean_border(nodes: list, inits: list, pixels_u8: str, pads: list[int], mean: np.ndarray,
                 hwc: tuple[int, int, int]) -> str:
    """Append the nodes and constants that pad the NCHW uint8 tensor `pixels_u8` with each
    channel's mean pixel; the padded tensor's name. Zero padding of the normalised image is each
    channel's mean pixel: pad with 0, then put the (rounded) mean into the border; Where broadcasts
    a [C, H, W] mask over the batch."""
    prefix = "toolkit_int8/"
    channels = len(mean)
    top, left, bottom, right = pads
    height, width = hwc[0] + top + bottom, hwc[1] + left + right
    border_mask = np.ones((channels, height, width), bool)
    border_mask[:, top:height - bottom, left:width - right] = False
    fill = np.round(mean).astype(np.uint8).reshape(channels, 1, 1)
    inits += [numpy_helper.from_array(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), prefix + "pads"),
              numpy_helper.from_array(border_mask, prefix + "border"),
              numpy_helper.from_array(fill, prefix + "fill")]
    nodes += [helper.make_node("Pad", [pixels_u8, prefix + "pads"], [prefix + "padded"], name=prefix + "pad"),
              helper.make_node("Where", [prefix + "border", prefix + "fill", prefix + "padded"],
                               [prefix + "filled"], name=prefix + "fill")]
    return prefix + "filled"


def _finish_fold(graph, nodes: list, inits: list, pixels_u8: str, conv, old_head: tuple, zero: int) -> FoldedHead:
    """Cast the uint8 tensor `pixels_u8` to float centred on `zero` (what the quantizer sees), make
    it the folded convolution's input, and replace the old head's nodes by `nodes`."""
    prefix = "toolkit_int8/"
    nodes += [helper.make_node("Cast", [pixels_u8], [prefix + "float"], to=TensorProto.FLOAT, name=prefix + "cast"),
              helper.make_node("Sub", [prefix + "float", prefix + "zero"], [PIXELS], name=prefix + "center")]
    conv.input[0], conv.input[1] = PIXELS, prefix + "conv_weight"
    if len(conv.input) > 2:
        conv.input[2] = prefix + "conv_bias"
    else:
        conv.input.append(prefix + "conv_bias")
    old = {node.name for node in old_head}
    kept = [n for n in graph.node if n.name not in old]
    del graph.node[:]
    graph.node.extend(nodes + kept)
    graph.initializer.extend(inits)
    topological_sort(graph)
    return FoldedHead(PIXELS, zero, prefix + "cast", prefix + "center", pixels_u8 == PACKED)


def _packed_head(graph, conv, weights: np.ndarray, bias: np.ndarray, mean: np.ndarray, hwc: tuple[int, int, int],
                 pads: list[int], users: dict) -> tuple[list, list, np.ndarray, np.ndarray] | None:
    """The nodes, initializers, weights [G·O, G·C, k, 2] and bias of the packed first convolution
    (see fold_input_head), with the unpacking after it (after its Relu, if one follows); None when
    the convolution is not a "same" stride-1 one this packing covers. The border is exact: the
    padded NHWC image is filled with each channel's mean pixel."""
    out_c, channels, kh, kw = weights.shape
    height, width = hwc[0], hwc[1]
    if channels % 4 == 0:
        return None                     # the fast kernels take it as it is
    group = 2 if channels % 2 == 0 else 4
    top, left, bottom, right = pads
    if list(attribute(conv, "strides", [1, 1])) != [1, 1] or list(attribute(conv, "dilations", [1, 1])) != [1, 1] \
            or top + bottom != kh - 1 or left + right != kw - 1 or width % group or kw - 1 > group:
        return None
    # The unpacking goes after an elementwise Relu, so the quantizer still fuses Conv + Relu.
    following = users.get(conv.output[0], [])
    last = following[0] if len(following) == 1 and following[0].op_type == "Relu" else conv
    source = last.output[0]
    if source in {o.name for o in graph.output}:
        return None
    prefix = "toolkit_int8/pack/"
    padded_h, padded_w = height + kh - 1, width + group
    packed = np.zeros((group, out_c, group, channels, kh, 2))        # r, o, g, c, ky, jx
    for r in range(group):
        for g in range(group):
            for jx in range(2):
                dx = group * jx + g - r
                if 0 <= dx < kw:
                    packed[r, :, g, :, :, jx] = weights[:, :, :, dx]
    mask = np.ones((padded_h, padded_w, channels), bool)
    mask[top:top + height, left:left + width] = False
    pad_amounts = np.array([0, top, left, 0, 0, bottom, group - left, 0], np.int64)
    inits = [numpy_helper.from_array(pad_amounts, prefix + "pads"),
             numpy_helper.from_array(mask, prefix + "border"),
             numpy_helper.from_array(np.round(mean).astype(np.uint8), prefix + "fill"),
             numpy_helper.from_array(np.array([-1, padded_h, padded_w // group, group * channels], np.int64),
                                     prefix + "packed_shape"),
             numpy_helper.from_array(np.array([-1, height, width, out_c], np.int64), prefix + "unpacked_shape")]
    image = input_signature(graph)[0].name
    nodes = [helper.make_node("Pad", [image, prefix + "pads"], [prefix + "padded"], name=prefix + "pad"),
             helper.make_node("Where", [prefix + "border", prefix + "fill", prefix + "padded"], [prefix + "filled"],
                              name=prefix + "fill"),
             helper.make_node("Reshape", [prefix + "filled", prefix + "packed_shape"], [prefix + "nhwc"],
                              name=prefix + "reshape"),
             helper.make_node("Transpose", [prefix + "nhwc"], [PACKED], perm=[0, 3, 1, 2],
                              name=prefix + "transpose")]
    _set_ints(conv, "pads", [0, 0, 0, 0])
    _set_ints(conv, "kernel_shape", [kh, 2])
    # Shapes inferred by the pre-processing (the model carries them) do not fit the packed tensors.
    stale = {conv.output[0], source}
    kept_info = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    readers = [n for n in graph.node if source in n.input]
    for node in readers:
        node.input[:] = [prefix + "unpacked" if name == source else name for name in node.input]
    graph.node.extend([
        helper.make_node("Transpose", [source], [prefix + "out_nhwc"], perm=[0, 2, 3, 1], name=prefix + "out_nhwc"),
        helper.make_node("Reshape", [prefix + "out_nhwc", prefix + "unpacked_shape"], [prefix + "out_unpacked"],
                         name=prefix + "unpack"),
        helper.make_node("Transpose", [prefix + "out_unpacked"], [prefix + "unpacked"], perm=[0, 3, 1, 2],
                         name=prefix + "out_nchw")])
    return nodes, inits, packed.reshape(group * out_c, group * channels, kh, 2), np.tile(bias, group)


def _set_ints(node, name: str, values: list[int]) -> None:
    """Set an ints attribute of `node` where it has one (an absent one is inferred from the weights)."""
    for found in node.attribute:
        if found.name == name:
            found.ints[:] = values


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
    remove_nodes(graph, {quantize.output[0], cast.output[0], center.output[0]})


def drop_output_qdq(model: onnx.ModelProto) -> int:
    """Remove, in place, every QuantizeLinear → DequantizeLinear pair that only feeds a graph output,
    so the producer (e.g. a QGemm) writes float directly. Returns how many pairs were removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    users = consumers(graph)
    produced_by = {name: n for n in graph.node for name in n.output}
    renames: dict[str, str] = {}           # the producer's float output → the graph output's name
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] in outputs]:
        q = produced_by.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(users.get(q.output[0], [])) != 1:
            continue
        if q.input[0] in produced_by and len(users.get(q.input[0], [])) == 1 and q.input[0] not in outputs:
            renames[q.input[0]] = dq.output[0]
    remove_nodes(graph, {n.output[0] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                    and (n.input[0] in renames or n.output[0] in renames.values())})
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    return len(renames)


def drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Remove, in place, initializers no node reads (the scales of a dropped Q/DQ pair, a folded
    head's constants): onnxruntime warns about each one at every session start."""
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        return                          # a subgraph may read them by name
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
