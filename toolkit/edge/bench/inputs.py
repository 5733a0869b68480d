"""What a benchmark feeds a model: its declared signature, the shapes resolved from `--shape` and
`--batch-size`, and the arrays — real images for a contract classifier, standard-normal latents
for a generator, and for any other ONNX file inputs synthesised from the declared dtypes.

Synthesised values: uint8 uniform over 0–255 (image pixels); other integer types small
non-negative ids 0–9 (valid indices for an embedding or a gather); floats standard normal; bool
fair coin flips; strings the decimal digits 0–9. Everything is seeded, so two runs feed the same.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import toolkit.zoo as zoo

SEED = 0
BUFFER_BYTES = 8 << 20             # rotating inputs span more than a core's L2, so no run finds its input hot
MIN_BUFFERS, MAX_BUFFERS = 8, 4096
SMALL_INT_HIGH = 10                # synthesised integer ids are drawn from [0, SMALL_INT_HIGH)
# Element types onnxruntime takes from numpy, by the ONNX name (TensorProto.DataType, lower case).
NUMPY_TYPES = {
    "float": np.float32, "float16": np.float16, "double": np.float64, "bool": np.bool_, "string": np.object_,
    "uint8": np.uint8, "int8": np.int8, "uint16": np.uint16, "int16": np.int16,
    "uint32": np.uint32, "int32": np.int32, "uint64": np.uint64, "int64": np.int64,
}


class BenchError(RuntimeError):
    """A benchmark that cannot be run as asked; the message is one line for the user."""


@dataclass(frozen=True)
class TensorSpec:
    """A graph input as declared: dims are ints (fixed), strings (symbolic) or None (unknown)."""
    name: str
    dtype: str
    dims: tuple[int | str | None, ...]

    def describe(self, shape: tuple[int, ...] | None = None) -> str:
        dims = shape if shape is not None else self.dims
        return f"{self.name} {self.dtype} [{', '.join('?' if d is None else str(d) for d in dims)}]"


@dataclass
class InputPool:
    """Items to draw batches from (one input's worth each), with labels where there are any."""
    items: np.ndarray
    source: str
    labels: np.ndarray | None = None
    class_names: list[str] | None = None


def report_path(path: str | os.PathLike) -> str:
    """A path as reports show it: relative to the working directory when inside it, so committed
    results do not carry one machine's folder layout."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


# ----------------------------------------------------------------------------- signatures and shapes

def signature(proto) -> list[TensorSpec]:
    """The inputs a caller must feed: graph inputs that are not initializers, in declared order."""
    from toolkit.edge.onnxgraph import input_signature

    return [TensorSpec(t.name, t.dtype, t.dims) for t in input_signature(proto)]


def parse_shapes(options: list[str]) -> dict[str, tuple[int, ...]]:
    """`--shape NAME=DIMS` values (DIMS like 8x3x224x224, or 8,3,224,224) → {name: dims}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for option in options:
        name, sep, dims = option.rpartition("=")
        parts = re.split(r"[x,]", dims.strip().lower()) if dims.strip() else []
        if not sep or not name or not parts or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise BenchError(f"--shape {option!r}: expected NAME=DIMS with positive sizes, e.g. input=8x3x224x224")
        if name in shapes:
            raise BenchError(f"--shape names {name!r} twice")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes


def resolve_shapes(specs: list[TensorSpec], shapes: dict[str, tuple[int, ...]], batch_size: int,
                   what: str) -> dict[str, tuple[int, ...]]:
    """Concrete shapes for every input: `shapes` (from --shape) first, then a dynamic first dimension
    takes `batch_size`; a symbolic dimension resolved once holds for every input that names it.
    A dimension still unresolved is an error that names it."""
    by_name = {s.name: s for s in specs}
    unknown = [name for name in shapes if name not in by_name]
    if unknown:
        raise BenchError(f"{what}: --shape names {unknown[0]!r}, which is not an input "
                         f"(inputs: {', '.join(by_name) or 'none'})")
    symbols: dict[str, int] = {}
    resolved: dict[str, tuple[int, ...]] = {}
    for spec in sorted(specs, key=lambda s: s.name not in shapes):
        given = shapes.get(spec.name)
        if given is not None:
            if len(given) != len(spec.dims):
                raise BenchError(f"{what}: --shape {spec.name} has {len(given)} dimensions, the input has "
                                 f"{len(spec.dims)} ({spec.describe()})")
            for axis, (want, have) in enumerate(zip(spec.dims, given)):
                if isinstance(want, int) and want != have:
                    raise BenchError(f"{what}: --shape {spec.name} gives dimension {axis} as {have}, the model "
                                     f"fixes it at {want}")
                if isinstance(want, str) and symbols.setdefault(want, have) != have:
                    raise BenchError(f"{what}: dimension {want!r} is {symbols[want]} elsewhere, "
                                     f"--shape {spec.name} gives {have}")
            resolved[spec.name] = given
            continue
        dims = []
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, int):
                dims.append(dim)
            elif isinstance(dim, str) and dim in symbols:
                dims.append(symbols[dim])
            elif axis == 0:
                dims.append(batch_size)
                if isinstance(dim, str):
                    symbols[dim] = batch_size
            else:
                label = f" ({dim!r})" if dim else ""
                raise BenchError(f"{what}: input {spec.name!r} dimension {axis}{label} is dynamic; "
                                 f"give it with --shape {spec.name}=DIMS")
        resolved[spec.name] = tuple(dims)
    return {s.name: resolved[s.name] for s in specs}


