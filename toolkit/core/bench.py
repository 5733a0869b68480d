"""Latency and throughput of ONNX models per precision, provider and batch size, on this machine.

    toolkit bench                                   # shipped models, CPU, batch 1 and 64
    toolkit bench --batch-size 1 --batch-size 256 --torch --data data/cifar10-jpeg/train
    toolkit bench --provider cuda --provider tensorrt --seconds 5 --out benchmarks/results
    toolkit bench --compare benchmarks/results/cpu-amd-epyc-2c.json
    make bench                                      # the full matrix → benchmarks/results/

Honest timing: warm-up runs are excluded, every counted run is timed and kept, inputs are real
images (or standard-normal latents for a generator) drawn into a rotating set of buffers, and the
report carries the machine's fingerprint. On CUDA and TensorRT the inputs and outputs stay on the
device (IO binding) unless `--include-copy`. Every row reports the provider the session really used.

The ONNX rows never import torch; only `--torch` (the PyTorch eager fp32 baseline) does.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable

import numpy as np

from toolkit import zoo
from toolkit.core.sessions import (PROVIDERS, Model, ModelError, ProviderError, node_placement, open_model,
                             tensorrt_version, usable_providers)

DEFAULT_BATCH_SIZES = (1, 64)
DEFAULT_RUNS = 100
MIN_TIMED_RUNS = 5                 # `--seconds` still counts at least this many runs, so p50 means something
BUFFER_BYTES = 8 << 20             # rotating inputs span more than a core's L2, so no run finds its input hot
MIN_BUFFERS, MAX_BUFFERS = 8, 4096
SEED = 0
ACCURACY_BATCH = 256
# Rows that match between two runs (for --compare) agree on these keys.
ROW_KEY = ("model", "precision", "provider", "backend", "batch_size")


class BenchError(RuntimeError):
    """A benchmark that cannot be run as asked; the message is one line for the user."""


@dataclass
class BenchConfig:
    """What to measure. `runs` and `seconds` are exclusive; with neither, DEFAULT_RUNS runs."""
    models: list[Path]
    providers: list[str] = field(default_factory=lambda: ["cpu"])
    batch_sizes: list[int] = field(default_factory=lambda: list(DEFAULT_BATCH_SIZES))
    threads: int | None = None          # None: one per available core, for onnxruntime and torch alike
    warmup: int = 10
    runs: int | None = None
    seconds: float | None = None
    torch: bool = False
    data: Path | None = None
    include_copy: bool = False
    cache_dir: Path | None = None


def default_models() -> list[Path]:
    """Every shipped classifier precision that exists, then the generator if it exists."""
    candidates = [zoo.CIFAR_CNN.onnx_path(p) for p in ("fp32", "fp16", "int8")] + [zoo.DCGAN.onnx_path()]
    return [p for p in candidates if p.is_file()]


# ----------------------------------------------------------------------------- machine fingerprint

ISA_FLAGS = {"AVX2": "avx2", "AVX-512": "avx512f", "AVX-512 VNNI": "avx512_vnni", "AVX-VNNI": "avx_vnni",
             "AVX-512 BF16": "avx512_bf16", "AMX": "amx_int8"}


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _max_clock_mhz() -> float | None:
    """The highest clock cpufreq allows (turbo included); None where cpufreq is absent, as in most VMs."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        return None


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return None


def _nvidia_smi() -> tuple[list[dict], str | None]:
    """(GPUs with name, driver and memory, the driver's CUDA version) — empty without nvidia-smi."""
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return [], None
    if query.returncode != 0:
        return [], None
    gpus = []
    for line in query.stdout.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(","))
        gpus.append({"name": name, "driver": driver, "memory": memory})
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    return gpus, cuda.group(1) if cuda else None


