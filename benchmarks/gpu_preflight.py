"""What `make gpu-check` needs, checked before any of it runs, installing nothing.

A GPU machine in the field is often offline: the check runs with the Python that is there (a Python
with torch and the NVIDIA pip wheels has everything but onnxruntime-gpu) and takes onnxruntime-gpu,
when it is not installed, from a wheel or an unpacked folder (`--ort-gpu`, `$ORT_GPU`, else
`.gpu/site`, where `benchmarks/gpu_carry.py unpack` puts it), added to sys.path and to PYTHONPATH
for the processes the check starts. A wheel is unpacked into `.gpu/site` (a zip read with the
standard library). Each missing piece is one line; without an NVIDIA driver nothing else matters,
so that is the only line then.

Standard library and toolkit.edge.runtime.{install,gpu} only until onnxruntime is found.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRIED = ROOT / ".gpu" / "site"
# The Python packages the check imports besides onnxruntime (import name → what pip calls it).
MODULES = {"numpy": "numpy", "onnx": "onnx", "PIL": "pillow", "typer": "typer", "rich": "rich", "pytest": "pytest"}
# Shipped model files the check runs on every provider: each stem's fp32 and fp16 (built by
# `make models` from the tracked weights) and its int8 files (tracked).
STEMS = ("cifar_cnn", "cifar_resnet", "dcgan")


def on_path(folder: Path) -> None:
    """Put `folder` first on sys.path and on PYTHONPATH (for the check's child processes)."""
    text = str(folder)
    if text not in sys.path:
        sys.path.insert(0, text)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != text]
    os.environ["PYTHONPATH"] = os.pathsep.join([text, *parts])


def wheel_python(name: str) -> tuple[int, int] | None:
    """The CPython version a wheel file name is for (`…-cp312-cp312-…` → (3, 12)), None if pure."""
    found = re.search(r"-cp(\d)(\d+)-", name)
    return (int(found.group(1)), int(found.group(2))) if found else None


def unpack_wheel(wheel: Path, dest: Path) -> Path:
    """A wheel's files under `dest` (what pip would copy into site-packages, minus the scripts)."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            target = (dest / member.filename).resolve()
            if dest.resolve() not in target.parents:
                raise ValueError(f"{wheel.name}: member {member.filename!r} would land outside {dest}")
        archive.extractall(dest)
    return dest


def folder_python(folder: Path) -> tuple[int, int] | None:
    """The CPython version an unpacked onnxruntime-gpu folder was built for, from its WHEEL tags."""
    for wheel_file in folder.glob("onnxruntime_gpu-*.dist-info/WHEEL"):
        tag = re.search(r"^Tag: cp(\d)(\d+)-", wheel_file.read_text(), re.MULTILINE)
        if tag:
            return int(tag.group(1)), int(tag.group(2))
    return None


def ort_gpu_source(option: str | None) -> tuple[Path | None, str | None]:
    """(folder to put on sys.path, None) for onnxruntime-gpu from a wheel or unpacked folder;
    (None, why not) when there is none or it does not fit this Python."""
    given = option or os.environ.get("ORT_GPU") or None
    source = Path(given) if given else CARRIED
    where = f"--ort-gpu / ORT_GPU {source}" if given else f"{source} (make gpu-carry prepares it)"
    here = sys.version_info[:2]
    if source.is_file() and source.suffix == ".whl":
        wanted = wheel_python(source.name)
        if wanted is not None and wanted != here:
            return None, (f"{source.name} is for Python {wanted[0]}.{wanted[1]}; this is {here[0]}.{here[1]} "
                          f"({sys.executable}): bring the wheel for this Python (make gpu-carry TARGET_PYTHON=…)")
        return unpack_wheel(source, CARRIED), None
    if source.is_dir() and (source / "onnxruntime" / "__init__.py").is_file():
        wanted = folder_python(source)
        if wanted is not None and wanted != here:
            return None, (f"onnxruntime-gpu in {source} is built for Python {wanted[0]}.{wanted[1]}; this is "
                          f"{here[0]}.{here[1]} ({sys.executable})")
        return source, None
    return None, (f"onnxruntime-gpu is not installed and not found at {where}: pass a wheel or an unpacked folder "
                  "with --ort-gpu PATH or ORT_GPU=PATH (docs/gpu.md)")


def model_gaps() -> list[str]:
    """One line per shipped model whose files are not here."""
    lines = []
    for stem in STEMS:
        missing = [f"models/{stem}{suffix}.onnx" for suffix in ("", ".fp16")
                   if not (ROOT / "models" / f"{stem}{suffix}.onnx").is_file()]
        if missing:
            lines.append(f"{', '.join(missing)} missing: `make models` builds them (train extra), or carry them "
                         "(make gpu-carry packs them)")
    return lines


def missing_pieces(ort_gpu: str | None = None) -> list[str]:
    """Everything gpu-check needs that is not here, one line each ([] when all is); puts a carried
    onnxruntime-gpu on the path. Only the driver line when there is no NVIDIA driver."""
    on_path(ROOT)
    from toolkit.edge.runtime import gpu, install

    too_old = install.floors(None)
    if too_old:
        return [too_old]
    if gpu.cuda_driver_version() is None:
        return [("no usable GPU here: no NVIDIA driver (libcuda.so.1 does not load); make gpu-check needs a "
                 "machine with an NVIDIA GPU")]
    lines = []
    found = install.installed_runtimes()
    clash = install.conflict(found)
    if clash:
        lines.append(clash)
    elif not found or found[0][0] != "onnxruntime-gpu":
        folder, why = ort_gpu_source(ort_gpu)
        if folder is None:
            lines.append(str(why))
        else:
            on_path(folder)
    lines += [f"Python package {module} is missing ({pip})" for module, pip in MODULES.items()
              if importlib.util.find_spec(module) is None]
    lines += model_gaps()
    if not lines:
        try:
            missing = gpu.preload("cuda")
        except install.SetupError as exc:
            missing = str(exc)
        if missing:
            lines.append(f"CUDA libraries: {missing} (the nvidia-* wheels torch uses will do)")
    return lines
