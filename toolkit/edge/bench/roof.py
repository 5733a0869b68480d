"""The measured roof every report carries, in two parts, both measured in the same run as the rows:

1. What the cores can issue: the all-core clock under load and the per-core rates of the int8
   (VPDPBUSD), fp32 (FMA) and bf16 (VDPBF16PS) multiply-add instructions, from roof.c — a tiny C
   microbenchmark built once per machine with the system compiler (`-march=native`; `make install`
   builds it, otherwise the first bench does) into the toolkit's cache folder. Without a compiler
   this part is left out and the report says so; the GEMM part still stands.
2. What each runtime reaches on a large GEMM: int8 as DequantizeLinear → MatMul → QuantizeLinear
   (uint8 activations, int8 per-column weights; onnxruntime fuses it into QLinearMatMul), fp32 as
   a MatMul, bf16 as that MatMul under OpenVINO's bf16 hint — the best of a few shapes.

Each row then gets its share of both: its multiply-adds per second (throughput × the model's
Conv/MatMul/Gemm multiply-adds per item) over the roof of the precision it computes in.

    python -m toolkit.edge.bench             # build the probe (make install does) and print the roof
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from toolkit.edge.runtime import (
    DEFAULT_CACHE,
    ModelError,
    ProviderError,
    check_provider,
    cpu_provider_of,
    open_model,
    provider_facts,
    provider_is_cpu_side,
    providers_with,
    runtime_of,
)

SOURCE = Path(__file__).with_name("roof.c")
PROBE_SECONDS = 0.05               # per repeat and test; roof.c keeps the best of 5 repeats
GEMM_SHAPES = ((1024, 1024, 1024), (4096, 576, 64), (256, 2304, 512))   # M × K × N
GEMM_SECONDS, GEMM_REPEATS = 0.05, 5
KINDS = ("int8", "fp32", "bf16")
CFLAGS = ("-O2", "-march=native", "-pthread")


def find_compiler() -> str | None:
    """$CC, else the first of cc, gcc, clang on PATH."""
    candidates = [os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]
    return next((c for c in candidates if shutil.which(c)), None)


def build_probe(cache_dir: Path | None = None) -> tuple[Path | None, str]:
    """(the probe binary, how it was built), or (None, why it could not be). The binary is keyed by
    the source, the compiler and the CPU, so a changed source or another machine rebuilds it."""
    from toolkit.edge.bench.machine import _cpuinfo

    compiler = find_compiler()
    if compiler is None:
        return None, "no C compiler found (cc, gcc or clang; set CC)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{compiler} does not run ({exc})"
    version_line = (version.stdout.strip().splitlines() or [compiler])[0]
    cpu = _cpuinfo()
    key = hashlib.sha256(SOURCE.read_bytes() + version_line.encode() + " ".join(CFLAGS).encode()
                         + (cpu.get("model name", "") + cpu.get("flags", "")).encode()).hexdigest()[:16]
    folder = Path(cache_dir or DEFAULT_CACHE / "roof")
    binary = folder / f"roof-{key}"
    how = f"{version_line}, {' '.join(CFLAGS)}"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary, how
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".roof-{key}.{os.getpid()}.tmp"
    try:
        built = subprocess.run([compiler, *CFLAGS, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True,
                               check=False, timeout=120)
        if built.returncode != 0:
            lines = [line for line in built.stderr.splitlines() if "error" in line] or built.stderr.splitlines()
            return None, f"{compiler} could not build roof.c ({(lines or ['no message'])[0].strip()[:200]})"
        os.replace(tmp, binary)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{compiler} could not build roof.c ({exc})"
    finally:
        tmp.unlink(missing_ok=True)
    return binary, how


def issue_rates(threads: int, seconds: float = PROBE_SECONDS, cache_dir: Path | None = None) -> tuple[dict | None, str]:
    """The probe's measurement on `threads` cores: ({clock_ghz, int8/fp32/bf16: {instruction,
    macs_per_instruction, per_cycle, macs_per_s}}, how), or (None, why not)."""
    binary, how = build_probe(cache_dir)
    if binary is None:
        return None, how
    try:
        out = subprocess.run([str(binary), str(threads), str(seconds)], capture_output=True, text=True, check=False,
                             timeout=120)
        raw = json.loads(out.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        return None, f"the roof probe failed ({exc})"
    if not raw.get("clock_known"):
        return None, "the roof probe measures the clock only on x86-64"
    clocks = raw["clock_hz"]
    result: dict = {"clock_ghz": float(np.mean(clocks)) / 1e9, "threads": threads}
    for kind in KINDS:
        test = raw[kind]
        if not test["macs_per_instruction"]:
            continue
        per_thread = test["per_thread"]
        result[kind] = {"instruction": test["instruction"], "macs_per_instruction": test["macs_per_instruction"],
                        "per_cycle": float(np.mean([r / c for r, c in zip(per_thread, clocks)])),
                        "macs_per_s": float(sum(per_thread)) * test["macs_per_instruction"]}
    return result, how


# ----------------------------------------------------------------------------- the runtime's GEMM

def gemm_graph(m: int, k: int, n: int, int8: bool):
    """y = x · w as the runtime sees a quantized or float dense layer."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        consts = {"w": rng.integers(-127, 128, (k, n), dtype=np.int8), "x_scale": np.float32(0.02),
                  "x_zero": np.uint8(128), "w_scale": np.full(n, 0.01, np.float32), "w_zero": np.zeros(n, np.int8),
                  "y_scale": np.float32(0.5), "y_zero": np.uint8(128)}
        nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zero"], ["xf"]),
                 helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wf"], axis=1),
                 helper.make_node("MatMul", ["xf", "wf"], ["yf"]),
                 helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["y"])]
        dtype = TensorProto.UINT8
    else:
        consts = {"w": rng.standard_normal((k, n)).astype(np.float32)}
        nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
        dtype = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", dtype, [m, k])],
                              [helper.make_tensor_value_info("y", dtype, [m, n])],
                              [numpy_helper.from_array(np.asarray(v), name) for name, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _best_rate(call: Callable[[], object], macs: int) -> float:
    for _ in range(3):
        call()
    best = 0.0
    for _ in range(GEMM_REPEATS):
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < GEMM_SECONDS:
            call()
            n += 1
        best = max(best, n * macs / (time.perf_counter() - start))
    return best


def gemm_rates(runtime: str, threads: int, log: Callable[[str], None]) -> dict:
    """{kind: {macs_per_s, shape}}: the best GEMM rate `runtime` (onnxruntime | openvino) reaches."""
    import onnx


    provider = cpu_provider_of(runtime)
    hinted = provider_facts(provider).precision_hint
    kinds = [("int8", True, None), ("fp32", False, "f32" if hinted else None)]
    if hinted:
        kinds.append(("bf16", False, "bf16"))
    best: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, int8, hint in kinds:
            for m, k, n in GEMM_SHAPES:
                path = Path(tmp) / f"gemm_{kind}_{m}x{k}x{n}.onnx"
                onnx.save(gemm_graph(m, k, n, int8), path)
                try:
                    model = open_model(path, provider, threads=threads, cache_dir=Path(tmp), precision_hint=hint)
                except (ProviderError, ModelError) as exc:
                    log(f"roof: {runtime} {kind} GEMM not measured ({exc})")
                    break
                rng = np.random.default_rng(1)
                x = rng.integers(0, 256, (m, k), dtype=np.uint8) if int8 else rng.standard_normal((m, k), np.float32)
                rate = _best_rate(partial(model.run_feeds, {"x": x}), m * k * n)
                if rate > best.get(kind, {}).get("macs_per_s", 0):
                    best[kind] = {"macs_per_s": rate, "shape": [m, k, n]}
    return best


def remeasure_roof(roof: dict, log: Callable[[str], None] | None = None) -> None:
    """Measure the issue rates and each runtime's GEMM again and keep the better rates: called after
    the rows, so a roof taken while the machine was briefly busy (a runtime's thread pool still
    spinning, a neighbour) does not flatter the rows measured in between."""
    isa = roof.get("isa")
    if isa:
        again_isa, _ = issue_rates(roof["threads"])
        for kind in KINDS:
            better = again_isa and kind in again_isa and \
                again_isa[kind]["macs_per_s"] > isa.get(kind, {}).get("macs_per_s", 0)
            if better and again_isa:
                isa[kind] = again_isa[kind]
                if kind == "int8":
                    isa["clock_ghz"] = again_isa["clock_ghz"]
    for runtime, kinds in roof["gemm"].items():
        for kind, again in gemm_rates(runtime, roof["threads"], log or (lambda message: None)).items():
            if again["macs_per_s"] > kinds.get(kind, {}).get("macs_per_s", 0):
                kinds[kind] = again


def measure_roof(threads: int, runtimes: list[str], log: Callable[[str], None] | None = None) -> dict:
    """Both parts of the roof for `threads` cores and the given runtimes."""
    log = log or (lambda message: None)
    isa, how = issue_rates(threads)
    roof: dict = {"threads": threads, "isa": isa, "probe": how if isa else None, "probe_missing": None if isa else how,
                  "gemm": {}}
    if isa:
        log(f"roof: all-core clock {isa['clock_ghz']:.2f} GHz; " + ", ".join(
            f"{kind} {isa[kind]['per_cycle']:.2f}/cycle/core = {isa[kind]['macs_per_s'] / 1e9:,.0f} G MAC/s"
            for kind in KINDS if kind in isa))
    else:
        log(f"roof: issue rates not measured: {how}")
    for runtime in runtimes:
        roof["gemm"][runtime] = gemm_rates(runtime, threads, log)
        log(f"roof: {runtime} GEMM " + ", ".join(f"{kind} {v['macs_per_s'] / 1e9:,.0f} G MAC/s"
                                                 for kind, v in roof["gemm"][runtime].items()))
    return roof


# ----------------------------------------------------------------------------- a row's share

def compute_kind(row: dict) -> str:
    """The roof a row is held against: int8 files → int8; a bf16 hint → bf16; else fp32 (fp16 files
    too: the CPU runtimes compute their convolutions in fp32)."""
    if row["precision"] == "int8":
        return "int8"
    return "bf16" if row.get("compute") == "bf16" else "fp32"


def shares(row: dict, roof: dict | None) -> tuple[float | None, float | None]:
    """(share of the ISA roof, share of the runtime's own GEMM roof) for a CPU row; None where
    either side is unknown (GPU rows, models without counted multiply-adds, no probe)."""
    macs = row.get("multiply_adds_per_item")
    if not roof or not macs or not provider_is_cpu_side(row["provider"]):
        return None, None
    achieved = row["throughput"] * macs
    kind = compute_kind(row)
    isa = (roof.get("isa") or {}).get(kind)
    gemm = roof.get("gemm", {}).get(row["backend"], {}).get(kind)
    return (achieved / isa["macs_per_s"] if isa else None, achieved / gemm["macs_per_s"] if gemm else None)


def roof_lines(roof: dict) -> list[str]:
    """The roof and its assumptions, as markdown lines."""
    lines = []
    isa = roof.get("isa")
    if isa:
        lines.append(f"- Cores: {roof['threads']} threads, one per core, all loaded at once; all-core clock under "
                     f"load **{isa['clock_ghz']:.2f} GHz** (a chain of dependent adds, one per cycle).")
        for kind in KINDS:
            if kind in isa:
                v = isa[kind]
                lines.append(f"- {kind} issue roof: {v['instruction']}, {v['per_cycle']:.2f} per cycle per core × "
                             f"{v['macs_per_instruction']} multiply-adds = **{v['macs_per_s'] / 1e9:,.0f} G "
                             f"multiply-adds/s** on {roof['threads']} cores.")
        lines.append(f"- Probe: roof.c ({roof['probe']}), 16 independent accumulator chains per instruction, best "
                     f"of 5 × {PROBE_SECONDS * 1e3:.0f} ms on every core at once, before and after the rows "
                     "(the better kept). AMX, if present, is not measured.")
    else:
        lines.append(f"- Issue rates not measured: {roof.get('probe_missing')}. Rows carry their share of the "
                     "runtime's GEMM roof only.")
    for runtime, kinds in roof.get("gemm", {}).items():
        parts = [f"{kind} {v['macs_per_s'] / 1e9:,.0f} G/s ({'×'.join(map(str, v['shape']))})"
                 for kind, v in kinds.items()]
        lines.append(f"- {runtime} GEMM roof (best of M×K×N {', '.join('×'.join(map(str, s)) for s in GEMM_SHAPES)}, "
                     "measured before and after the rows): "
                     + ", ".join(parts) + ".")
    if isa:
        beaten = sorted({kind for kinds in roof.get("gemm", {}).values() for kind, v in kinds.items()
                         if kind in isa and v["macs_per_s"] > isa[kind]["macs_per_s"]})
        if beaten:
            lines.append(f"- **Caution:** a runtime's GEMM beat the probe's {', '.join(beaten)} issue roof in this "
                         "run, so the probe under-measured it (a short window on a shared or virtualised CPU): read "
                         "those ISA-roof shares as upper bounds and the GEMM-roof shares as the firmer figure.")
    lines.append("- A row's share = its throughput × the model's Conv/ConvTranspose/MatMul/Gemm multiply-adds per "
                 "item, over the roof of the precision it computes in (int8 files: int8; OpenVINO's bf16 hint: "
                 "bf16; fp32 and fp16 files: fp32, since the CPU runtimes compute fp16 convolutions in fp32). "
                 "Quantize/dequantize, pooling, the uint8 input head and memory traffic count as overhead.")
    return lines


def main(argv: list[str]) -> None:
    """`python -m toolkit.edge.bench [--build-only]`: build the probe (make install does), print the roof."""
    from toolkit.edge.bench.machine import available_cores

    binary, how = build_probe()
    print(f"roof probe: {binary or 'not built'} ({how})")
    if "--build-only" not in argv:
        runtimes = []
        for provider in providers_with(cpu_side=True):       # the CPU runtimes that run here
            try:
                check_provider(provider)
            except ProviderError as exc:
                print(f"roof: {runtime_of(provider)} not measured ({exc})")
                continue
            runtimes.append(runtime_of(provider))
        print(json.dumps(measure_roof(available_cores(), runtimes, log=print), indent=1))
