"""`make gpu-check`: one command that proves the GPU paths on a GPU machine, in under 5 minutes.

1. Versions: the GPU and its driver, the CUDA version the driver supports, the CUDA version
   onnxruntime was built for, the TensorRT library onnxruntime's provider loads (its own version
   number, read from the library) and onnxruntime's.
2. Library discovery, each in a fresh process: a CUDA session with plain onnxruntime without and
   with `onnxruntime.preload_dlls()` (without it a pip-only machine finds no CUDA libraries: that is
   what preloading is for, so it is reported, not failed), and the toolkit's own torch-free path to
   CUDA and TensorRT, which must work.
3. The GPU tests (tests/test_gpu.py) with TOOLKIT_REQUIRE_GPU=1: a skip there is a failure.
4. Parity with the CPU on real images, CUDA and TensorRT, for every precision of the shipped
   models: max |Δ logit| and top-1 agreement (the generator: max and mean |Δ| grey level on fixed
   latents), and whether every compute node ran on the provider → <out>/<machine>.parity.md.
5. `bench` on cpu, cuda and tensorrt at batch 1 and 256 → <out>/<machine>.{json,md,png} (without the
   CPU roof, to stay within the five minutes: `make bench` measures it).

On a machine without a usable GPU it stops at once with one line on stderr and exit status 1.
`--preflight` does only that check (the Makefile runs it before installing the GPU wheels).

    .venv/bin/python benchmarks/gpu_check.py [--seconds 0.5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "cifar10-jpeg" / "train"
PARITY_IMAGES = 1024
BATCH = 256
STEMS = ("cifar_cnn", "cifar_resnet", "dcgan")          # the shipped models whose precisions are checked
BENCH_STEMS = ("cifar_cnn", "dcgan")
# Lowest top-1 agreement with the CPU that passes, per precision (GPU kernels round differently,
# fp16 and int8 more so); the generator's mean |Δ| may be at most this many grey levels.
MIN_AGREEMENT = {"fp32": 0.995, "fp16": 0.99, "int8": 0.97}
MAX_MEAN_GREY = 2.0


def die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def preflight() -> None:
    """Exit with one line unless an NVIDIA driver is here (before any GPU wheel is installed)."""
    from toolkit.edge.runtime import gpu

    if gpu.cuda_driver_version() is None:
        die("no usable GPU here: no NVIDIA driver (libcuda.so.1 does not load); make gpu-check needs a machine "
            "with an NVIDIA GPU")


# ----------------------------------------------------------------------------- 1, 2: versions, discovery

def versions() -> None:
    import onnxruntime as ort

    from toolkit.edge.bench import machine_info
    from toolkit.edge.runtime import gpu
    from toolkit.edge.runtime.ort import ProviderError, check_provider

    try:
        check_provider("cuda")
    except ProviderError as exc:
        die(f"no usable GPU here: {exc}")
    machine = machine_info()
    loaded = gpu.tensorrt_library()
    for g in machine["gpus"]:
        print(f"GPU: {g['name']}, driver {g['driver']}, {g['memory']}")
    print(f"CUDA: driver supports {gpu.cuda_driver_version()}, onnxruntime {ort.__version__} built for "
          f"{gpu.cuda_build_version()}")
    print(f"TensorRT: {f'{loaded[1]} loaded from {loaded[0]}' if loaded else 'not loadable'} (onnxruntime's "
          f"provider links {gpu.linked_soname('libonnxruntime_providers_tensorrt.so', 'libnvinfer')})")


PROBE = """
import onnx, onnxruntime as ort, sys, tempfile, os
from onnx import TensorProto, helper
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "p",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
path = os.path.join(tempfile.mkdtemp(), "p.onnx")
onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
ort.set_default_logger_severity(4)
if PRELOAD:
    ort.preload_dlls()
