"""The Ray engine: a Ray Data pipeline that decodes images in tasks and classifies them in a pool of
actors, each holding one `Model`. Never imports torch.

Resources. Every actor opens its model with `threads` intra-op threads and asks Ray for exactly that
many CPUs (and one GPU on a GPU provider), so Ray never places more threads on a node than it has
cores. Decoding runs in separate tasks of one CPU each (spread over the nodes), which need at least
one CPU the actors leave free: the default pool is as many actors as fit beside that one CPU, and a
pool that leaves none is refused — it would wait forever for a CPU to decode on.

A local cluster is started with this machine's cores and shut down at the end; `address` joins a
running one instead (and leaves it running), and a cluster the caller already connected to is used
as it is. Ray's own logging and progress bars are turned off: the command says what happened.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import resource
import socket
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.edge.data.images import ImageError, resize
from toolkit.edge.errors import first_line, shown
from toolkit.edge.infer import classify_batch, require_task, top_k_of
from toolkit.edge.runtime import PLAIN, Model, cpu_provider_of, open_model, provider_is_cpu_side, runtime_of
from toolkit.edge.runtime.streams import available_cores
from toolkit.edge.scale.sources import read_image

RAY_MODULES = ("ray", "pyarrow", "pandas")      # what the `ray` extra (ray[data]) installs
DECODE_CPUS = 1                                 # what one decoding task asks of Ray
ADDRESS_TIMEOUT_S = 5.0


class ScaleError(RuntimeError):
    """The Ray engine cannot run this job; one line for the user."""


def require_ray() -> None:
    """ScaleError naming the extra when Ray Data is not installed."""
    missing = [name for name in RAY_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ScaleError(f"--engine ray needs the ray extra ({', '.join(missing)} missing): "
                         f"pip install 'toolkit[ray]'")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a job runs. `address`: a running cluster (`ray://…`, `host:port`, `auto`);
    None starts a local one of `cpus` CPUs (default: this machine's cores). `workers`: actors in the
    pool (default: as many as the cluster's CPUs, or GPUs, allow). `threads`: intra-op threads, and
    CPUs, per actor. `batch_size`: images per runtime call. `task_images`: images per decoding task
    and per call of an actor (a Ray task costs milliseconds of scheduling and transfer, so a task
    carries many runtime calls' worth)."""
    address: str | None = None
    cpus: int | None = None
    workers: int | None = None
    threads: int = 1
    batch_size: int = 64
    task_images: int = 1024


@dataclass
class Pool:
    """The actors a job runs on, as planned from the cluster's resources."""
    workers: int
    threads: int
    remote_args: dict = field(default_factory=dict)


def _quiet() -> None:
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


