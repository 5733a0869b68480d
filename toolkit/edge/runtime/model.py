"""What every runtime's opened model is: the Model record, the errors that opening or running one
raises, and the first (timed, cache-publishing) run. Never imports torch.

A leaf below sessions.py (onnxruntime) and openvino.py (the OpenVINO runtime), which both build
Models; neither needs the other to exist, so they import this and not each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.edge.runtime import gpu
from toolkit.edge.runtime.streams import PLAIN, Feeds, Runner, Schedule
from toolkit.edge.runtime.tensorrt import EngineCache

DEFAULT_CACHE = Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "toolkit"))


class ProviderError(RuntimeError):
    """The provider the user asked for cannot run this session."""


class ModelError(ValueError):
    """The file is not a usable toolkit ONNX model."""


@dataclass
class Model:
    """An ONNX model opened for inference: the session plus what its metadata says."""
    path: Path
    # An onnxruntime InferenceSession or an OpenVINO CompiledModel; neither library ships types.
    session: Any
    provider: str
    metadata: dict = field(default_factory=dict)
    engine_cache: EngineCache | None = None
    schedule: Schedule = PLAIN
    # Every run goes through one Runner (streams.py); with the plain schedule, one call of the session.
    runner: Runner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.runner = self.make_runner()

    def make_runner(self) -> Runner:
        """onnxruntime: every stream runs on the one session (its run is thread-safe)."""
        return Runner(self.schedule, [self.session] * self.schedule.streams,
                      lambda session, feeds: session.run(None, feeds))

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
    def input(self) -> Any:
        """The first input as onnxruntime's NodeArg shows it (`name`, `type`, `shape`)."""
        return self.session.get_inputs()[0]

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """(H, W) of an image input with fixed spatial size, else None."""
        shape = self.input.shape
        if len(shape) == 4 and isinstance(shape[1], int) and isinstance(shape[2], int):
            return shape[1], shape[2]
        return None

    def run(self, feed: np.ndarray) -> np.ndarray:
        return self.run_feeds({self.input.name: feed})[0]

    def run_feeds(self, feeds: Feeds) -> list[np.ndarray]:
        """All outputs, in the graph's order, for one set of named inputs, by the model's schedule."""
        if self.engine_cache is not None and self.engine_cache.staging is not None:
            first_run(self, feeds)
        return self.runner(feeds)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def first_run(model: Model, feeds: dict[str, np.ndarray]) -> float:
    """Run once and return the seconds it took. On TensorRT this is where an engine without an
    explicit profile is built (with one, it was built at session creation); a failure here is a
    one-line ProviderError, and the engine cache is published only after it succeeds."""
    run = model.runner
    on_gpu = model.provider in gpu.GPU_PROVIDERS
    text: list[str] = []
    start = time.perf_counter()
    try:
        with gpu.captured() if on_gpu else contextlib.nullcontext(text) as text:
            run(feeds)
    except Exception as exc:
        if model.engine_cache is not None:
            model.engine_cache.discard()
        if not on_gpu:
            raise
        reason = gpu.cause("\n".join(text)) or first_line(exc)
        raise ProviderError(f"{model.provider}: the first run of {model.path.name} failed: {reason[:300]}") from None
    elapsed = time.perf_counter() - start
    if model.engine_cache is not None:
        model.engine_cache.publish()
    return elapsed
