"""Timing and statistics: warm-up excluded, every counted run timed and kept, percentiles and
throughput from them, and top-1 accuracy on labelled pools. Never imports torch."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from toolkit.edge.bench.inputs import BenchError, InputPool

DEFAULT_RUNS = 100
MIN_TIMED_RUNS = 5                 # `--seconds` still counts at least this many runs, so p50 means something
ACCURACY_BATCH = 256


def time_runs(call: Callable[[int], object], warmup: int, runs: int | None = None,
              seconds: float | None = None) -> list[float]:
    """Call call(i) `warmup` times untimed, then time each call: `runs` calls, or as many as fit in
    `seconds` (at least MIN_TIMED_RUNS). Returns every counted run's wall time in seconds."""
    for i in range(warmup):
        call(i)
    timings = []
    clock = time.perf_counter
    if seconds is None:
        for i in range(runs or DEFAULT_RUNS):
            start = clock()
            call(i)
            timings.append(clock() - start)
        return timings
    deadline = clock() + seconds
    i = 0
    while clock() < deadline or len(timings) < MIN_TIMED_RUNS:
        start = clock()
        call(i)
        timings.append(clock() - start)
        i += 1
    return timings


def latency_stats(timings_s: list[float], batch_size: int) -> dict:
    """p50/p90/p99/mean/min/max/std in ms, and throughput in items per second (batch / mean time,
    i.e. what a loop of these runs really delivers)."""
    t = np.asarray(timings_s, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "max_ms": float(t.max()), "std_ms": float(t.std()),
            "throughput": float(batch_size * 1e3 / t.mean())}


def accuracy_of(predict: Callable[[np.ndarray], np.ndarray], labels: list[str], pool: InputPool,
                what: str) -> tuple[float, int] | None:
    """(top-1 accuracy, image count) of `predict` (images → logits) on the pool's labelled images,
    the data's class names matched to the model's labels by name; None without labels."""
    if pool.labels is None or not labels or pool.class_names is None:
        return None
    index = {name: i for i, name in enumerate(labels)}
    missing = [name for name in pool.class_names if name not in index]
    if missing:
        raise BenchError(f"--data: class {missing[0]!r} is not one of {what}'s labels")
    truth = np.asarray([index[pool.class_names[c]] for c in pool.labels])
    predicted = np.concatenate([predict(pool.items[i:i + ACCURACY_BATCH]).argmax(1)
                                for i in range(0, len(pool.items), ACCURACY_BATCH)])
    return float(np.mean(predicted == truth)), len(truth)


def fixed_batch(run: Callable[[np.ndarray], np.ndarray], batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """images → logits through a model that takes exactly `batch` images (a TensorRT engine
    built for one shape): the last chunk is padded with copies of its last image."""
    def predict(images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
            out.append(run(chunk)[:n])
        return np.concatenate(out)
    return predict