def machine_info() -> dict:
    """CPU model, cores, clock, the ISA flags that decide int8 speed, GPUs, and library versions."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    gpus, driver_cuda = _nvidia_smi()
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version as ort_cuda
    except ImportError:
        ort_cuda = None
    cores = available_cores()
    info = {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": cpu.get("cpu family"),
        "cpu_model": cpu.get("model"),
        "cores": cores,
        "cpu_mhz": float(cpu["cpu MHz"]) if "cpu MHz" in cpu else None,
        "cpu_max_mhz": _max_clock_mhz(),
        "isa": [name for name, flag in ISA_FLAGS.items() if flag in flags],
        "virtualised": "hypervisor" in flags,
        "gpus": gpus,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "onnxruntime": _package_version("onnxruntime-gpu", "onnxruntime"),
            "onnx": _package_version("onnx"),
            "numpy": _package_version("numpy"),
            # Read from the package metadata: importing torch here would put it on the ONNX path.
            "torch": _package_version("torch"),
            "onnxruntime_cuda": ort_cuda,
            "cuda_driver": driver_cuda,
            "tensorrt": tensorrt_version() if gpus else None,
        },
    }
    info["slug"] = machine_slug(info)
    return info


def _slugify(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\b(processor|cpu)\b|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def machine_slug(machine: dict) -> str:
    """A short file-name-safe name: `gpu-nvidia-h100-80gb-hbm3` or `cpu-amd-epyc-2c`."""
    if machine.get("gpus"):
        return "gpu-" + _slugify(machine["gpus"][0]["name"])
    return f"cpu-{_slugify(machine['cpu'])}-{machine['cores']}c"


def int8_peak(machine: dict, threads: int | None = None) -> tuple[float, str] | None:
    """This CPU's int8 multiply-add limit (MAC/s) on `threads` cores (default: all) and the assumption
    behind it, or None without VNNI.

    A VPDPBUSD does 4 uint8×int8 multiply-adds per 32-bit lane: 64 on a 512-bit register, 32 on a
    256-bit one. We assume two such instructions issue per cycle per core (two vector FMA pipes, as on
    Zen 4/5 and server Ice Lake and later), at cpufreq's maximum clock where the OS exposes it, else at
    the clock /proc/cpuinfo reports. AMX and hypervisor sharing are ignored."""
    isa, cores = machine.get("isa", []), min(threads or machine.get("cores"), machine.get("cores"))
    mhz = machine.get("cpu_max_mhz") or machine.get("cpu_mhz")
    width = 512 if "AVX-512 VNNI" in isa else 256 if "AVX-VNNI" in isa else None
    if width is None or not mhz or not cores:
        return None
    per_instruction = width // 8
    peak = cores * mhz * 1e6 * per_instruction * 2
    clock = "maximum clock" if machine.get("cpu_max_mhz") else "reported clock, turbo not known"
    return peak, (f"{cores} core{'s' if cores != 1 else ''} × {mhz / 1000:.2f} GHz ({clock}) × "
                  f"{per_instruction} int8 multiply-adds per {width}-bit VPDPBUSD × 2 VPDPBUSD per cycle; "
                  "AMX and hypervisor sharing ignored")


# ----------------------------------------------------------------------------- model facts

def multiply_adds(proto) -> int | None:
    """Multiply-adds per input item of Conv, ConvTranspose, MatMul and Gemm nodes (shapes inferred at
    batch 1), or None if some shape stays unknown. Works on fp32, fp16 and QDQ graphs alike."""
    import onnx

    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    graph = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {t.name: list(t.dims) for t in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def shape(name):
        s = shapes.get(name)
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


def _onnx_facts(path: Path) -> tuple[dict, int | None]:
    """(metadata, multiply-adds per item) of an ONNX file; ModelError if it is not one."""
    import onnx
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError for a file that is not ONNX
        raise ModelError(f"{path}: not an ONNX model ({str(exc).strip().splitlines()[0]})") from None
    return {p.key: p.value for p in proto.metadata_props}, multiply_adds(proto)


# ----------------------------------------------------------------------------- inputs

@dataclass
class InputPool:
    """What the benchmark feeds: items to draw batches from, labels where there are any."""
    items: np.ndarray
    source: str
    labels: np.ndarray | None = None
    class_names: list[str] | None = None


def image_pool(size: tuple[int, int], data: Path | None) -> InputPool:
    """Real images at `size`: the validation part of `data` (fixed split), else the sample images
    in models/samples, else uniform noise — and the report says which."""
    from toolkit.core.data import ImageError, list_images, load_image, read_split, resize

    if data is not None:
        skipped = []
        try:
            split = read_split(data, "val", size, on_error=skipped.append)
        except (FileNotFoundError, ValueError) as exc:
            raise BenchError(f"--data: {exc}") from None
        note = f"; {len(skipped)} unreadable files skipped" if skipped else ""
        return InputPool(split.images, f"{len(split)} validation images of {_shown(data)} (fixed split){note}",
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
        return InputPool(np.stack(images), f"the {len(images)} sample images in {_shown(samples)}")
    noise = np.random.default_rng(SEED).integers(0, 256, (256, *size, 3), dtype=np.uint8)
    return InputPool(noise, "uniform random pixels (no --data given and no images in models/samples)")


def latent_pool(dim: int) -> InputPool:
    z = np.random.default_rng(SEED).standard_normal((4096, dim)).astype(np.float32)
    return InputPool(z, f"standard-normal z of size {dim} (seed {SEED})")


def rotating_buffers(pool: np.ndarray, batch_size: int, seed: int = SEED) -> list[np.ndarray]:
    """Distinct contiguous batches drawn from `pool`: enough of them to span BUFFER_BYTES, within
    [MIN_BUFFERS, MAX_BUFFERS], so a run does not find its input still in cache from a recent run."""
    rng = np.random.default_rng(seed)
    count = int(np.clip(np.ceil(BUFFER_BYTES / (pool[0].nbytes * batch_size)), MIN_BUFFERS, MAX_BUFFERS))
    return [np.ascontiguousarray(pool[rng.choice(len(pool), batch_size, replace=len(pool) < batch_size)])
            for _ in range(count)]


# ----------------------------------------------------------------------------- timing

def time_runs(step: Callable[[int], object], warmup: int, runs: int | None = None,
              seconds: float | None = None) -> list[float]:
    """Call step(i) `warmup` times untimed, then time each call: `runs` calls, or as many as fit in
    `seconds` (at least MIN_TIMED_RUNS). Returns every counted run's wall time in seconds."""
    for i in range(warmup):
        step(i)
    timings = []
    clock = time.perf_counter
    if seconds is None:
        for i in range(runs or DEFAULT_RUNS):
            start = clock()
            step(i)
            timings.append(clock() - start)
        return timings
    deadline = clock() + seconds
    i = 0
    while clock() < deadline or len(timings) < MIN_TIMED_RUNS:
        start = clock()
        step(i)
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