def batch_of(specs: list[TensorSpec], shapes: dict[str, tuple[int, ...]]) -> int:
    """The batch a row reports: the first input's first dimension (1 for a scalar input)."""
    first = shapes[specs[0].name] if specs else ()
    return int(first[0]) if first else 1


# ----------------------------------------------------------------------------- real and synthesised data

def image_pool(size: tuple[int, int], data: Path | None) -> InputPool:
    """Real images at `size`: the validation part of `data` (fixed split), else the sample images
    in models/samples, else uniform noise — and the report says which."""
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.data.images import ImageError, list_images, load_image, resize

    if data is not None:
        skipped: list[str] = []
        try:
            split = read_split(data, "val", size, on_error=skipped.append)
        except (FileNotFoundError, ValueError) as exc:
            raise BenchError(f"--data: {exc}") from None
        note = f"; {len(skipped)} unreadable files skipped" if skipped else ""
        return InputPool(split.images, f"{len(split)} validation images of {report_path(data)} (fixed split){note}",
                         split.labels, list(split.class_names))
    samples = zoo.MODELS_DIR / "samples"
    images = []
    if samples.is_dir():
        for path in list_images(samples):
            try:
                images.append(resize(load_image(path), *size))
            except ImageError:
                continue
    if images:
        return InputPool(np.stack(images), f"the {len(images)} sample images in {report_path(samples)}")
    noise = np.random.default_rng(SEED).integers(0, 256, (256, *size, 3), dtype=np.uint8)
    return InputPool(noise, "uniform random pixels (no --data given and no images in models/samples)")


def latent_pool(dim: int) -> InputPool:
    z = np.random.default_rng(SEED).standard_normal((4096, dim)).astype(np.float32)
    return InputPool(z, f"standard-normal z of size {dim} (seed {SEED})")


def buffer_count(batch_bytes: int) -> int:
    """How many distinct batches span BUFFER_BYTES, within [MIN_BUFFERS, MAX_BUFFERS]."""
    return int(np.clip(np.ceil(BUFFER_BYTES / max(batch_bytes, 1)), MIN_BUFFERS, MAX_BUFFERS))


def rotating_buffers(pool: np.ndarray, batch_size: int, seed: int = SEED) -> list[np.ndarray]:
    """Distinct contiguous batches drawn from `pool`: enough of them to span BUFFER_BYTES, so a run
    does not find its input still in cache from a recent run."""
    rng = np.random.default_rng(seed)
    count = buffer_count(pool[0].nbytes * batch_size)
    return [np.ascontiguousarray(pool[rng.choice(len(pool), batch_size, replace=len(pool) < batch_size)])
            for _ in range(count)]


