"""The machine a benchmark ran on: CPU model, cores, the ISA flags that decide int8 speed, GPUs,
library versions, and a short slug that names the result files. Never imports torch."""

from __future__ import annotations

import platform
import re
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path

from toolkit.edge.runtime.streams import available_cores
from toolkit.edge.runtime.tensorrt import tensorrt_version

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


def _max_clock_mhz() -> float | None:
    """The highest clock cpufreq allows (turbo included); None where cpufreq is absent, as in most VMs."""
    try:
        return int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()) / 1000
    except (OSError, ValueError):
        return None


def package_version(*names: str) -> str | None:
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
                                "--format=csv,noheader"], capture_output=True, text=True, check=False, timeout=20)
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=False, timeout=20)
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
    info = {
        "cpu": cpu.get("model name") or platform.processor() or platform.machine(),
        "cpu_family": cpu.get("cpu family"),
        "cpu_model": cpu.get("model"),
        "cores": available_cores(),
        "cpu_mhz": float(cpu["cpu MHz"]) if "cpu MHz" in cpu else None,
        "cpu_max_mhz": _max_clock_mhz(),
        "isa": [name for name, flag in ISA_FLAGS.items() if flag in flags],
        "virtualised": "hypervisor" in flags,
        "gpus": gpus,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "onnxruntime": package_version("onnxruntime-gpu", "onnxruntime"),
            "onnx": package_version("onnx"),
            "numpy": package_version("numpy"),
            "openvino": package_version("openvino"),
            # Read from the package metadata: importing torch here would put it on the ONNX path.
            "torch": package_version("torch"),
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


def machine_lines(machine: dict) -> list[str]:
    """The fingerprint as report lines."""
    versions = ", ".join(f"{k} {val}" for k, val in machine["versions"].items() if val)
    cpu = (f"{machine['cpu']} (family {machine['cpu_family']}, model {machine['cpu_model']})"
           if machine.get("cpu_family") else machine["cpu"])
    clock = f", {machine['cpu_mhz']:.0f} MHz reported" if machine.get("cpu_mhz") else ""
    virtual = ", virtualised" if machine.get("virtualised") else ""
    gpus = "; ".join(f"{g['name']} (driver {g['driver']}, {g['memory']})" for g in machine["gpus"]) or "none"
    return [f"CPU: {cpu}, {machine['cores']} cores{clock}{virtual}",
            f"ISA: {', '.join(machine['isa']) or 'none of AVX2/AVX-512/VNNI/AMX'}",
            f"GPU: {gpus}", f"Versions: {versions}; Python {machine['python']}; {machine['os']}"]
