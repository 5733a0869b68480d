"""OpenVINO behind the runtime interface: `open_model(path, "openvino")` returns an OpenVINOModel,
which infer, eval, generate, transform and bench use exactly like onnxruntime's. Never imports torch.

Why the OpenVINO runtime itself and not onnxruntime's OpenVINO plugin: `onnxruntime-ep-openvino`
registers with the onnxruntime we ship but offers no device on AMD CPUs (a vendor check), and
`onnxruntime-openvino` replaces the `onnxruntime` module (losing CUDA). Once a plugin release
accepts these CPUs it becomes one more onnxruntime provider in ort.py (its session options
take a `load_config` JSON per device), and callers of `open_model` see no difference.

Precision honesty: OpenVINO's CPU plugin computes float models in bf16 by default where the CPU
has AVX-512 BF16 or AMX — faster, and the results drift. We ask for f32 unless the caller asks
for bf16 (`precision_hint="bf16"`), and check after compiling that the plugin really computes
in what was asked and runs on the CPU; otherwise ProviderError, never a silent substitute.
Compiled models are cached (OpenVINO's CACHE_DIR) under the toolkit's cache folder.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.edge.options import PRECISION_HINTS
from toolkit.edge.runtime.model import (
    DEFAULT_CACHE,
    CompiledPrecisions,
    Model,
    OpenOptions,
    Placement,
    ProviderError,
    TensorSpec,
    numpy_dtype,
)
from toolkit.edge.runtime.streams import Feeds, Runner

DEFAULT_HINT = "f32"
MAX_STATIC_SHAPES = 8
# What INFERENCE_PRECISION_HINT reads back as, per hint.
_HINT_TYPES = {"f32": "f32", "bf16": "bf16"}


@dataclass(kw_only=True)
class OpenVINOModel(Model):
    """A model compiled by OpenVINO's CPU plugin."""
    compiled: Any = field(repr=False)          # the CompiledModel; OpenVINO's Python types are not exported
    precision_hint: str = DEFAULT_HINT
    compile_s: float = 0.0
    cache_hit: bool = False
    static_shapes: StaticShapes | None = None

    def make_runner(self) -> Runner:
        """Each stream holds its own infer requests (a request is never shared between threads), one
        per input shape it has run (see StaticShapes). share_inputs: OpenVINO reads the numpy buffers
        in place, as onnxruntime does; outputs are copied (the default), since a request reuses its
        output memory on the next call."""
        shapes = self.static_shapes

        def call(requests: dict, feeds: Feeds) -> list[np.ndarray]:
            # Keyed by the compile, not the shape: shapes past the bound share the dynamic compile's
            # request, so a stream holds at most MAX_STATIC_SHAPES + 1 requests.
            key = tuple((name, array.shape) for name, array in feeds.items())
            compiled = shapes.compiled_for(key) if shapes is not None else self.compiled
            if id(compiled) not in requests:
                requests[id(compiled)] = (compiled.create_infer_request(), list(compiled.outputs))
            request, ports = requests[id(compiled)]
            result = request.infer(feeds, share_inputs=True)
            return [np.asarray(result[port]) for port in ports]
        return Runner(self.schedule, [{} for _ in range(self.schedule.streams)], call)

    def runtime_precisions(self) -> list[str]:
        """The element type each compiled node computes in (u8, i8, bf16, f32, …), node by node."""
        ops = self.compiled.get_runtime_model().get_ops()
        return [str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in ops
                if str(op.get_rt_info()["layerType"].astype(str)) not in ("Const", "Input", "Output")]

    def placement(self) -> Placement:
        """OpenVINO compiles the whole graph for the CPU: its nodes per element type they compute in
        (`CPU u8`, `CPU f32`, …), which is where its precision choices show."""
        return CompiledPrecisions.of("CPU", self.runtime_precisions())

    def explain(self, exc: BaseException) -> str:
        return reason(exc)

    def cache_facts(self) -> dict[str, str]:
        return {"openvino_cache": "hit" if self.cache_hit else "miss"}


