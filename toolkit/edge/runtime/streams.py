"""Throughput mode: one call's batch cut into micro-batches that run on several streams at once.
Never imports torch.

Why: a batch of 256 run layer by layer streams every activation through memory (the paper CNN's
first feature map is 8 MB at batch 256, eight times a Zen 5 core's L2), and the intra-op threads
of one call meet at a barrier after every operator. Micro-batches of a few dozen images keep a
layer's activations in cache; streams of one thread each, each on its own micro-batches, meet only
when the call ends. OpenVINO's THROUGHPUT hint (benchmark_app) and trtexec's --streams do the same.

A schedule changes time, never results: every operator of an image model computes each item of a
batch on its own, so item i's outputs are those of running it alone (the tests check it).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Schedule:
    """`streams` concurrent streams (the session's threads shared out among them) and micro-batches
    of at most `micro_batch` items (0: the batch shared evenly over the streams)."""
    streams: int = 1
    micro_batch: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.streams, int) or self.streams < 1:
            raise ValueError(f"streams must be a whole number ≥ 1, not {self.streams!r}")
        if not isinstance(self.micro_batch, int) or self.micro_batch < 0:
            raise ValueError(f"the micro-batch must be a whole number ≥ 0 (0: none), not {self.micro_batch!r}")

    @property
    def plain(self) -> bool:
        """One call per batch, as the runtime does it without a schedule."""
        return self.streams == 1 and self.micro_batch == 0

    @property
    def label(self) -> str | None:
        """`2 streams × 32`, `1 stream × 32`, `2 streams`; None for the plain schedule."""
        if self.plain:
            return None
        text = f"{self.streams} stream{'s' if self.streams > 1 else ''}"
        return text + (f" × {self.micro_batch}" if self.micro_batch else "")

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """`2x32` (2 streams, micro-batches of 32), `2` (2 streams, the batch shared evenly),
        `1x32` (micro-batches on one stream), or ValueError."""
        streams, sep, micro = text.strip().lower().replace("×", "x").partition("x")
        try:
            return cls(int(streams), int(micro) if sep else 0)
        except ValueError as exc:
            message = str(exc) if streams.isdigit() and (not sep or micro.isdigit()) else ""
            raise ValueError(message or f"schedule {text!r}: write STREAMS or STREAMSxMICRO_BATCH, e.g. 2x32") from None

    @property
    def spec(self) -> str:
        """The schedule as parse() reads it."""
        return f"{self.streams}x{self.micro_batch}" if self.micro_batch else str(self.streams)

    def parts(self, n: int) -> list[slice]:
        """The micro-batches of a batch of n items, in order."""
        size = self.micro_batch or -(-n // self.streams)
        return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))] or [slice(0, 0)]

    def threads_per_stream(self, threads: int) -> int:
        """`threads` shared out evenly, or ValueError when they cannot be."""
        if threads % self.streams:
            raise ValueError(f"{threads} thread{'s' if threads > 1 else ''} cannot be shared evenly among "
                             f"{self.streams} streams (use a multiple of the streams)")
        return threads // self.streams


PLAIN = Schedule()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count): the threads a
    schedule shares out when none are given."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def batch_of(feeds: Feeds) -> int:
    """The common leading dimension of every input, or ValueError."""
    sizes = {int(a.shape[0]) if a.ndim else -1 for a in feeds.values()}
    if len(sizes) != 1 or -1 in sizes:
        raise ValueError("a schedule cuts the batch along the first axis, and these inputs do not share one "
                         f"({', '.join(f'{k} {list(a.shape)}' for k, a in feeds.items())})")
    return sizes.pop()


class Runner:
    """feeds → every output, by the schedule: `call(handle, feeds)` runs one micro-batch on one
    handle; a stream takes a free one for each micro-batch, so give one handle per stream (OpenVINO:
    an infer request each; onnxruntime: the one session, whose run is thread-safe, once per stream)."""

    def __init__(self, schedule: Schedule, handles: list[Any], call: Callable[[Any, Feeds], list[np.ndarray]]):
        self.schedule, self.call = schedule, call
        self.handles: queue.SimpleQueue = queue.SimpleQueue()
        for handle in handles:
            self.handles.put(handle)
        self.first = handles[0]
        self.pool = ThreadPoolExecutor(schedule.streams, "toolkit-stream") if schedule.streams > 1 else None

    def _one(self, feeds: Feeds) -> list[np.ndarray]:
        handle = self.handles.get()
        try:
            return self.call(handle, feeds)
        finally:
            self.handles.put(handle)

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        if self.schedule.plain:
            return self.call(self.first, feeds)
        parts = self.schedule.parts(batch_of(feeds))
        if len(parts) == 1:
            return self._one(feeds)
        chunks = [{name: array[part] for name, array in feeds.items()} for part in parts]
        results = list(self.pool.map(self._one, chunks)) if self.pool else [self._one(c) for c in chunks]
        return [np.concatenate([r[k] for r in results]) for k in range(len(results[0]))]