s = ort.InferenceSession(path, providers=["CUDAExecutionProvider"])
sys.exit(0 if "CUDAExecutionProvider" in s.get_providers() else 3)
"""
TOOLKIT_PROBE = ("import sys; from toolkit.edge.runtime.ort import check_provider; check_provider({provider!r}); "
                 "assert 'torch' not in sys.modules, 'torch was imported'")


def fresh(code: str) -> tuple[bool, str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False)
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return result.returncode == 0, lines[-1] if lines else ""


def discovery() -> list[str]:
    failures = []
    for preload in (False, True):
        ok, why = fresh(PROBE.replace("PRELOAD", str(preload)))
        print(f"plain onnxruntime, CUDA session {'with' if preload else 'without'} preload_dlls(): "
              f"{'found the libraries' if ok else 'CPU only' + (f' ({why})' if why else '')}")
        if preload and not ok:
            failures.append("onnxruntime.preload_dlls() did not make CUDA loadable")
    for provider in ("cuda", "tensorrt"):
        ok, why = fresh(TOOLKIT_PROBE.format(provider=provider))
        print(f"toolkit (fresh process, no torch) on {provider}: {'ok' if ok else why}")
        if not ok:
            failures.append(f"toolkit cannot run {provider} in a fresh process: {why}")
    return failures


def gpu_tests() -> list[str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                             str(ROOT / "tests" / "test_gpu.py")], cwd=ROOT, text=True, capture_output=True,
                            env={**os.environ, "TOOLKIT_REQUIRE_GPU": "1"}, timeout=600, check=False)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()[-300:]
    print(f"tests/test_gpu.py with TOOLKIT_REQUIRE_GPU=1: {summary}")
    if result.returncode != 0:
        print(result.stdout[-4000:])
        return [f"GPU tests failed: {summary}"]
    return []


# ----------------------------------------------------------------------------- 4: parity

def real_images(size: tuple[int, int]) -> tuple[np.ndarray, str]:
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.data.images import list_images, load_image, resize

    if DATA.is_dir():
        return read_split(DATA, "val", size, limit=PARITY_IMAGES).images, f"{PARITY_IMAGES} validation images"
    samples = sorted(list_images(ROOT / "models" / "samples"))
    return np.stack([resize(load_image(p), *size) for p in samples]), f"the {len(samples)} sample images"


def padded(chunk: np.ndarray) -> np.ndarray:
    """`chunk` filled up to BATCH items with copies of its last one (the TensorRT engine's one shape)."""
    return np.concatenate([chunk, np.repeat(chunk[-1:], BATCH - len(chunk), axis=0)]) if len(chunk) < BATCH else chunk


def run_padded(model, feed: np.ndarray) -> np.ndarray:
    """Outputs for `feed`, run in chunks of exactly BATCH."""
    return np.concatenate([model.session.run(None, {model.input.name: padded(feed[i:i + BATCH])})[0][:BATCH]
                           [:len(feed[i:i + BATCH])] for i in range(0, len(feed), BATCH)])


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


def parity(out: Path, slug: str) -> list[str]:
    from toolkit.edge.data.fsio import atomic_write
    from toolkit.edge.runtime.ort import ProviderError, first_run, int8_target, open_model, placement

    failures, lines = [], []
    inputs_seen = set()
    for path in shipped_files():
        cpu = open_model(path, "cpu")
        spec = cpu.input
        if cpu.task == "generate":
            dim = int(cpu.metadata.get("toolkit.latent_dim") or spec.shape[1])
            feed = np.random.default_rng(0).standard_normal((BATCH, dim)).astype(np.float32)
            source = f"{BATCH} fixed latents"
        else:
            feed, source = real_images(cpu.input_hw or (32, 32))
        inputs_seen.add(source)
        expected = run_padded(cpu, feed)
        label = f"{cpu.precision}{' (TensorRT scheme)' if int8_target(cpu.metadata) == 'tensorrt' else ''}"
        cpu_scheme_int8 = int8_target(cpu.metadata) == "cpu"
        for provider in ("cuda", "tensorrt"):
            shapes = {spec.name: (BATCH, *feed.shape[1:])}
            try:
                model = open_model(path, provider, shapes=shapes if provider == "tensorrt" else None,
                                   trt_fp16=cpu.precision == "fp16")
                first_run(model, {spec.name: padded(feed[:BATCH])})
            except ProviderError as exc:
                # uint8 Q/DQ is not TensorRT's int8 (the `--target tensorrt` file is): noted, not a failure.
                expected_failure = provider == "tensorrt" and cpu_scheme_int8
                lines.append(f"| {path.name} | {label} | {provider} | — | — | does not run: {exc} |")
                print("  " + lines[-1].strip("| ").replace(" | ", ", "))
                if not expected_failure:
                    failures.append(f"{path.name} on {provider}: {exc}")
                continue
            got = run_padded(model, feed)
            where = placement(model)
            placed = "all" if where.complete else "partial: " + ", ".join(where.elsewhere[:3])
            if cpu.task == "generate":
                diff = np.abs(got.astype(np.int16) - expected.astype(np.int16))
                verdict = diff.mean() <= MAX_MEAN_GREY
                lines.append(f"| {path.name} | {label} | {provider} | {diff.max()} grey levels "
                             f"(mean {diff.mean():.3f}) | — | {placed} |")
            else:
                agreement = float(np.mean(got.argmax(1) == expected.argmax(1)))
                verdict = agreement >= MIN_AGREEMENT.get(cpu.precision, 0.97)
                lines.append(f"| {path.name} | {label} | {provider} | {np.abs(got - expected).max():.4g} | "
                             f"{agreement:.2%} | {placed} |")
            print("  " + lines[-1].strip("| ").replace(" | ", ", "))
            if not verdict:
                failures.append(f"{path.name} on {provider} differs from the CPU beyond the limit ({lines[-1]})")
    limits = ", ".join(f"{v:.1%} ({k})" for k, v in MIN_AGREEMENT.items())
    text = "\n".join([
        f"# GPU parity: {slug}", "",
        (f"CUDA and TensorRT against onnxruntime on the CPU: same file, same inputs "
         f"({'; '.join(sorted(inputs_seen))}); TensorRT engines built for batch {BATCH}. Limits: top-1 agreement at "
         f"least {limits}; the generator's mean difference at most {MAX_MEAN_GREY} grey levels. Last column: whether "
         "every Conv / Gemm / MatMul ran on that provider (a CPU-scheme int8 file on TensorRT is expected to be "
         "partial)."), "",
        "| file | precision | provider | largest difference (logit or grey level) | top-1 agreement | compute nodes |",
        "|---|---|---|---:|---:|---|", *lines, ""])
    written = atomic_write(out / f"{slug}.parity.md", lambda p: p.write_text(text))
    print(f"wrote {written}")
    return failures


# ----------------------------------------------------------------------------- 5: bench

def benchmark(out: Path, seconds: float) -> list[str]:
    import onnx

    from toolkit.edge import bench
    from toolkit.edge.contract import read_metadata
    from toolkit.edge.runtime.ort import int8_target

    models = [p for p in shipped_files() if p.name.split(".")[0] in BENCH_STEMS]
    cfg = bench.BenchConfig(models=models, providers=["cpu", "cuda", "tensorrt"], batch_sizes=[1, BATCH],
                            seconds=seconds, warmup=3, data=DATA if DATA.is_dir() else None, roof=False)
    errors: list[str] = []

    def on_row(row: dict) -> None:
        marker = "" if row.get("placement_ok", True) else " (not all compute nodes on it)"
        build = f", engine {row['engine_build_s']:.1f} s" if row.get("engine_build_s") is not None else ""
        print(f"  {row['model']} {row['precision']} {row['provider']} batch {row['batch_size']}: p50 "
              f"{row['p50_ms']:.3f} ms, {row['throughput']:,.0f} img/s{build}{marker}", flush=True)

    doc = bench.run_benchmark(cfg, on_row=on_row, on_error=errors.append)
    for path in bench.write_reports(doc, out):
        print(f"wrote {path}")
    # A CPU-scheme (uint8 Q/DQ) int8 file that TensorRT cannot build is reported, not failed: TensorRT's
    # int8 is the `--target tensorrt` file.
    cpu_scheme = [p for p in models if int8_target(read_metadata(onnx.load(str(p), load_external_data=False)))
                  == "cpu"]
    expected = [e for e in errors if "tensorrt" in e and any(p.name in e for p in cpu_scheme)]
    for e in expected:
        print(f"  note: {e}")
    return [f"bench: {e}" for e in errors if e not in expected]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preflight", action="store_true", help="only check that an NVIDIA GPU and driver are here")
    parser.add_argument("--seconds", type=float, default=0.5, help="counted time per bench row (default 0.5)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    args = parser.parse_args()
    preflight()
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