def check_address(address: str) -> None:
    """ScaleError, at once, for an address nothing listens on: Ray itself retries for minutes."""
    if address == "auto":                       # the cluster `ray start` recorded on this machine
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ScaleError(f"--address {shown(address)}: not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        raise ScaleError(f"cannot join the Ray cluster at {shown(address)} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def cluster(options: RayOptions) -> Iterator[None]:
    """Connected to a Ray cluster for the duration: the caller's, the one at `options.address`, or a
    local one started here and shut down at the end."""
    import ray
    if ray.is_initialized():
        yield
        return
    _quiet()
    if options.address:
        check_address(options.address)
    try:
        if options.address:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            # address="local": a new cluster of our own, even where `ray start` left one running.
            ray.init(address="local", num_cpus=options.cpus or available_cores(), include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = f"join the Ray cluster at {shown(options.address)}" if options.address else "start a local Ray cluster"
        raise ScaleError(f"cannot {where} ({first_line(exc)})") from None
    _quiet()
    try:
        yield
    finally:
        ray.shutdown()


def plan_pool(options: RayOptions, provider: str) -> Pool:
    """How many actors of how many threads the cluster holds beside the decoding tasks' CPU."""
    import ray
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    threads = options.threads
    room = max(0, (cpus - DECODE_CPUS) // threads)
    args: dict = {"num_cpus": threads}
    if provider_is_cpu_side(provider):
        workers = options.workers or max(1, room)
    else:
        workers = options.workers or gpus
        if not 1 <= workers <= gpus:
            raise ScaleError(f"--provider {provider}: each worker needs a GPU, and the cluster has {gpus}")
        args["num_gpus"] = 1
    if workers * threads + DECODE_CPUS > cpus:
        raise ScaleError(f"{workers} workers × {threads} threads leave no CPU for decoding on a cluster of {cpus} "
                         f"CPUs (at most {room} workers of {threads} threads)")
    return Pool(workers, threads, args)


def decode_batch(batch: dict, height: int, width: int) -> dict:
    """A decoding task: each `path` read and decoded, resized to the model's size; an image that
    cannot be is zeros and its one-line `error`."""
    paths = [str(p) for p in batch["path"]]
    pixels = np.zeros((len(paths), height, width, 3), np.uint8)
    errors = []
    for i, path in enumerate(paths):
        try:
            pixels[i] = resize(read_image(path), height, width)
            errors.append("")
        except ImageError as exc:
            errors.append(str(exc))
    return {**batch, "pixels": pixels, "error": np.asarray(errors, dtype=object)}


class Classifier:
    """An actor of the pool: one Model, opened once with the threads its CPUs allow."""

    def __init__(self, model: str, provider: str, threads: int, precision_hint: str | None, k: int,
                 batch_size: int):
        # One call per batch: the pool's actors are the parallelism a schedule's streams would be.
        self.model = open_model(model, provider, threads=threads, schedule=PLAIN, precision_hint=precision_hint)
        self.k = top_k_of(self.model, k)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        errors = [str(e) for e in batch["error"]]
        tops = ["[]"] * len(paths)
        model_failed = np.zeros(len(paths), bool)
        ok = [i for i, e in enumerate(errors) if not e]
        for start in range(0, len(ok), self.batch_size):
            run = ok[start:start + self.batch_size]
            for i, pred in zip(run, classify_batch(self.model, [paths[i] for i in run], batch["pixels"][run], self.k)):
                if pred.error:
                    errors[i], model_failed[i] = pred.error, True
                else:
                    tops[i] = json.dumps(pred.top)
        rest = {key: value for key, value in batch.items() if key not in ("pixels", "error")}
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {**rest, "top": np.asarray(tops, dtype=object), "error": np.asarray(errors, dtype=object),
                "model_failed": model_failed, "worker": np.full(len(paths), os.getpid()),
                "worker_peak_mb": np.full(len(paths), peak_mb)}


def describe(model: str | os.PathLike, provider: str | None) -> tuple[Model, str]:
    """The model opened on the driver for what the job needs to know before it starts (a classifier,
    its labels, its input size), and the provider the workers open it on. A provider given is used
    through the CPU provider of its runtime, so the driver need not have the workers' GPU; None is
    the model's deployment (or cpu), as `open_model` chooses it."""
    cpu = cpu_provider_of(runtime_of(provider)) if provider is not None else None
    described = open_model(Path(model), cpu, threads=1, schedule=PLAIN)
    require_task(described, "classify")
    return described, provider or described.provider


def _cause(exc: BaseException) -> str:
    """The root of a Ray error (a task's or an actor's own exception), as one line."""
    seen: BaseException = exc
    while isinstance(cause := getattr(seen, "cause", None), BaseException) and cause is not seen:   # RayTaskError
        seen = cause
    return first_line(seen, limit=300)


def run_pipeline(items: list[dict], model: Model, provider: str, k: int, options: RayOptions,
                 precision_hint: str | None = None) -> Iterator[dict]:
    """Yield numpy batches of classified rows (`path`, `top` as JSON, `error`, `model_failed`, the
    worker's pid and peak memory, and every other column of `items`), in no particular order.
    Call inside `cluster(options)`. ScaleError when the job itself fails (an actor cannot open the model)."""
    import ray
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    _quiet()                                       # after importing ray.data, which sets up its own loggers
    pool = plan_pool(options, provider)
    height, width = model.input_hw or (32, 32)
    ds: Any = ray.data.from_items(items)
    # The scheduling strategies differ, so Ray Data keeps decoding in tasks of its own rather than
    # fusing it into the actors; max_restarts=0: an actor that dies is the job's failure, said once.
    # Ray 2.40-2.63 take both only as `ray_remote_args` (deprecated from 2.60; pyproject pins below 2.64).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        ds = ds.map_batches(decode_batch, fn_kwargs={"height": height, "width": width},
                            batch_size=options.task_images, num_cpus=DECODE_CPUS, scheduling_strategy="SPREAD")
        ds = ds.map_batches(Classifier, batch_size=options.task_images,
                            fn_constructor_kwargs={"model": os.fspath(model.path), "provider": provider,
                                                   "threads": pool.threads, "precision_hint": precision_hint,
                                                   "k": k, "batch_size": options.batch_size},
                            compute=ray.data.ActorPoolStrategy(size=pool.workers), scheduling_strategy="DEFAULT",
                            max_restarts=0, **pool.remote_args)
    try:
        yield from ds.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:  # noqa: BLE001  (Ray Data wraps a worker's failure in several types of its own)
        raise ScaleError(f"the Ray job failed: {_cause(exc)}") from None


@dataclass
class Throughput:
    """What a job measured: images classified, seconds, and each worker's peak memory."""
    images: int = 0
    seconds: float = 0.0
    worker_peak_mb: dict[int, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, batch: dict) -> None:
        self.images += len(batch["path"])
        for pid, peak in zip(batch["worker"], batch["worker_peak_mb"]):
            self.worker_peak_mb[int(pid)] = max(float(peak), self.worker_peak_mb.get(int(pid), 0.0))
        self.seconds = time.perf_counter() - self.started

    @property
    def per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0
