"""`make gpu-check`: one command that proves the GPU paths on a GPU machine, in under 5 minutes,
installing nothing.

0. What it needs (benchmarks/gpu_preflight.py): an NVIDIA driver, Python ≥ 3.11, onnxruntime-gpu
   (installed, or from a wheel or unpacked folder: `--ort-gpu PATH`, `$ORT_GPU`, `.gpu/site`), the
   CUDA and cuDNN libraries, the Python packages and the shipped model files; each missing piece is
   one line on stderr and exit status 1 (without a driver, that line alone).
1. Versions: the GPU and its driver, the CUDA version the driver supports, the CUDA version
   onnxruntime was built for, the TensorRT library onnxruntime's provider loads (its own version
   number, read from the library after the wheel's libraries are loaded) and onnxruntime's.
2. Library discovery, each in a fresh process: a CUDA session running a convolution with plain
   onnxruntime without and with `onnxruntime.preload_dlls()` (without it a pip-only machine finds no
   CUDA libraries: that is what preloading is for, so it is reported, not failed), and the
   toolkit's own torch-free path to CUDA and TensorRT, which must work (TensorRT only where its
   libraries are here: otherwise its rows say "not measured here").
3. The GPU tests (tests/test_gpu.py) with TOOLKIT_REQUIRE_GPU=1: a skip there is a failure.
4. Parity with the CPU on real images, CUDA and TensorRT, for every shipped model file made for
   that provider (an int8 file states its runtime in `toolkit.calibration`; it is skipped on the
   others, with the reason): max |Δ logit| and top-1 agreement (the generator: max and mean |Δ| grey
   level on fixed latents), and whether every compute node ran on the provider → <out>/<machine>.parity.md.
5. `bench` on cpu, cuda and tensorrt at batch 1 and 256 → <out>/<machine>.{json,md,png} (without the
   CPU roof, to stay within the five minutes: `make bench` measures it).

    python benchmarks/gpu_check.py [--ort-gpu PATH] [--seconds 0.5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_preflight import ROOT, STEMS, missing_pieces  # beside this script; standard library only

DATA = ROOT / "data" / "cifar10-png" / "train"
PARITY_IMAGES = 1024
BATCH = 256
BENCH_STEMS = ("cifar_cnn", "dcgan")
GPU = ("cuda", "tensorrt")
# Lowest top-1 agreement with the CPU that passes, per precision (GPU kernels round differently,
# fp16 and int8 more so); the generator's mean |Δ| may be at most this many grey levels.
MIN_AGREEMENT = {"fp32": 0.995, "fp16": 0.99, "int8": 0.97}
MAX_MEAN_GREY = 2.0


def die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def preflight(ort_gpu: str | None) -> None:
    """Exit with one line per missing piece unless everything gpu-check needs is here."""
    lines = missing_pieces(ort_gpu)
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    if lines:
        sys.exit(1)


def made_for(metadata: dict, provider: str) -> str | None:
    """None when a file is made for `provider`, else why not: an int8 file is for the runtime whose
    scheme it was quantized in (`toolkit.calibration` target), float files are for every provider."""
    from toolkit.edge.runtime.model import int8_target
    from toolkit.edge.runtime.registry import int8_target_of

    target = int8_target(metadata)
    if target is None or target == int8_target_of(provider):
        return None
    return (f"quantized for {target} (its int8 scheme), not for {provider}, which takes the "
            f"{int8_target_of(provider)} scheme")


# ----------------------------------------------------------------------------- 1, 2: versions, discovery

def versions() -> list[str]:
    import onnxruntime as ort

    from toolkit.edge.bench import machine_info
    from toolkit.edge.runtime import gpu
    from toolkit.edge.runtime.open import ProviderError, check_provider

    try:
        check_provider("cuda")
    except ProviderError as exc:
        die(f"no usable GPU here: {exc}")
    machine = machine_info()
    loaded = gpu.tensorrt_library()
    for g in machine["gpus"]:
        print(f"GPU: {g['name']}, driver {g['driver']}, {g['memory']}")
    print(f"CUDA: driver supports {gpu.cuda_driver_version()}, onnxruntime {ort.__version__} built for "
          f"{gpu.cuda_build_version()} (from {Path(ort.__file__).parent.parent})")
    print(f"TensorRT: {f'{loaded[1]} loaded from {loaded[0]}' if loaded else 'not here'} (onnxruntime's "
          f"provider links {gpu.linked_soname('libonnxruntime_providers_tensorrt.so', 'libnvinfer')})")
    return []


# Plain onnxruntime, a CUDA session that runs a convolution: the CUDA provider loads cuDNN only
# when the first one runs, so a session alone proves nothing about cuDNN.
PROBE = """
import numpy as np, onnx, onnxruntime as ort, sys, tempfile, os
from onnx import TensorProto, helper, numpy_helper
w = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "p",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], [w])
path = os.path.join(tempfile.mkdtemp(), "p.onnx")
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
ort.set_default_logger_severity(4)
if PRELOAD:
    ort.preload_dlls()
