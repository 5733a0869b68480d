"""The runtime interface: what every runtime's opened model is and does, in the toolkit's own terms.
Never imports torch.

A Model says what it takes and gives (TensorSpec: name, numpy dtype, shape), runs feeds by its
schedule (streams.py), says where its nodes run (Placement), which runtime and provider it is, and
what the benchmark needs to time it. Each runtime implements it once (ort.py: onnxruntime with its
CPU, CUDA and TensorRT providers; openvino.py: the OpenVINO runtime); `open.open_model` picks the
runtime by provider (registry.py). Callers never see a session object.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import toolkit.edge.runtime.gpu as gpu
from toolkit.edge.errors import first_line
from toolkit.edge.runtime.registry import ProviderError, provider_is_cpu_side, runtime_of
from toolkit.edge.runtime.streams import PLAIN, Feeds, Runner, Schedule

DEFAULT_CACHE = Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "toolkit"))

__all__ = ["DEFAULT_CACHE", "CompiledPrecisions", "Model", "ModelError", "OpenOptions", "Placement",
           "ProviderError", "TensorSpec", "int8_target", "numpy_dtype"]


class ModelError(ValueError):
    """The file is not a usable toolkit ONNX model."""


# ONNX element type names (TensorProto.DataType, lower case; onnxruntime writes `tensor(<name>)`)
# that differ from numpy's dtype names.
_ONNX_TO_NUMPY = {"float": "float32", "double": "float64", "string": "str"}


def numpy_dtype(onnx_type: str) -> str:
    """`tensor(float)` or `float` → `float32`; `uint8` → `uint8`."""
    name = onnx_type.removeprefix("tensor(").removesuffix(")").lower()
    return _ONNX_TO_NUMPY.get(name, name)


@dataclass(frozen=True)
class TensorSpec:
    """An input or output: `dtype` a numpy dtype name (`uint8`, `float32`, …), each dim an int
    (fixed), a str (symbolic) or None (unknown)."""
    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@dataclass
class Placement:
    """Where a model's nodes run. `nodes`: place → nodes (those inside a compiled subgraph counted one
    by one); `subgraphs`: place → subgraphs it compiled (TensorRT engines); `compute`: place → its
    compute nodes as `OpType name`. A place is an onnxruntime provider's short name (`CPU`, `CUDA`,
    `Tensorrt`) or, for OpenVINO, the device and the element type its nodes compute in (`CPU u8`)."""
    requested: str
    nodes: dict[str, int]
    subgraphs: dict[str, int] = field(default_factory=dict)
    compute: dict[str, list[str]] = field(default_factory=dict)

    @property
    def elsewhere(self) -> list[str]:
        return [f"{node} on {where}" for where, names in self.compute.items() if where != self.requested
                for node in names]

    @property
    def complete(self) -> bool:
        """Every compute node on the requested provider, and that provider runs something."""
        return not self.elsewhere and self.nodes.get(self.requested, 0) > 0

    def facts(self) -> dict:
        return {"placement": self.nodes, "placement_subgraphs": self.subgraphs,
                "compute_nodes": {p: len(names) for p, names in self.compute.items()},
                "compute_elsewhere": self.elsewhere, "placement_ok": self.complete}


@dataclass
class CompiledPrecisions(Placement):
    """A runtime that compiles the whole graph for one device (OpenVINO): what varies is the element
    type each compiled node computes in, so `nodes` counts them per `<device> <type>`."""

    @classmethod
    def of(cls, device: str, counts: Iterable[str]) -> CompiledPrecisions:
        return cls(device, {f"{device} {kind}": n for kind, n in sorted(Counter(counts).items())})

    @property
    def complete(self) -> bool:
        return True

    def facts(self) -> dict:
        return {"placement": self.nodes, "placement_ok": True}


@dataclass(frozen=True)
class OpenOptions:
    """How to open a model, beyond its path and provider (open.open_model checks which apply).
    `threads`: intra-op threads (None: the runtime's default; shared out among a schedule's
    streams). `shapes`: the input shapes an engine-per-shape provider builds for. `trt_fp16`: let
    TensorRT pick fp16 kernels (an fp16 file). `precision_hint`: compute precision of float models."""
    threads: int | None = None
    schedule: Schedule = PLAIN
    precision_hint: str | None = None
    cache_dir: Path | None = None
    shapes: dict[str, tuple[int, ...]] | None = None
    trt_fp16: bool = False
    device_id: int = 0


@dataclass(kw_only=True)
class Model(ABC):
    """An ONNX file opened for inference on one provider, with what its metadata says."""
    path: Path
    provider: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict = field(default_factory=dict)
    schedule: Schedule = PLAIN
    # Every run goes through one Runner (streams.py); with the plain schedule, one call.
    runner: Runner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runner = self.make_runner()

    @abstractmethod
    def make_runner(self) -> Runner:
        """The Runner that executes feeds on this runtime by the model's schedule."""

    @abstractmethod
    def placement(self) -> Placement:
        """Where the nodes run, as the runtime reports it after loading."""

    # ------------------------------------------------------------------ identity
    @property
    def runtime(self) -> str:
        """`onnxruntime` or `openvino`: the runtime behind the provider."""
        return runtime_of(self.provider)

    @property
    def task(self) -> str:
        return self.metadata.get("toolkit.task", "")

    @property
    def labels(self) -> list[str]:
        try:
            labels = json.loads(self.metadata.get("toolkit.labels", "[]"))
        except ValueError:
            labels = None
        if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
            raise ModelError(f"{self.path}: metadata toolkit.labels is not a JSON list of names")
        return labels

    @property
    def precision(self) -> str:
        return self.metadata.get("toolkit.precision", "fp32")

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """(H, W) of an image input with fixed spatial size, else None."""
        shape = self.input.shape
        if len(shape) == 4 and isinstance(shape[1], int) and isinstance(shape[2], int):
            return shape[1], shape[2]
        return None

    @property
    def output_width(self) -> int | None:
        """The last dimension of the first output when it is fixed (a classifier's class count)."""
        shape = self.outputs[0].shape if self.outputs else ()
        return shape[-1] if shape and isinstance(shape[-1], int) else None

    # ------------------------------------------------------------------ running
    def run(self, feed: np.ndarray) -> np.ndarray:
        return self.run_feeds({self.input.name: feed})[0]

    def run_feeds(self, feeds: Feeds) -> list[np.ndarray]:
        """All outputs, in the graph's order, for one set of named inputs, by the model's schedule."""
        return self.runner(feeds)

    def explain(self, exc: BaseException) -> str:
        """A failure of this runtime as one line for the user (the runtime's own prefixes dropped)."""
        return first_line(exc)

    def first_run(self, feeds: Feeds) -> float:
        """Run once and return the seconds it took. On a GPU provider a failure is a one-line
        ProviderError naming the cause the runtime logged; `_first_run_done` lets a runtime publish
        (or discard) what the first run builds, such as TensorRT's engine cache."""
        on_gpu = not self.cpu_side
        text: list[str] = []
        start = time.perf_counter()
        try:
            with gpu.captured() if on_gpu else contextlib.nullcontext(text) as text:
                self.runner(feeds)
        except Exception as exc:
            self._first_run_done(ok=False)
            if not on_gpu:
                raise
            reason = gpu.cause("\n".join(text)) or self.explain(exc)
            raise ProviderError(gpu.first_run_line(self.provider, self.path.name, reason)) from None
        elapsed = time.perf_counter() - start
        self._first_run_done(ok=True)
        return elapsed

    def _first_run_done(self, ok: bool) -> None:  # noqa: B027  (a hook: most runtimes keep nothing)
        """What a runtime keeps or drops once the first run succeeded (`ok`) or failed."""

    # ------------------------------------------------------------------ timing
    @property
    def cpu_side(self) -> bool:
        return provider_is_cpu_side(self.provider)

    @property
    def binds_io(self) -> bool:
        """Whether `timed_call(io_binding=True)` keeps inputs and outputs on a device."""
        return False

    def timed_call(self, feeds: list[Feeds], io_binding: bool = False) -> Callable[[int], object]:
        """One inference per call, cycling through `feeds` (the benchmark's timed step). With
        `io_binding` on a model that `binds_io`, inputs are copied to the device once and outputs
        stay there, so only the inference itself is timed."""
        run = self.run_feeds
        return lambda i: run(feeds[i % len(feeds)])

    def cache_facts(self) -> dict[str, str]:
        """Whether what opening compiled came from a cache, as benchmark facts (`engine_cache`,
        `openvino_cache`: hit | miss); empty where the runtime caches nothing."""
        return {}


def int8_target(metadata: dict) -> str | None:
    """The int8 scheme a toolkit file was quantized for (`toolkit.calibration`): 'tensorrt'
    (symmetric int8 activations, zero point 0), 'cpu' (uint8 activations, onnxruntime's layout) or
    'openvino' (uint8, OpenVINO's); None if not int8."""
    if metadata.get("toolkit.precision") != "int8":
        return None
    try:
        calibration = json.loads(metadata.get("toolkit.calibration") or "{}")
    except json.JSONDecodeError:
        calibration = {}
    return str(calibration.get("target", "cpu")) if isinstance(calibration, dict) else "cpu"
