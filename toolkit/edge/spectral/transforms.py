"""The transform stage: FFT low-pass, FFT spectrum and Walsh–Hadamard compression of images.

    toolkit transform photo.jpg --op fft-lowpass --radius 0.3 --out out/ --compare
    toolkit transform a.png b.png --op walsh-compress --keep 0.25 --out out/
    toolkit transform photo.jpg --op fft-spectrum --out spectrum.png

The op math and its float64 reference live in `toolkit.edge.spectral.ops`, the ONNX graphs in
`toolkit.edge.spectral.graphs` (onnx.helper, no torch). This module holds
- `export_transform`: a transform ONNX file under the artifact contract, gated against the
  float64 reference before it is renamed into place;
- `cached_transform`: the graph an op needs for an image size, built on first use and cached
  under $TOOLKIT_CACHE/transforms (default ~/.cache/toolkit/transforms). The file name carries a
  hash of the request and of the code that builds graphs (a code change never reuses a stale
  graph) and a hash of the file's bytes (a corrupt file is detected and rebuilt); the cache keeps
  at most CACHE_MAX_FILES files and CACHE_MAX_BYTES bytes, least recently used evicted;
- `run_transform`, what the CLI calls: every input on its own, one error line per bad one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from toolkit.edge import contract
from toolkit.edge.contract import ExportError, run_onnx
from toolkit.edge.data.fsio import InputError, PathIndex, read_regular_file
from toolkit.edge.errors import first_line, shown
from toolkit.edge.spectral import graphs as spectral_graphs
from toolkit.edge.spectral import ops
from toolkit.edge.spectral.graphs import INPUT_NAME, OUTPUT_NAME  # noqa: F401
from toolkit.edge.spectral.ops import (  # noqa: F401  (the public API of the transform stage)
    FORMS,
    IMAGE_OPS,
    MAX_DFT_PIXELS,
    MAX_MATMUL_SIDE,
    OP_PARAMETER,
    TransformError,
    check_op,
    check_size,
    describe,
    is_power_of_two,
    lowpass_mask,
    parse_preprocess,
    reference,
    reference_inverse_walsh,
    reference_lowpass,
    reference_spectrum,
    reference_walsh,
    reference_walsh_compress,
    sequency_hadamard,
    walsh_keep,
)

CACHE_MAX_FILES = 64
CACHE_MAX_BYTES = 256 * 2**20
OPEN_SESSIONS = 4            # matmul graphs are per size; keep only a few sessions alive at once
GATE_SMALL_PIXELS = 512 * 512
# The dft graph serves every size; besides the size asked for, it is gated at a non-square size
# and at 48×40, where radius 0.3 puts bins exactly on the cut-off circle (6/40, 3/20 … cycles/px).
DFT_GATE_SIZES = ((35, 38), (48, 40))


# ----------------------------------------------------------------------------- parity gate

def parity_images(size: tuple[int, int], n: int = 4, seed: int = 0) -> np.ndarray:
    """Test images for the parity gate: uniform noise (every frequency present) plus smooth
    ramps that push the output against 0 and 255, where the clip matters."""
    rng = np.random.default_rng(seed)
    h, w = size
    noise = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, h * w * 3).reshape(1, h, w, 3)
    ramps = np.concatenate([ramp, 255 - ramp]).round().astype(np.uint8)
    return np.concatenate([noise, ramps])


def gate_images(size: tuple[int, int]) -> np.ndarray:
    """What the gate runs at `size`: four noise images and both ramps, or one noise image and
    one ramp above 512×512 px, so that gating a 2048² graph stays within a few hundred MB."""
    if size[0] * size[1] <= GATE_SMALL_PIXELS:
        return parity_images(size)
    return parity_images(size, n=1)[:2]


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


# ----------------------------------------------------------------------------- building and writing

def transform_graph(op: str, params: dict, form: str, size: tuple[int, int]) -> onnx.ModelProto:
    """The contract model of an op (graph + metadata), not yet gated."""
    params = check_op(op, params, form, size)
    proto = spectral_graphs.build_graph(op, params, form, size)
    contract.set_metadata(proto, task="transform", model=op, precision="fp32", op=op,
                 params=json.dumps(params, sort_keys=True), form=form,
                 size="any" if form == "dft" else f"{size[0]}x{size[1]}")
    contract.check_contract(proto)
    return proto


def _gate(op: str, params: dict, form: str, size: tuple[int, int]) -> Callable[[Path], None]:
    sizes = [size] if form == "matmul" else [size, *DFT_GATE_SIZES]

    def gate(path: Path) -> None:
        for gate_size in sizes:
            images = gate_images(gate_size)
            error = parity_error(op, params, run_onnx(path, images), images)
            if not error <= PARITY_LIMIT[op]:
                raise ExportError(f"{describe(op, params)} ({form}) differs from the float64 reference "
                                     f"by {error:.3g} at {gate_size[0]}×{gate_size[1]} "
                                     f"(limit {PARITY_LIMIT[op]:g})")
    return gate


def export_transform(op: str, params: dict, form: str, size: tuple[int, int], out: str | os.PathLike) -> Path:
    """Write the ONNX file of an op under the transform contract and gate it against the
    float64 reference (≤ 1 grey level; spectrum ≤ 1e-4 relative). Raises TransformError for a
    bad request, contract.ExportError for a failed gate (no file is left at `out` then).

    form 'matmul': input uint8 [N, H, W, 3] with H×W = `size`, no DFT node.
    form 'dft': input uint8 [N, H, W, 3] with any H, W; gated at `size` and DFT_GATE_SIZES."""
    size = (int(size[0]), int(size[1]))
    params = check_op(op, params, form, size)
    return contract.write_model(transform_graph(op, params, form, size), out, gate=_gate(op, params, form, size))


# ----------------------------------------------------------------------------- cache

def cache_dir() -> Path:
    root = os.environ.get("TOOLKIT_CACHE") or Path.home() / ".cache" / "toolkit"
    return Path(root) / "transforms"


@functools.cache
def _builder_digest() -> str:
    """A hash of everything that decides a graph's bytes: the code that builds it and writes its
    metadata, the package and onnx versions."""
    from toolkit._version import __version__
    h = hashlib.sha256(f"{__version__} onnx {onnx.__version__}".encode())
    for file in (ops.__file__, spectral_graphs.__file__, __file__, contract.__file__):
        h.update(Path(file).read_bytes())
    return h.hexdigest()


def cache_key(op: str, params: dict, form: str, size: tuple[int, int]) -> str:
    """The content-hash key of a cached graph (the dft form serves every size: no size in it)."""
    request = {"op": op, "params": params, "form": form,
               "size": "any" if form == "dft" else [int(size[0]), int(size[1])], "builder": _builder_digest()}
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _cached_file(prefix: str) -> Path | None:
    """The intact cache file whose name starts with `prefix`; files whose bytes do not match the
    hash in their name (truncated, overwritten, half-copied) are deleted."""
    for path in sorted(cache_dir().glob(f"{prefix}_*.onnx")):
        try:
            data = read_regular_file(path, CACHE_MAX_BYTES)
        except InputError:
            data = b""
        if path.stem.rsplit("_", 1)[-1] == _digest(data):
            os.utime(path)                                  # recently used: evicted last
            return path
        path.unlink(missing_ok=True)
    return None


def evict(keep: Path | None = None) -> None:
    """Delete the least recently used graphs until the cache holds ≤ CACHE_MAX_FILES files and
    ≤ CACHE_MAX_BYTES bytes, and temp files that a killed process left behind an hour ago."""
    now = time.time()
    entries = []
    for path in cache_dir().iterdir() if cache_dir().is_dir() else []:
        try:
            info = path.lstat()
        except OSError:
            continue
        if path.name.startswith(".") and path.name.endswith(".tmp") and now - info.st_mtime > 3600:
            path.unlink(missing_ok=True)
        elif path.suffix == ".onnx" and path.is_file() and path != keep:
            entries.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in entries) + (keep.stat().st_size if keep and keep.is_file() else 0)
    count = len(entries) + (1 if keep and keep.is_file() else 0)
    for _, size, path in sorted(entries):
        if count <= CACHE_MAX_FILES and total <= CACHE_MAX_BYTES:
            break
        path.unlink(missing_ok=True)
        count, total = count - 1, total - size


def cached_transform(op: str, params: dict, form: str, size: tuple[int, int]) -> Path:
    """The ONNX file for an op at `size`, built and gated on first use. The dft form serves
    every size (it is built and gated once, at 32×32 and DFT_GATE_SIZES)."""
    size = (int(size[0]), int(size[1]))
    params = check_op(op, params, form, size)
    if form == "dft":
        size = (32, 32)
    shape = "any" if form == "dft" else f"{size[0]}x{size[1]}"
    prefix = f"{op}_{form}_{shape}_{cache_key(op, params, form, size)}"
    path = _cached_file(prefix)
    if path is None:
        proto = contract.prune_opsets(transform_graph(op, params, form, size))
        # write_model serialises the same message, so the file's bytes hash to the name's digest.
        path = cache_dir() / f"{prefix}_{_digest(proto.SerializeToString())}.onnx"
        contract.write_model(proto, path, gate=_gate(op, params, form, size))
        evict(keep=path)
    return path


# ----------------------------------------------------------------------------- running on files

def default_form(op: str, provider: str) -> str:
    """DFT on CPU for the Fourier ops (one graph for every size, O(n log n)); MatMul elsewhere,
    since onnxruntime has no GPU kernel for DFT and TensorRT rejects it (the provider table's `dft`)."""
    from toolkit.edge.runtime import provider_facts

    return "dft" if op != "walsh-compress" and provider_facts(provider).dft else "matmul"


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


def compare_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.compare.png")


def _png_names(sources: list[Path], compare: bool) -> list[str]:
    """<stem>.png per source, de-duplicated by a counter (and kept clear of the .compare.png
    names when those are written too); each stem's counter resumes where it stopped."""
    taken: set[str] = set()
    counters: dict[str, int] = {}
    names = []
    for source in sources:
        name, n = f"{source.stem}.png", counters.get(source.stem, 1)
        if n > 1:
            name = f"{source.stem}-{n}.png"
        while name in taken or (compare and f"{Path(name).stem}.compare.png" in taken):
            n += 1
            name = f"{source.stem}-{n}.png"
        counters[source.stem] = n
        taken.update({name, f"{Path(name).stem}.compare.png"} if compare else {name})
        names.append(name)
    return names


def output_paths(sources: list[Path], out: Path, compare: bool = False) -> list[Path]:
    """One input and an image-file name: that file. Otherwise `out` is a folder receiving
    <stem>.png (PNG: lossless, so the result is not re-compressed), de-duplicated by a counter.
    A destination that is (or resolves to) one of the inputs is refused: it would destroy it."""
    from toolkit.edge.data.images import is_image_name

    if len(sources) == 1 and is_image_name(out) and not out.is_dir():
        paths = [out]
    elif is_image_name(out) and not out.is_dir():
        raise TransformError(f"--out {shown(out)} names one file, but {len(sources)} images were given; "
                             "give a folder")
    else:
        paths = [out / name for name in _png_names(sources, compare)]
    inputs = PathIndex(sources)
    for destination in paths + ([compare_path(p) for p in paths] if compare else []):
        source = inputs.find(destination)
        if source is not None:
            raise TransformError(f"--out would overwrite the input {shown(source)}; "
                                 "write the results somewhere else")
    return paths


class _Sessions:
    """The sessions of the graphs in use, at most OPEN_SESSIONS at once (least recently used closed)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.open: OrderedDict[Path, Any] = OrderedDict()

    def get(self, path: Path) -> Any:
        from toolkit.edge.runtime import open_model
        if path in self.open:
            self.open.move_to_end(path)
        else:
            self.open[path] = open_model(path, self.provider)
            while len(self.open) > OPEN_SESSIONS:
                self.open.popitem(last=False)
        return self.open[path]


def _transform_one(source: Path, destination: Path, op: str, params: dict, form: str, compare: bool,
                   sessions: _Sessions) -> Written:
    from toolkit.edge.data.images import MAX_FILE_BYTES, decode_image, make_grid, save_image

    # Only regular files, and never more than the byte limit: a FIFO or /dev/zero cannot stall the call.
    image = decode_image(read_regular_file(source, MAX_FILE_BYTES), shown(source))
    try:
        check_size(op, form, image.shape[:2])
    except TransformError as exc:
        raise TransformError(f"{shown(source)}: {exc} (crop or resize it first)") from None
    model = sessions.get(cached_transform(op, params, form, image.shape[:2]))
    result = model.run(image[None])[0]
    picture = spectrum_picture(result) if op == "fft-spectrum" else result
    written = Written(source, save_image(picture, destination))
    if compare:
        written.compare = save_image(make_grid(np.stack([image, picture]), ncols=2), compare_path(destination))
    return written


def run_transform(inputs: Sequence[str | os.PathLike], op: str, params: dict, out: str | os.PathLike,
                  form: str | None = None, compare: bool = False, provider: str = "cpu",
                  on_written: Callable[[Written], None] | None = None,
                  on_error: Callable[[str], None] | None = None) -> int:
    """Transform image files (folders expanded) and write the results; returns how many failed.

    Each input is handled on its own: a bad one (unreadable, not a regular file, not an image,
    over a size limit, or failing in onnxruntime) is reported through `on_error` in one line and
    the rest are still processed. Raises TransformError for a bad request (before any input is
    read) and sessions.ProviderError when the provider cannot run here."""
    from toolkit.edge.data.images import expand_inputs
    from toolkit.edge.runtime import ProviderError

    form = form or default_form(op, provider)
    params = check_op(op, params, form)
    failed = 0

    def unlisted(message: str) -> None:
        nonlocal failed
        failed += 1
        if on_error is not None:
            on_error(message)

    sources = expand_inputs(list(inputs), on_error=unlisted)
    if not sources:
        raise TransformError("no input images")
    destinations = output_paths(sources, Path(out), compare)
    sessions = _Sessions(provider)
    for source, destination in zip(sources, destinations):
        try:
            written = _transform_one(source, destination, op, params, form, compare, sessions)
        except ProviderError:
            raise
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types; the failure is this input's)
            failed += 1
            message = first_line(exc)
            if shown(source) not in message:
                message = f"{shown(source)}: {message}"
            if on_error is not None:
                on_error(message)
            continue
        if on_written is not None:
            on_written(written)
    return failed