s = ort.InferenceSession(path, providers=["CUDAExecutionProvider"])
if "CUDAExecutionProvider" not in s.get_providers():
    sys.exit(3)
y = s.run(None, {"x": np.ones((1, 1, 4, 4), np.float32)})[0]
sys.exit(0 if float(y[0, 0, 1, 1]) == 9.0 else 4)
"""
TOOLKIT_PROBE = ("import sys; from toolkit.edge.runtime.open import check_provider; check_provider({provider!r}); "
                 "assert 'torch' not in sys.modules, 'torch was imported'")


def fresh(code: str) -> tuple[bool, str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False)
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return result.returncode == 0, lines[-1] if lines else ""


def tensorrt_absent() -> str | None:
    """Why TensorRT is not measured here when its libraries are not installed, else None (then a
    TensorRT that does not run is a failure like any other)."""
    if tensorrt_libraries_here():
        return None
    return "TensorRT's libraries are not installed here (no tensorrt_libs wheel, no libnvinfer on the loader's path)"


def discovery() -> list[str]:
    failures = []
    for preload in (False, True):
        ok, why = fresh(PROBE.replace("PRELOAD", str(preload)))
        print(f"plain onnxruntime, a convolution on CUDA {'with' if preload else 'without'} preload_dlls(): "
              f"{'ran' if ok else 'did not run' + (f' ({why})' if why else '')}")
        if preload and not ok:
            failures.append("onnxruntime.preload_dlls() did not make a CUDA convolution run")
    for provider in GPU:
        ok, why = fresh(TOOLKIT_PROBE.format(provider=provider))
        print(f"toolkit (fresh process, no torch) on {provider}: {'ok' if ok else why}")
        if not ok and (provider == "cuda" or tensorrt_absent() is None):
            failures.append(f"toolkit cannot run {provider} in a fresh process: {why}")
    return failures


def tensorrt_libraries_here() -> bool:
    """Whether TensorRT's libraries are installed: its wheel, or a libnvinfer the loader finds."""
    import ctypes

    from toolkit.edge.runtime import gpu

    if gpu.tensorrt_wheel_dir() is not None:
        return True
    soname = gpu.linked_soname("libonnxruntime_providers_tensorrt.so", "libnvinfer") or "libnvinfer.so.10"
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def gpu_tests() -> list[str]:
    # Without TensorRT's libraries (gigabytes; not every GPU machine has them) its tests are left
    # out and said so, like its rows: under TOOLKIT_REQUIRE_GPU=1 they would fail for that alone.
    no_trt = tensorrt_absent()
    select = ["-k", "not tensorrt"] if no_trt else []
    result = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                             *select, str(ROOT / "tests" / "test_gpu.py")], cwd=ROOT, text=True, capture_output=True,
                            env={**os.environ, "TOOLKIT_REQUIRE_GPU": "1"}, timeout=600, check=False)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()[-300:]
    print(f"tests/test_gpu.py with TOOLKIT_REQUIRE_GPU=1: {summary}"
          + (f" (TensorRT tests not run: {no_trt})" if no_trt else ""))
    if result.returncode != 0:
        print(result.stdout[-4000:])
        return [f"GPU tests failed: {summary}"]
    return []


# ----------------------------------------------------------------------------- 4: parity

def real_images(size: tuple[int, int]) -> tuple[np.ndarray, str]:
    import numpy as np

    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.data.images import list_images, load_image, resize

    if DATA.is_dir():
        return read_split(DATA, "val", size, limit=PARITY_IMAGES).images, f"{PARITY_IMAGES} validation images"
    samples = sorted(list_images(ROOT / "models" / "samples"))
    return np.stack([resize(load_image(p), *size) for p in samples]), f"the {len(samples)} sample images"


