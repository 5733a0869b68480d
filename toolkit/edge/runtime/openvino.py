"""OpenVINO behind the toolkit's model interface: `open_model(path, "openvino")` returns an
OpenVINOModel, which infer, eval, generate, transform and bench use exactly like an onnxruntime
Model. Never imports torch.

Why the OpenVINO runtime itself and not onnxruntime's OpenVINO plugin: `onnxruntime-ep-openvino`
registers with the onnxruntime we ship but offers no device on AMD CPUs (a vendor check), and
`onnxruntime-openvino` replaces the `onnxruntime` module (losing CUDA). Once a plugin release
accepts these CPUs it becomes one more onnxruntime provider in sessions.py (its session options
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
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.edge.options import PRECISION_HINTS
from toolkit.edge.runtime.model import DEFAULT_CACHE, Model, ModelError, ProviderError
from toolkit.edge.runtime.streams import PLAIN, Feeds, Runner, Schedule

DEFAULT_HINT = "f32"
MAX_STATIC_SHAPES = 8
# What INFERENCE_PRECISION_HINT reads back as, per hint.
_HINT_TYPES = {"f32": "f32", "bf16": "bf16"}


@dataclass
class TensorInfo:
    """An input or output as onnxruntime's NodeArg shows it: `tensor(float)`, dims as int, str or None."""
    name: str
    type: str
    shape: list


@dataclass
class OpenVINOModel(Model):
    """A model compiled by OpenVINO's CPU plugin; `session` is the CompiledModel."""
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    precision_hint: str = DEFAULT_HINT
    compile_s: float = 0.0
    cache_hit: bool = False
    static_shapes: StaticShapes | None = None

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

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
            compiled = shapes.compiled_for(key) if shapes is not None else self.session
            if id(compiled) not in requests:
                requests[id(compiled)] = (compiled.create_infer_request(), list(compiled.outputs))
            request, ports = requests[id(compiled)]
            result = request.infer(feeds, share_inputs=True)
            return [np.asarray(result[port]) for port in ports]
        return Runner(self.schedule, [{} for _ in range(self.schedule.streams)], call)

    def runtime_precisions(self) -> dict[str, int]:
        """How many nodes of the compiled graph compute in each element type (u8, i8, bf16, f32, …)."""
        ops = self.session.get_runtime_model().get_ops()
        counts = Counter(str(op.get_rt_info()["runtimePrecision"].astype(str)) for op in ops
                         if str(op.get_rt_info()["layerType"].astype(str)) not in ("Const", "Input", "Output"))
        return dict(counts)


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


def _signature(proto) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (initializers excluded) and outputs, in onnxruntime's notation."""
    from onnx import TensorProto

    def info(value) -> TensorInfo:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        return TensorInfo(value.name, f"tensor({TensorProto.DataType.Name(tensor.elem_type).lower()})", dims)

    initializers = {t.name for t in proto.graph.initializer}
    inputs = [info(v) for v in proto.graph.input if v.name not in initializers]
    return inputs, [info(v) for v in proto.graph.output]


def open_openvino(path: str | Path, threads: int | None = None, precision_hint: str | None = None,
                  cache_dir: Path | None = None, schedule: Schedule = PLAIN) -> OpenVINOModel:
    """Compile an ONNX file for OpenVINO's CPU plugin or raise ProviderError / ModelError with a
    one-line message. One stream: the LATENCY hint (one request, all threads on it); more: the
    THROUGHPUT hint with exactly that many streams, the threads shared out among them."""
    import onnx

    hint = precision_hint or DEFAULT_HINT
    if hint not in PRECISION_HINTS:
        raise ProviderError(f"unknown precision hint {hint!r} (choose from {', '.join(PRECISION_HINTS)})")
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001  (protobuf raises its own DecodeError for a file that is not ONNX)
        raise ModelError(f"{path}: not an ONNX model ({str(exc).strip().splitlines()[0]})") from None
    ov = _ov()
    core = ov.Core()
    if "CPU" not in core.available_devices:
        raise ProviderError("provider 'openvino' was requested but OpenVINO offers no CPU device here; "
                            "refusing to fall back")
    cache = Path(cache_dir or DEFAULT_CACHE / "openvino")
    cache.mkdir(parents=True, exist_ok=True)
    before = set(cache.iterdir())
    config: dict[str, str | int] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint,
                                    "CACHE_DIR": str(cache)}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if schedule.streams > 1:
        config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=schedule.streams)
    start = time.perf_counter()
    try:
        compiled = core.compile_model(str(path), "CPU", config)
    except Exception as exc:  # noqa: BLE001  (OpenVINO raises several types with multi-line reports)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(exc).__name__)[:300]
        raise ProviderError(f"openvino: cannot compile {path.name} ({reason})") from None
    compile_s = time.perf_counter() - start
    devices = list(compiled.get_property("EXECUTION_DEVICES"))
    if devices != ["CPU"]:
        raise ProviderError(f"openvino compiled {path.name} for {', '.join(devices)}, not the CPU; refusing")
    streams = int(compiled.get_property("NUM_STREAMS"))
    if streams != schedule.streams:
        raise ProviderError(f"openvino: {schedule.streams} streams were requested but the CPU plugin made {streams}; "
                            "refusing")
    got = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    if got != _HINT_TYPES[hint]:
        raise ProviderError(f"openvino: {hint} was requested but the CPU plugin computes in {got} on this CPU; "
                            "refusing to substitute")
    inputs, outputs = _signature(proto)
    return OpenVINOModel(path=path, session=compiled, provider="openvino",
                         metadata={p.key: p.value for p in proto.metadata_props}, inputs=inputs, outputs=outputs,
                         schedule=schedule, precision_hint=hint, compile_s=compile_s,
                         cache_hit=not (set(cache.iterdir()) - before),
                         static_shapes=StaticShapes(core, path, config, compiled))