# ----------------------------------------------------------------------------- onnxruntime rows

def _onnx_step(model: Model, buffers: list[np.ndarray], device: bool) -> Callable[[int], object]:
    """One inference per call, cycling through `buffers`. With `device`, inputs are copied to the GPU
    once and outputs stay there (IO binding), so only the inference itself is timed."""
    session, name = model.session, model.input.name
    outputs = [o.name for o in session.get_outputs()]
    if not device:
        return lambda i: session.run(outputs, {name: buffers[i % len(buffers)]})
    import onnxruntime as ort
    bindings = []
    for buffer in buffers:
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(buffer, "cuda", 0))
        for output in outputs:
            binding.bind_output(output, "cuda", 0)
        bindings.append(binding)
    # run_with_iobinding synchronises the device before returning, so the wall time is complete.
    return lambda i: session.run_with_iobinding(bindings[i % len(bindings)])


def _accuracy(predict: Callable[[np.ndarray], np.ndarray], labels: list[str], pool: InputPool,
              what: str) -> tuple[float, int] | None:
    """(top-1 accuracy, image count) of `predict` (images → logits) on the pool's labelled images,
    the data's class names matched to the model's labels by name; None without labels."""
    if pool.labels is None or not labels:
        return None
    index = {name: i for i, name in enumerate(labels)}
    missing = [name for name in pool.class_names if name not in index]
    if missing:
        raise BenchError(f"--data: class {missing[0]!r} is not one of {what}'s labels")
    truth = np.asarray([index[pool.class_names[c]] for c in pool.labels])
    predicted = np.concatenate([predict(pool.items[i:i + ACCURACY_BATCH]).argmax(1)
                                for i in range(0, len(pool.items), ACCURACY_BATCH)])
    return float(np.mean(predicted == truth)), len(truth)