def synthesise(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One array of an ONNX element type, filled as the module docstring says."""
    if dtype not in NUMPY_TYPES:
        raise BenchError(f"cannot synthesise {dtype} inputs: onnxruntime takes no {dtype} array from numpy "
                         f"(feedable: {', '.join(NUMPY_TYPES)})")
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype in ("float", "float16", "double"):
        return rng.standard_normal(shape, dtype=np.float32).astype(NUMPY_TYPES[dtype])
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "string":
        return rng.integers(0, SMALL_INT_HIGH, shape).astype(str).astype(object)
    return rng.integers(0, SMALL_INT_HIGH, shape).astype(NUMPY_TYPES[dtype])


def synthesised_feeds(specs: list[TensorSpec], shapes: dict[str, tuple[int, ...]],
                      seed: int = SEED) -> list[dict[str, np.ndarray]]:
    """Distinct feeds (one array per input each), enough of them to span BUFFER_BYTES."""
    rng = np.random.default_rng(seed)
    first = {s.name: synthesise(s.dtype, shapes[s.name], rng) for s in specs}
    count = buffer_count(sum(a.nbytes if a.dtype != object else a.size * 8 for a in first.values()))
    return [first] + [{s.name: synthesise(s.dtype, shapes[s.name], rng) for s in specs} for _ in range(count - 1)]


def synthesised_source(specs: list[TensorSpec], shapes: dict[str, tuple[int, ...]]) -> str:
    """What a report says about synthesised inputs (shapes without the batch, which the row shows)."""
    kinds = {"uint8": "uniform 0–255", "float": "standard normal", "float16": "standard normal",
             "double": "standard normal", "bool": "random bool", "string": "digit strings"}
    parts = [f"{s.name} {s.dtype} [{'×'.join(map(str, shapes[s.name]))}] "
             f"{kinds.get(s.dtype, f'integers 0–{SMALL_INT_HIGH - 1}')}" for s in specs]
    return f"synthesised (seed {SEED}): " + "; ".join(parts)


# ----------------------------------------------------------------------------- model facts

def guess_precision(proto) -> str:
    """`toolkit.precision` where the file says it; else int8 for a quantized graph, fp16 when the
    weights are half precision, fp32 otherwise (a foreign file has no such metadata)."""
    from onnx import TensorProto

    meta = {p.key: p.value for p in proto.metadata_props}
    if "toolkit.precision" in meta:
        return meta["toolkit.precision"]
    ops = {n.op_type for n in proto.graph.node}
    if ops & {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        return "int8"
    types = [t.data_type for t in proto.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    return "fp16" if types and types.count(TensorProto.FLOAT16) > len(types) / 2 else "fp32"


def multiply_adds(proto, shapes: dict[str, tuple[int, ...]] | None = None) -> int | None:
    """Multiply-adds of one run of Conv, ConvTranspose, MatMul and Gemm nodes at the given input
    shapes (default: a dynamic first dimension set to 1), or None if some shape stays unknown.
    Works on fp32, fp16 and QDQ graphs alike."""
    import onnx

    from toolkit.edge.onnxgraph import DeclaredTensor

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if shapes and value.name in shapes:
            for dim, size in zip(dims, shapes[value.name]):
                dim.dim_value = size
        elif dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # noqa: BLE001  (shape inference rejects some foreign graphs; the count is then unknown)
        return None
    known = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        known[value.name] = DeclaredTensor.of(value).sizes()

    def shape(name: str) -> list[int]:
        s = known.get(name)
        if s is None or None in s:
            raise LookupError(name)
        return s

    total = 0
    try:
        for node in graph.node:
            if node.op_type == "Conv":
                total += int(np.prod(shape(node.output[0]))) * int(np.prod(shape(node.input[1])[1:]))
            elif node.op_type == "ConvTranspose":
                total += int(np.prod(shape(node.input[0]))) * int(np.prod(shape(node.input[1])[1:]))
            elif node.op_type in ("MatMul", "Gemm"):
                a = shape(node.input[0])
                inner = a[-2] if node.op_type == "Gemm" and any(
                    at.name == "transA" and at.i for at in node.attribute) else a[-1]
                total += int(np.prod(shape(node.output[0]))) * inner
    except LookupError:
        return None
    return total or None
