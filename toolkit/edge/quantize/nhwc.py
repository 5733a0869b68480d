"""Layout rewrites of a QDQ graph for runtimes that run convolutions channels-last (NHWC): the
same function, laid out so the runtime's own layout cancels a copy. Never imports torch.

- `flatten_nhwc` (before quantization): the flatten before the first Gemm reads the pooled map in
  NHWC order, so onnxruntime's NHWC layout (and OpenVINO's, for static shapes) cancels its Transpose.
- `nhwc_input_head` (after quantization): the integer head's padding and DequantizeLinear move in
  front of the input's NHWC → NCHW Transpose, so the first convolution reads the image as it lies.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from toolkit.edge.onnxgraph import DeclaredTensor, attribute, consumers, remove_nodes, topological_sort
from toolkit.edge.quantize.recipe import uint8_image


def flatten_nhwc(model: onnx.ModelProto) -> int:
    """Rewrite, in place, each `x [N, C, H, W] → Reshape [N, C·H·W] → Gemm | MatMul (constant
    weights)` to flatten x in NHWC order: a Transpose (0, 2, 3, 1) before the Reshape, the weights'
    C·H·W axis permuted to H·W·C — the same function. onnxruntime runs the convolutions and pooling
    before it in NHWC and puts a Transpose back to NCHW in front of the Reshape; that Transpose and
    this one cancel, so the flatten reads the pooled map as it lies (a copy of the whole map fewer).
    Returns how many flattens were rewritten."""
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    users = consumers(graph)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    # Unknown dimensions read as 0, which no check below accepts.
    shapes = {v.name: [d or 0 for d in DeclaredTensor.of(v).sizes()] for v in [*inferred.value_info, *inferred.input]}
    done = 0
    for reshape in [n for n in graph.node if n.op_type == "Reshape"]:
        dims = shapes.get(reshape.input[0], [])
        following = users.get(reshape.output[0], [])
        if len(dims) != 4 or 0 in dims[1:] or dims[2] * dims[3] == 1 or reshape.input[1] not in consts \
                or len(following) != 1 or following[0].op_type not in ("Gemm", "MatMul"):
            continue
        channels, height, width = dims[1:]
        target = numpy_helper.to_array(consts[reshape.input[1]])
        matmul = following[0]
        weight = consts.get(matmul.input[1])
        if list(target)[1:] != [channels * height * width] or weight is None or matmul.input[0] != reshape.output[0] \
                or len(users.get(weight.name, [])) != 1 or attribute(matmul, "transA", 0):
            continue
        w = numpy_helper.to_array(weight)
        rows = matmul.op_type == "Gemm" and attribute(matmul, "transB", 0)      # [O, C·H·W], else [C·H·W, O]
        permuted = (w.reshape(-1, channels, height, width).transpose(0, 2, 3, 1).reshape(w.shape) if rows
                    else w.reshape(channels, height, width, -1).transpose(1, 2, 0, 3).reshape(w.shape))
        weight.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(permuted), weight.name))
        nhwc = f"toolkit_int8/flatten_{done}/nhwc"
        graph.node.append(helper.make_node("Transpose", [reshape.input[0]], [nhwc], perm=[0, 2, 3, 1],
                                           name=f"toolkit_int8/flatten_{done}"))
        reshape.input[0] = nhwc
        done += 1
    if done:
        topological_sort(graph)
    return done


def nhwc_input_head(model: onnx.ModelProto) -> bool:
    """Rewrite, in place, the quantized integer head `image (uint8 NHWC) → Transpose (0, 3, 1, 2)
    [→ Pad (H, W, with 0) → Where (border, fill)] → DequantizeLinear (one scale)` into
    `image [→ Pad → Reshape (flat) → Where (border, fill) → Reshape] → DequantizeLinear → Transpose`:
    the same function (the border holds the same fill), with the padding done on the image as it
    lies and the Transpose on the dequantized pixels. OpenVINO then runs the first convolution in
    int8 on the image itself: its layout cancels the Transpose (for static shapes), where the head
    before cost a Transpose, a reference-kernel Pad, a Select and a reorder back to NHWC — and with
    the Transpose right before the DequantizeLinear it would run that convolution in f32. The
    flattened Where keeps its vectors long (on 3 channels OpenVINO's Select is ~40× slower).
    False (model untouched) when the graph does not start that way."""
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    users = consumers(graph)
    found = uint8_image(graph)
    if found is None:
        return False
    image, hwc = found

    def only_user(name: str, op: str):
        following = users.get(name, [])
        ok = len(following) == 1 and following[0].op_type == op and name not in {o.name for o in graph.output}
        return following[0] if ok else None

    transpose = only_user(image.name, "Transpose")
    if transpose is None or list(attribute(transpose, "perm", [])) != [0, 3, 1, 2]:
        return False
    pad = only_user(transpose.output[0], "Pad")
    where = only_user(pad.output[0], "Where") if pad is not None else None
    last = where if where is not None else transpose
    dequantize = only_user(last.output[0], "DequantizeLinear")
    if dequantize is None or dequantize.input[0] != last.output[0] or (pad is not None and where is None) or any(
            name not in consts or numpy_helper.to_array(consts[name]).size != 1 for name in dequantize.input[1:]):
        return False
    height, width, channels = hwc
    nodes, inits, pixels, prefix = [], [], image.name, "toolkit_int8/nhwc/"
    if pad is not None and where is not None:
        padding = _nhwc_padding(pad, where, consts, (channels, height, width))
        if padding is None:
            return False
        (top, left, bottom, right), border_map = padding
        padded = (height + top + bottom, width + left + right, channels)
        inits = [numpy_helper.from_array(np.array([0, top, left, 0, 0, bottom, right, 0], np.int64), prefix + "pads"),
                 numpy_helper.from_array(np.array([-1, int(np.prod(padded))], np.int64), prefix + "flat"),
                 numpy_helper.from_array(np.array([-1, *padded], np.int64), prefix + "unflat"),
                 numpy_helper.from_array(border_map.reshape(-1) > 0, prefix + "border"),
                 numpy_helper.from_array(border_map.reshape(-1), prefix + "fill")]
        nodes = [helper.make_node("Pad", [image.name, prefix + "pads"], [prefix + "padded"], name=prefix + "pad"),
                 helper.make_node("Reshape", [prefix + "padded", prefix + "flat"], [prefix + "flat_padded"],
                                  name=prefix + "flatten"),
                 helper.make_node("Where", [prefix + "border", prefix + "fill", prefix + "flat_padded"],
                                  [prefix + "flat_filled"], name=prefix + "fill"),
                 helper.make_node("Reshape", [prefix + "flat_filled", prefix + "unflat"], [prefix + "filled"],
                                  name=prefix + "unflatten")]
        pixels = prefix + "filled"
    nchw = dequantize.output[0]
    dequantize.input[0], dequantize.output[0] = pixels, prefix + "pixels"
    remove_nodes(graph, {n.output[0] for n in (transpose, pad, where) if n is not None})     # copies the nodes
    nodes.append(helper.make_node("Transpose", [prefix + "pixels"], [nchw], perm=[0, 3, 1, 2], name=prefix + "nchw"))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    topological_sort(graph)
    return True


def _nhwc_padding(pad, where, consts: dict,
                  image: tuple[int, int, int]) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """(top, left, bottom, right) of an NCHW zero Pad of H and W only, and the uint8 [H', W', C] map
    of what `Where(border, fill, padded)` writes (0 where it keeps the padded image); None when the
    Pad and Where are not of that form (the border must lie outside the image: Pad wrote 0 there)."""
    if attribute(pad, "mode", b"constant") not in (b"constant", "constant") or pad.input[1] not in consts \
            or (len(pad.input) > 2 and pad.input[2] and (pad.input[2] not in consts
                                                       or numpy_helper.to_array(consts[pad.input[2]]).any())) \
            or len(pad.input) > 3 or where.input[2] != pad.output[0] \
            or where.input[0] not in consts or where.input[1] not in consts:
        return None
    pads = [int(p) for p in numpy_helper.to_array(consts[pad.input[1]])]
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        return None
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    border = numpy_helper.to_array(consts[where.input[0]])
    fill = numpy_helper.to_array(consts[where.input[1]])
    channels, height, width = image[0], image[1] + top + bottom, image[2] + left + right
    if border.dtype != bool or fill.dtype != np.uint8 or border.shape != (channels, height, width):
        return None
    inside = np.zeros_like(border)
    inside[:, top:height - bottom, left:width - right] = True
    try:
        fill_map = np.broadcast_to(fill, border.shape)
    except ValueError:
        return None
    if (border & inside).any():
        return None                     # Where would overwrite pixels of the image itself
    return (top, left, bottom, right), np.where(border, fill_map, 0).astype(np.uint8).transpose(1, 2, 0).copy()