def _shown(path: str | os.PathLike) -> str:
    """A path as reports show it: relative to the working directory when inside it, so committed
    results do not carry one machine's folder layout."""
    path = Path(path).absolute()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _pool(pools: dict, key: tuple, make: Callable[[], InputPool]) -> InputPool:
    """Pools are decoded once per run and shared by every model and row that feeds on them."""
    if key not in pools:
        pools[key] = make()
    return pools[key]


def _model_pool(model: Model, data: Path | None, pools: dict) -> InputPool:
    """Inputs for a model from its input signature: uint8 NHWC images or float latent vectors."""
    inp = model.input
    if inp.type == "tensor(uint8)" and len(inp.shape) == 4:
        size = model.input_hw or zoo.CIFAR_CNN.input_size
        return _pool(pools, ("images", size), lambda: image_pool(size, data))
    if inp.type == "tensor(float)" and len(inp.shape) == 2 and isinstance(inp.shape[1], int):
        return _pool(pools, ("latent", inp.shape[1]), lambda: latent_pool(inp.shape[1]))
    raise BenchError(f"{model.path}: cannot make inputs for {inp.name} {inp.type} {inp.shape} "
                     "(expected uint8 [N, H, W, 3] images or float32 [N, D] latents)")


def _measure_onnx(path: Path, provider: str, cfg: BenchConfig, pools: dict, log) -> list[dict]:
    meta, macs = _onnx_facts(path)
    precision = meta.get("toolkit.precision", "fp32")
    start = time.perf_counter()
    model = open_model(path, provider, threads=cfg.threads, trt_fp16=precision == "fp16",
                       trt_int8=precision == "int8", cache_dir=cfg.cache_dir, profile=True)
    create_s = time.perf_counter() - start
    pool = _model_pool(model, cfg.data, pools)
    # The placement comes from the first (profiled) run; profiling is off for every run after it.
    placement = node_placement(model, pool.items[:1])
    log(f"{path.name} on {provider}: session {create_s:.3f} s, nodes per provider "
        + ", ".join(f"{k} {v}" for k, v in placement.items()) + f"; inputs: {pool.source}")
    accuracy = _accuracy(model.run, model.labels if model.task == "classify" else [], pool, path.name)
    device = provider != "cpu" and not cfg.include_copy
    rows = []
    for batch_size in cfg.batch_sizes:
        buffers = rotating_buffers(pool.items, batch_size)
        timings = time_runs(_onnx_step(model, buffers, device), cfg.warmup, cfg.runs, cfg.seconds)
        rows.append(_row(meta.get("toolkit.model", path.name.split(".")[0]), precision, provider, "onnxruntime",
                         batch_size, timings, cfg, accuracy, file=_shown(path), file_size_bytes=path.stat().st_size,
                         session_create_s=create_s, placement=placement, io_binding=device, input=pool.source,
                         input_buffers=len(buffers), multiply_adds_per_item=macs))
    return rows


def _row(model: str, precision: str, provider: str, backend: str, batch_size: int, timings: list[float],
         cfg: BenchConfig, accuracy: tuple[float, int] | None, **facts) -> dict:
    """One result row: the keys that identify it, the statistics, the settings, then `facts`."""
    return {"model": model, "precision": precision, "provider": provider, "backend": backend,
            "batch_size": batch_size, **latency_stats(timings, batch_size),
            "accuracy": accuracy[0] if accuracy else None, "accuracy_n": accuracy[1] if accuracy else None,
            "threads": cfg.threads, "warmup_runs": cfg.warmup, "runs": len(timings), **facts,
            "timings_ms": [round(t * 1e3, 4) for t in timings]}