def padded(chunk: np.ndarray) -> np.ndarray:
    """`chunk` filled up to BATCH items with copies of its last one (the TensorRT engine's one shape)."""
    import numpy as np

    return np.concatenate([chunk, np.repeat(chunk[-1:], BATCH - len(chunk), axis=0)]) if len(chunk) < BATCH else chunk


def run_padded(model, feed: np.ndarray) -> np.ndarray:
    """Outputs for `feed`, run in chunks of exactly BATCH."""
    import numpy as np

    return np.concatenate([model.run(padded(feed[i:i + BATCH]))[:len(feed[i:i + BATCH])]
                           for i in range(0, len(feed), BATCH)])


def shipped_files() -> list[Path]:
    """Every precision of the shipped models: <stem>.onnx and <stem>.<variant>.onnx, except the
    models built on top of them (flip averaging, a fused low-pass)."""
    files = []
    for stem in STEMS:
        variants = [p for p in (ROOT / "models").glob(f"{stem}.*.onnx")
                    if not any(t in p.name for t in (".tta.", ".fft_lowpass."))]
        fp32 = ROOT / "models" / f"{stem}.onnx"
        files += ([fp32] if fp32.is_file() else []) + sorted(variants)
    return files


def compare(cpu, got: np.ndarray, expected: np.ndarray) -> tuple[str, bool]:
    """The table cells (largest difference, agreement) and whether they are within the limits."""
    import numpy as np

    if cpu.task == "generate":
        diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
        return f"{diff.max()} grey levels (mean {diff.mean():.3f}) | —", bool(diff.mean() <= MAX_MEAN_GREY)
    agreement = float(np.mean(got.argmax(1) == expected.argmax(1)))
    return (f"{np.abs(got - expected).max():.4g} | {agreement:.2%}",
            agreement >= MIN_AGREEMENT.get(cpu.precision, 0.97))


def parity_rows(path: Path, providers: list[str], no_trt: str | None, inputs_seen: set) -> tuple[list[str], list[str]]:
    """The parity table's rows for one file, and its failures."""
    import numpy as np

    from toolkit.edge.runtime.model import int8_target
    from toolkit.edge.runtime.open import ModelError, ProviderError, open_model

    cpu = open_model(path, "cpu")
    if cpu.task == "generate":
        dim = int(cpu.metadata.get("toolkit.latent_dim") or cpu.input.shape[1])
        feed = np.random.default_rng(0).standard_normal((BATCH, dim)).astype(np.float32)
        inputs_seen.add(f"{BATCH} fixed latents")
    else:
        feed, source = real_images(cpu.input_hw or (32, 32))
        inputs_seen.add(source)
    expected = run_padded(cpu, feed)
    label = f"{cpu.precision}{f' ({int8_target(cpu.metadata)} scheme)' if int8_target(cpu.metadata) else ''}"
    rows, failures = [], []
    for provider in providers:
        skip = made_for(cpu.metadata, provider) or (f"not measured here: {no_trt}" if provider == "tensorrt"
                                                     and no_trt else None)
        if skip:
            rows.append(f"| {path.name} | {label} | {provider} | — | — | skipped: {skip} |")
            continue
        try:
            model = open_model(path, provider, shapes={cpu.input.name: (BATCH, *feed.shape[1:])}
                               if provider == "tensorrt" else None, trt_fp16=cpu.precision == "fp16")
            model.first_run({cpu.input.name: padded(feed[:BATCH])})
            got = run_padded(model, feed)
        except (ProviderError, ModelError) as exc:
            rows.append(f"| {path.name} | {label} | {provider} | — | — | does not run: {exc} |")
            failures.append(f"{path.name} on {provider}: {exc}")
            continue
        where = model.placement()
        placed = "all" if where.complete else "partial: " + ", ".join(where.elsewhere[:3])
        cells, ok = compare(cpu, got, expected)
        rows.append(f"| {path.name} | {label} | {provider} | {cells} | {placed} |")
        if not ok:
            failures.append(f"{path.name} on {provider} differs from the CPU beyond the limit ({rows[-1]})")
        if not where.complete:
            failures.append(f"{path.name} on {provider}: compute nodes elsewhere ({placed})")
    return rows, failures