class StaticShapes:
    """The model compiled once more for each exact set of input shapes it is run with: OpenVINO's
    CPU plugin runs a static-shape model faster than the dynamic one (the paper CNN's int8 file
    1.08× at batch 256 and at micro-batches of 64, measured in one run), and a schedule's
    micro-batches repeat one shape. Made on first use of a shape (so a bench row's first run, not
    its timed runs, pays the compile), at most MAX_STATIC_SHAPES per model, never cached on disk;
    other shapes, or one that does not compile, run on the dynamic compile — the same computation."""

    def __init__(self, core, path: Path, config: dict, dynamic) -> None:
        self.core, self.path, self.dynamic = core, path, dynamic
        self.config = {k: v for k, v in config.items() if k != "CACHE_DIR"}
        self.compiled: dict = {}
        self.lock = threading.Lock()

    def compiled_for(self, key: tuple):
        with self.lock:
            if key not in self.compiled:
                if len(self.compiled) >= MAX_STATIC_SHAPES:
                    return self.dynamic
                self.compiled[key] = self._compile(dict(key))
            return self.compiled[key]

    def _compile(self, shapes: dict):
        try:
            model = self.core.read_model(str(self.path))
            model.reshape({name: list(shape) for name, shape in shapes.items()})
            return self.core.compile_model(model, "CPU", self.config)
        except Exception:  # noqa: BLE001  (a shape the graph cannot take statically: the dynamic compile runs it)
            return self.dynamic


def _ov():
    try:
        import openvino
    except ImportError:
        raise ProviderError("provider 'openvino' needs the openvino package (pip install 'toolkit[openvino]'); "
                            "refusing to fall back") from None
    return openvino


def version() -> str | None:
    """The installed OpenVINO's version, or None without it (never raises)."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.get_version()).split("-")[0]


def _signature(proto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Graph inputs (initializers excluded) and outputs, as the file declares them."""
    from toolkit.edge.onnxgraph import input_signature, output_signature

    def spec(declared) -> TensorSpec:
        return TensorSpec(declared.name, numpy_dtype(declared.dtype), declared.dims)

    return tuple(map(spec, input_signature(proto))), tuple(map(spec, output_signature(proto)))


def reason(exc: BaseException) -> str:
    """OpenVINO's report as one line: its first line that is not an `Exception from <file>:<line>:`
    location (the report names every C++ frame the error passed through before its message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not (line.startswith("Exception from ") and line.endswith(":"))]
    return (said or lines or [type(exc).__name__])[0]


def _config(hint: str, threads: int | None, streams: int, cache: Path) -> dict[str, str | int]:
    """One stream: the LATENCY hint (one request, all threads on it); more: the THROUGHPUT hint with
    exactly that many streams, the threads shared out among them."""
    config: dict[str, str | int] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                                    "CACHE_DIR": str(cache)}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if streams > 1:
        config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=streams)
    return config


def _check_compiled(compiled, name: str, hint: str, streams: int) -> None:
    """ProviderError unless the plugin really runs on the CPU, with the streams and the compute
    precision that were asked for."""
    devices = list(compiled.get_property("EXECUTION_DEVICES"))
    if devices != ["CPU"]:
        raise ProviderError(f"openvino compiled {name} for {', '.join(devices)}, not the CPU; refusing")
    made = int(compiled.get_property("NUM_STREAMS"))
    if made != streams:
        raise ProviderError(f"openvino: {streams} streams were requested but the CPU plugin made {made}; refusing")
    got = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    if got != _HINT_TYPES[hint]:
        raise ProviderError(f"openvino: {hint} was requested but the CPU plugin computes in {got} on this CPU; "
                            "refusing to substitute")


def open_runtime(path: Path, provider: str, model_file, options: OpenOptions) -> OpenVINOModel:
    """Compile an ONNX file for OpenVINO's CPU plugin or raise ProviderError with a one-line
    message. `model_file`: the file as modelfile.check_model_file read it."""
    hint = options.precision_hint or DEFAULT_HINT
    if hint not in PRECISION_HINTS:
        raise ProviderError(f"unknown precision hint {hint!r} (choose from {', '.join(PRECISION_HINTS)})")
    core = _ov().Core()
    if "CPU" not in core.available_devices:
        raise ProviderError("provider 'openvino' was requested but OpenVINO offers no CPU device here; "
                            "refusing to fall back")
    cache = Path(options.cache_dir or DEFAULT_CACHE / "openvino")
    cache.mkdir(parents=True, exist_ok=True)
    before = set(cache.iterdir())
    schedule = options.schedule
    config = _config(hint, options.threads, schedule.streams, cache)
    start = time.perf_counter()
    try:
        compiled = core.compile_model(str(path), "CPU", config)
    except Exception as exc:  # noqa: BLE001  (OpenVINO raises several types with multi-line reports)
        raise ProviderError(f"openvino: cannot compile {path.name} ({reason(exc)})") from None
    compile_s = time.perf_counter() - start
    _check_compiled(compiled, path.name, hint, schedule.streams)
    inputs, outputs = _signature(model_file.proto)
    return OpenVINOModel(path=path, provider=provider, inputs=inputs, outputs=outputs,
                         metadata=model_file.metadata, schedule=schedule, compiled=compiled, precision_hint=hint,
                         compile_s=compile_s, cache_hit=not (set(cache.iterdir()) - before),
                         static_shapes=StaticShapes(core, path, config, compiled))