# ----------------------------------------------------------------------------- torch rows

def _torch_form(meta: dict):
    """(zoo spec, weights → torch module) for the net behind an ONNX file, in the same contract form
    (uint8 images → logits, or z → uint8 images); None for a net the zoo cannot build."""
    from toolkit.build import export
    name = meta.get("toolkit.model")
    if name == zoo.CIFAR_CNN.name:
        return zoo.CIFAR_CNN, lambda weights: export.classifier_module(weights, meta.get("toolkit.preprocess"))
    if name == zoo.DCGAN.name:
        return zoo.DCGAN, export.generator_module
    return None


def _measure_torch(onnx_row: dict, cfg: BenchConfig, pools: dict, log) -> list[dict]:
    """PyTorch eager fp32 rows for the net behind an ONNX row: same inputs, batches and threads,
    with the shipped weights where they exist (accuracy is only reported with them)."""
    meta, _ = _onnx_facts(Path(onnx_row["file"]))
    form = _torch_form(meta)
    if form is None:
        log(f"--torch: no PyTorch form for {meta.get('toolkit.model', onnx_row['file'])}; skipped")
        return []
    try:
        import torch
    except ImportError:
        raise BenchError("--torch needs PyTorch, which is not installed here") from None
    spec, build = form
    torch.set_num_threads(cfg.threads)
    weights = spec.weights_path if spec.weights_path.is_file() else None
    start = time.perf_counter()
    module = build(weights)
    create_s = time.perf_counter() - start
    log(f"torch {spec.name}: module built in {create_s:.3f} s, weights "
        f"{weights or 'freshly initialised (no shipped weights)'}")
    if spec.task == "classify":
        pool = _pool(pools, ("images", spec.input_size), lambda: image_pool(spec.input_size, cfg.data))
    else:
        pool = _pool(pools, ("latent", spec.latent_dim), lambda: latent_pool(spec.latent_dim))
    rows = []
    with torch.inference_mode():
        accuracy = _accuracy(lambda x: module(torch.from_numpy(x)).numpy(),
                             spec.labels if weights else [], pool, "the PyTorch net")
        for batch_size in cfg.batch_sizes:
            buffers = [torch.from_numpy(b) for b in rotating_buffers(pool.items, batch_size)]
            timings = time_runs(lambda i: module(buffers[i % len(buffers)]), cfg.warmup, cfg.runs, cfg.seconds)
            rows.append(_row(spec.name, "fp32", "cpu", "torch", batch_size, timings, cfg, accuracy,
                             file=_shown(weights) if weights else None,
                             file_size_bytes=weights.stat().st_size if weights else None,
                             session_create_s=create_s, placement=None, io_binding=False, input=pool.source,
                             input_buffers=len(buffers), multiply_adds_per_item=onnx_row["multiply_adds_per_item"],
                             torch_version=torch.__version__))
    return rows


# ----------------------------------------------------------------------------- the whole run

def check_providers(providers: list[str]) -> None:
    """Raise ProviderError for the first requested provider that cannot create a session here,
    before anything is measured."""
    for name in providers:
        if name not in PROVIDERS:
            raise ProviderError(f"unknown provider {name!r} (choose from {', '.join(PROVIDERS)})")
    usable = usable_providers() if set(providers) - {"cpu"} else ["cpu"]
    for name in providers:
        if name not in usable:
            raise ProviderError(f"provider '{name}' was requested but cannot create a session on this "
                                "machine; refusing to fall back")