def parity(out: Path, slug: str) -> list[str]:
    from toolkit.edge.data.fsio import atomic_write

    no_trt = tensorrt_absent()
    failures, lines = [], []
    inputs_seen: set[str] = set()
    for path in shipped_files():
        rows, failed = parity_rows(path, list(GPU), no_trt, inputs_seen)
        for row in rows:
            print("  " + row.strip("| ").replace(" | ", ", "))
        lines += rows
        failures += failed
    limits = ", ".join(f"{v:.1%} ({k})" for k, v in MIN_AGREEMENT.items())
    text = "\n".join([
        f"# GPU parity: {slug}", "",
        (f"CUDA and TensorRT against onnxruntime on the CPU: same file, same inputs "
         f"({'; '.join(sorted(inputs_seen))}); TensorRT engines built for batch {BATCH}. Limits: top-1 agreement at "
         f"least {limits}; the generator's mean difference at most {MAX_MEAN_GREY} grey levels. Last column: whether "
         "every Conv / Gemm / MatMul ran on that provider. An int8 file runs only on the runtime it was quantized "
         "for (`toolkit.calibration` target); the others say so."), "",
        "| file | precision | provider | largest difference (logit or grey level) | top-1 agreement | compute nodes |",
        "|---|---|---|---:|---:|---|", *lines, ""])
    written = atomic_write(out / f"{slug}.parity.md", lambda p: p.write_text(text))
    print(f"wrote {written}")
    return failures


# ----------------------------------------------------------------------------- 5: bench

def benchmark(out: Path, seconds: float) -> list[str]:
    from toolkit.edge import bench

    no_trt = tensorrt_absent()
    providers = ["cpu", "cuda"] + ([] if no_trt else ["tensorrt"])
    models = [p for p in shipped_files() if p.name.split(".")[0] in BENCH_STEMS]
    cfg = bench.BenchConfig(models=models, providers=providers, batch_sizes=[1, BATCH],
                            seconds=seconds, warmup=3, data=DATA if DATA.is_dir() else None, roof=False)
    errors: list[str] = []

    def on_row(row: dict) -> None:
        marker = "" if row.get("placement_ok", True) else " (not all compute nodes on it)"
        build = f", engine {row['engine_build_s']:.1f} s" if row.get("engine_build_s") is not None else ""
        print(f"  {row['model']} {row['precision']} {row['provider']} batch {row['batch_size']}: p50 "
              f"{row['p50_ms']:.3f} ms, {row['throughput']:,.0f} img/s{build}{marker}", flush=True)

    doc = bench.run_benchmark(cfg, on_row=on_row, on_error=errors.append)
    written = bench.write_reports(doc, out)
    if no_trt:
        report = next(p for p in written if p.suffix == ".md")
        report.write_text(report.read_text() + f"\nTensorRT: not measured here ({no_trt}).\n")
    for path in written:
        print(f"wrote {path}")
    return [f"bench: {e}" for e in errors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ort-gpu", help="onnxruntime-gpu wheel or unpacked folder, when it is not installed "
                        "(default: $ORT_GPU, else .gpu/site)")
    parser.add_argument("--preflight", action="store_true", help="only check that everything needed is here")
    parser.add_argument("--seconds", type=float, default=0.5, help="counted time per bench row (default 0.5)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    args = parser.parse_args()
    preflight(args.ort_gpu)
    if args.preflight:
        return
    from toolkit.edge.bench import machine_slug
    from toolkit.edge.bench.machine import machine_info

    start = time.perf_counter()
    failures: list[str] = []
    steps = [("versions", versions), ("library discovery", discovery), ("GPU tests", gpu_tests),
             ("parity with the CPU", lambda: parity(args.out, machine_slug(machine_info()))),
             ("bench: cpu, cuda, tensorrt at batch 1 and 256", lambda: benchmark(args.out, args.seconds))]
    for name, step in steps:
        began = time.perf_counter()
        print(f"== {name}", flush=True)
        failures += step() or []
        print(f"   ({time.perf_counter() - began:.0f} s)", flush=True)
    total = time.perf_counter() - start
    print(f"gpu-check: {len(failures)} failed check{'s' if len(failures) != 1 else ''} in {total:.0f} s"
          + ("" if total < 300 else " (over the 5-minute budget)"))
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