def run_benchmark(cfg: BenchConfig, on_row: Callable[[dict], None] | None = None,
                  log: Callable[[str], None] | None = None) -> dict:
    """Measure every model × provider × batch size (and the torch rows last, so torch's threads
    never compete with an onnxruntime measurement). Returns {"machine", "rows", "created", "command"}."""
    if not cfg.models:
        raise BenchError("no models to measure: none of the shipped models exist in models/ (pass --model)")
    if cfg.runs is not None and cfg.seconds is not None:
        raise BenchError("--runs and --seconds are exclusive")
    cfg = replace(cfg, threads=cfg.threads or available_cores())
    for path in cfg.models:
        if not Path(path).is_file():
            raise ModelError(f"{path}: no such model file")
    check_providers(cfg.providers)
    log = log or (lambda message: None)
    on_row = on_row or (lambda row: None)
    pools: dict = {}
    rows: list[dict] = []
    for path in cfg.models:
        for provider in cfg.providers:
            for row in _measure_onnx(Path(path), provider, cfg, pools, log):
                rows.append(row)
                on_row(row)
    if cfg.torch:
        first_row_per_net: dict[str, dict] = {}
        for row in rows:
            first_row_per_net.setdefault(row["model"], row)
        for first_row in first_row_per_net.values():
            for row in _measure_torch(first_row, cfg, pools, log):
                rows.append(row)
                on_row(row)
    return {"machine": machine_info(), "rows": rows,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


# ----------------------------------------------------------------------------- comparing runs

def load_result(path: str | os.PathLike) -> dict:
    """An earlier `--json` / `--out` document, checked just enough to compare against."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise BenchError(f"{path}: not a benchmark result (no 'rows' list)")
    return doc


def compare_rows(new: dict, old: dict) -> list[dict]:
    """Per new row: old and new p50 and throughput, `speedup` = old p50 / new p50 (> 1: faster now)
    and `throughput_ratio` = new / old; None where the old run has no matching row."""
    old_rows = {tuple(r.get(k) for k in ROW_KEY): r for r in old["rows"]}
    result = []
    for row in new["rows"]:
        before = old_rows.get(tuple(row[k] for k in ROW_KEY))
        result.append({**{k: row[k] for k in ROW_KEY},
                       "old_p50_ms": before["p50_ms"] if before else None, "new_p50_ms": row["p50_ms"],
                       "speedup": before["p50_ms"] / row["p50_ms"] if before else None,
                       "throughput_ratio": row["throughput"] / before["throughput"] if before else None})
    return result


# ----------------------------------------------------------------------------- reports

TABLE_COLUMNS = ("model", "precision", "provider", "backend", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms",
                 "min ms", "img/s", "vs torch", "vs fp32", "accuracy", "size MB", "session s", "runs")


def _reference(rows: list[dict], row: dict, **match) -> dict | None:
    keys = {k: row[k] for k in ("model", "batch_size")} | match
    return next((r for r in rows if all(r[k] == v for k, v in keys.items())), None)


def table_cells(doc: dict) -> list[list[str]]:
    """The report table as strings, one list per row in TABLE_COLUMNS order. `vs torch` is the
    PyTorch eager row's p50 over this row's (latency speed-up at the same batch size); `vs fp32` is
    this row's throughput over the onnxruntime fp32 row's on the same provider and batch size."""
    rows = doc["rows"]
    cells = []
    for r in rows:
        torch_row = _reference(rows, r, backend="torch")
        fp32_row = _reference(rows, r, backend="onnxruntime", precision="fp32", provider=r["provider"])
        cells.append([
            r["model"], r["precision"], r["provider"], r["backend"], str(r["batch_size"]),
            f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['mean_ms']:.3f}",
            f"{r['min_ms']:.3f}", f"{r['throughput']:,.0f}",
            f"{torch_row['p50_ms'] / r['p50_ms']:.2f}×" if torch_row and r is not torch_row else "",
            f"{r['throughput'] / fp32_row['throughput']:.2f}×" if fp32_row and r is not fp32_row else "",
            f"{r['accuracy']:.2%}" if r.get("accuracy") is not None else "",
            f"{r['file_size_bytes'] / 1e6:.2f}" if r.get("file_size_bytes") else "",
            f"{r['session_create_s']:.3f}", f"{r['warmup_runs']}+{r['runs']}",
        ])
    return cells


def machine_lines(machine: dict) -> list[str]:
    v = machine["versions"]
    cpu = (f"{machine['cpu']} (family {machine['cpu_family']}, model {machine['cpu_model']})"
           if machine.get("cpu_family") else machine["cpu"])
    clock = f", {machine['cpu_mhz']:.0f} MHz" if machine.get("cpu_mhz") else ""
    virtual = ", virtualised" if machine.get("virtualised") else ""
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in machine["gpus"]) or "none"
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [f"CPU: {cpu}, {machine['cores']} cores{clock}{virtual}",
            f"ISA: {', '.join(machine['isa']) or 'none of AVX2/AVX-512/VNNI/AMX'}",
            f"GPU: {gpus}", f"Versions: {versions}; Python {machine['python']}; {machine['os']}"]


def placement_lines(doc: dict) -> list[str]:
    seen = {}
    for r in doc["rows"]:
        if r.get("placement"):
            seen.setdefault((r["model"], r["precision"], r["provider"]), r["placement"])
    return [f"{m} {p} on {prov}: " + ", ".join(f"{k} {n} nodes" for k, n in pl.items())
            for (m, p, prov), pl in seen.items()]


def int8_limit_text(doc: dict) -> str | None:
    """How far the largest-batch int8 CPU row is from this CPU's int8 multiply-add limit."""
    candidates = [r for r in doc["rows"] if r["precision"] == "int8" and r["provider"] == "cpu"
                  and r["backend"] == "onnxruntime" and r.get("multiply_adds_per_item")]
    if not candidates:
        return None
    row = max(candidates, key=lambda r: r["batch_size"])
    peak = int8_peak(doc["machine"], row["threads"])
    macs = row["multiply_adds_per_item"]
    achieved = row["throughput"] * macs
    text = (f"{row['model']} int8 at batch {row['batch_size']}: {row['throughput']:,.0f} img/s × "
            f"{macs / 1e6:.1f} M multiply-adds per image = {achieved / 1e9:.1f} G multiply-adds/s.")
    if peak is None:
        return text + " This CPU has no VNNI, so no int8 limit is estimated."
    rate, assumption = peak
    return (text + f" The int8 limit is ≈ {rate / 1e9:.0f} G multiply-adds/s ({assumption}), i.e. "
            f"≈ {rate / macs:,.0f} img/s: this run reaches {achieved / rate:.1%} of it. The limit counts "
            "only the convolution and dense multiply-adds at full issue rate; the time spent in the "
            "quantize/dequantize, pooling and input-head nodes, memory traffic and pipeline stalls is what "
            "separates a real run from it.")


def markdown_report(doc: dict) -> str:
    rows, machine = doc["rows"], doc["machine"]
    lines = [f"# Benchmark: {machine['slug']}", "",
             f"Measured {doc.get('created', '')} with `{doc.get('command', 'toolkit bench')}`.", "",
             "## Machine", ""] + [f"- {line}" for line in machine_lines(machine)] + ["", "## Results", ""]
    lines += ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(doc)]
    lines += ["", "Latency is per batch. `vs torch`: PyTorch eager fp32 p50 / this row's p50 (same net, batch "
              "and threads). `vs fp32`: this row's throughput / onnxruntime fp32 on the same provider. "
              "`runs`: warm-up + counted.", "", "## Node placement", ""]
    lines += [f"- {line}" for line in placement_lines(doc)] or ["- (no onnxruntime rows)"]
    limit = int8_limit_text(doc)
    if limit:
        lines += ["", "## Distance from the int8 limit", "", limit]
    first = rows[0] if rows else {}
    sources = sorted({r["input"] for r in rows})
    lines += ["", "## How it was measured", "",
              f"- Threads: {first.get('threads')} for onnxruntime (intra-op) and torch alike; warm-up runs excluded; "
              "every counted run timed with `time.perf_counter` and kept in the JSON (`timings_ms`).",
              f"- Inputs: {'; '.join(sources)}, drawn into a rotating set of distinct buffers (enough to span "
              f"{BUFFER_BYTES >> 20} MiB, within {MIN_BUFFERS}–{MAX_BUFFERS} buffers; `input_buffers` in the JSON) "
              "so a run does not find its input in cache.",
              "- Throughput = batch size / mean latency. Accuracy: top-1 on the validation part of `--data`."]
    if any(r["provider"] != "cpu" for r in rows):
        lines += ["- GPU rows use IO binding (inputs and outputs stay on the device) unless `io_binding` is false "
                  "in the JSON (`--include-copy`). TensorRT builds its engine during warm-up; fp16 and int8 "
                  "models run with TensorRT's fp16 / int8 flag."]
    return "\n".join(lines) + "\n"


def plot_report(doc: dict, path: str | os.PathLike) -> Path:
    """p50 latency vs batch size, one line per precision/provider/backend, one panel per model, log-log."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("writing the PNG plot needs matplotlib (a dev dependency: pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in doc["rows"]))
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(6 * max(1, len(models)), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        series: dict[str, list] = {}
        for r in doc["rows"]:
            if r["model"] == model:
                label = f"{r['precision']} {r['provider']}" + (" (torch)" if r["backend"] == "torch" else "")
                series.setdefault(label, []).append((r["batch_size"], r["p50_ms"]))
        for label, points in series.items():
            points.sort()
            ax.plot(*zip(*points), marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({b for points in series.values() for b, _ in points})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel("p50 latency per batch (ms)")
        ax.set_title(model)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(doc["machine"]["slug"])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def result_json(doc: dict) -> str:
    """The document as JSON with one row per line: readable, diffable, and compact despite the
    per-run timings (an indented list would put every timing on a line of its own)."""
    parts = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k != "rows"]
    rows = ",\n".join(f"  {json.dumps(row)}" for row in doc["rows"])
    return "{\n" + ",\n".join(parts) + f',\n "rows": [\n{rows}\n ]\n}}\n'


def write_reports(doc: dict, out_dir: str | os.PathLike, stem: str | None = None) -> list[Path]:
    """<stem>.json, <stem>.md and <stem>.png in `out_dir` (stem: the machine slug). Each file is
    written beside its target and renamed, so an interrupted run never leaves half a report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or doc["machine"]["slug"]
    written = []
    for suffix, write in ((".json", lambda p: p.write_text(result_json(doc))),
                          (".md", lambda p: p.write_text(markdown_report(doc))),
                          (".png", lambda p: plot_report(doc, p))):
        target = out_dir / f"{stem}{suffix}"
        tmp = out_dir / f".{stem}.{os.getpid()}.tmp{suffix}"
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    return written


def print_table(doc: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"toolkit bench — {doc['machine']['slug']}", title_justify="left")
    for i, name in enumerate(TABLE_COLUMNS):
        table.add_column(name, justify="left" if i < 4 else "right")
    for cells in table_cells(doc):
        table.add_row(*cells)
    console.print(table)
    for line in machine_lines(doc["machine"]):
        console.print(line, highlight=False)


def print_comparison(comparison: list[dict], old: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"against {old.get('machine', {}).get('slug', 'the earlier run')} "
                        f"({old.get('created', 'date unknown')})", title_justify="left")
    for i, name in enumerate(("model", "precision", "provider", "backend", "batch", "old p50 ms", "new p50 ms",
                              "speed-up", "throughput ratio")):
        table.add_column(name, justify="left" if i < 4 else "right")
    for c in comparison:
        found = c["speedup"] is not None
        table.add_row(c["model"], c["precision"], c["provider"], c["backend"], str(c["batch_size"]),
                      f"{c['old_p50_ms']:.3f}" if found else "—", f"{c['new_p50_ms']:.3f}",
                      f"{c['speedup']:.2f}×" if found else "new row",
                      f"{c['throughput_ratio']:.2f}×" if found else "")
    console.print(table)
