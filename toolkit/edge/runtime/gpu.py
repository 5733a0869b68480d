"""The GPU providers' native side: loading the CUDA, cuDNN and TensorRT libraries, which versions
are really loaded, and why a provider could not load. Never imports torch.

On Linux onnxruntime does not look in the pip NVIDIA folders (`site-packages/nvidia/...`,
`site-packages/tensorrt_libs`) by itself; a process that happened to import a CUDA build of torch
first has them loaded already, a torch-free `toolkit` command does not. So before the first CUDA
or TensorRT session `preload` loads them by path (onnxruntime's own `preload_dlls` for CUDA and
cuDNN, the TensorRT wheel's libraries here). When a provider still cannot load, onnxruntime logs
the loader's message (which library is missing) and quietly builds a CPU session; `captured`
collects that text and `failure_line` turns it into the one line the user reads.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import io
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

GPU_PROVIDERS = ("cuda", "tensorrt")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# onnxruntime's message when dlopen of a provider library fails (provider_bridge_ort.cc).
LOAD_FAILURE = re.compile(r"Failed to load library (\S+) with error: ([^\n]+)")
EP_ERROR = re.compile(r"EP Error:? ([^\n]+)")
LOGGED_ERROR = re.compile(r"\[E:onnxruntime:[^\]]*\] ([^\n]+)")
# What installs the missing libraries: the CUDA 13 runtime and cuDNN wheels, and TensorRT 10 for CUDA 13.
INSTALL_HINT = {"cuda": "pip install 'toolkit[gpu]' installs the CUDA and cuDNN wheels",
                "tensorrt": "pip install 'toolkit[gpu,tensorrt]' installs the CUDA, cuDNN and TensorRT wheels"}

def _ort():
    import onnxruntime as ort
    return ort


def capi_dir() -> Path:
    """The folder that holds onnxruntime's native libraries (the provider libraries among them)."""
    return Path(_ort().__file__).parent / "capi"


@functools.cache
def linked_soname(provider_library: str, stem: str) -> str | None:
    """The soname (e.g. `libnvinfer.so.10`) an onnxruntime provider library was linked against,
    read from its dynamic string table: the library major this onnxruntime build needs."""
    path = capi_dir() / provider_library
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = re.search(rb"\x00(" + re.escape(stem.encode()) + rb"\.so\.\d+)\x00", data)
            return found.group(1).decode() if found else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- loading libraries

def _tensorrt_wheel_dir() -> Path | None:
    """The folder of the `tensorrt-cu13-libs` (or -cu12-libs) wheel's libraries, if installed."""
    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _preload_tensorrt() -> str:
    """Load the TensorRT wheel's libraries by path (global symbols), so that the TensorRT
    provider's `libnvinfer.so.N` resolves to them; a system install is found by the loader as is."""
    folder = _tensorrt_wheel_dir()
    soname = linked_soname("libonnxruntime_providers_tensorrt.so", "libnvinfer")
    if folder is None or soname is None:
        return ""
    major = soname.rsplit(".", 1)[-1]
    failures = []
    for name in (f"libnvinfer.so.{major}", f"libnvinfer_plugin.so.{major}", f"libnvonnxparser.so.{major}"):
        path = folder / name
        if path.is_file():
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                failures.append(f"{name}: {exc}")
    return "; ".join(failures)


@functools.cache
def _preload_cuda() -> str:
    """onnxruntime.preload_dlls(): the CUDA and cuDNN libraries of the pip wheels, loaded by path.
    It print()s its failures, which would corrupt `--json` output: they are captured and returned."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        try:
            _ort().preload_dlls()
        except (RuntimeError, OSError) as exc:
            print(f"Failed to load the CUDA libraries: {exc}")
    lines = [ANSI.sub("", line).strip() for line in text.getvalue().splitlines()]
    return "; ".join(line for line in lines if line.startswith("Failed to load"))


def preload(provider: str) -> str:
    """Load the libraries `provider` needs from the pip wheels (once per process); returns what
    failed to load, '' when nothing did."""
    if provider not in GPU_PROVIDERS:
        return ""
    failed = [_preload_cuda()]
    if provider == "tensorrt":
        failed.append(_preload_tensorrt())
    return "; ".join(part for part in failed if part)


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Collect what onnxruntime writes while a session is created: its C++ logger writes to file
    descriptor 2 and its Python fallback banner print()s to stdout. The list receives the text
    (colour codes removed) when the block ends; nothing reaches the terminal."""
    import sys

    ort = _ort()
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    python_stdout = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        # ERROR level: the provider-load failure is logged at ERROR; warnings are noise here.
        ort.set_default_logger_severity(3)
        try:
            with contextlib.redirect_stdout(python_stdout):
                yield out
        finally:
            ort.set_default_logger_severity(4)
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace") + "\n" + python_stdout.getvalue()
            out.append(ANSI.sub("", text).strip())


# ----------------------------------------------------------------------------- versions

def cuda_driver_version() -> str | None:
    """The CUDA version the NVIDIA driver supports (cuDriverGetVersion), None without a driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def cuda_build_version() -> str | None:
    """The CUDA version this onnxruntime build was compiled for (None for a CPU build)."""
    try:
        from onnxruntime.capi.build_and_package_info import cuda_version
    except ImportError:
        return None
    return cuda_version or None


def _mapped(pattern: str) -> Path | None:
    """The first library file mapped into this process whose name matches `pattern`."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and re.fullmatch(pattern, Path(parts[5]).name):
            return Path(parts[5])
    return None


def tensorrt_library() -> tuple[Path, str] | None:
    """(path, version) of the libnvinfer the TensorRT provider uses: the one already mapped into
    this process, else the one the loader finds for the provider's soname (loading it, as
    onnxruntime will). The version is the library's own `getInferLibVersion`, not pip metadata."""
    path = _mapped(r"libnvinfer\.so(\.\d+)*")
    if path is None:
        soname = linked_soname("libonnxruntime_providers_tensorrt.so", "libnvinfer") or "libnvinfer.so.10"
        try:
            ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            return None
        path = _mapped(r"libnvinfer\.so(\.\d+)*")
        if path is None:
            return None
    try:
        code = int(ctypes.CDLL(str(path)).getInferLibVersion())
    except (OSError, AttributeError):
        return None
    # TensorRT 10 on encodes major·10000 + minor·100 + patch; TensorRT 8 encoded major·1000 + minor·100 + patch.
    scale = 10000 if code >= 10000 else 1000
    major, rest = divmod(code, scale)
    return path, f"{major}.{rest // 100}.{rest % 100}"


def version_facts(provider: str) -> str:
    """The driver's and the build's CUDA versions (and the TensorRT library) for an error line."""
    ort = _ort()
    driver = cuda_driver_version()
    build = cuda_build_version()
    facts = [f"NVIDIA driver: {'CUDA ' + driver if driver else 'none found (libcuda.so.1 does not load)'}",
             f"onnxruntime {ort.__version__} built for CUDA {build or 'none (a CPU build)'}"]
    if provider == "tensorrt":
        soname = linked_soname("libonnxruntime_providers_tensorrt.so", "libnvinfer")
        loaded = tensorrt_library()
        facts.append(f"TensorRT {loaded[1] if loaded else 'not found'} (this build links {soname or 'libnvinfer'})")
    return ", ".join(facts)


# ----------------------------------------------------------------------------- why a provider failed

def cause(text: str) -> str | None:
    """The real cause in onnxruntime's output: the library that failed to load (and what it was
    loading), else the first error onnxruntime reported; None when it said nothing."""
    found = LOAD_FAILURE.search(text)
    if found:
        library, error = Path(found.group(1)).name, found.group(2).strip()
        missing = error.split(":", 1)[0].strip()
        if Path(missing).name == library:
            return f"{library} could not be loaded ({error})"
        return f"{library} could not load {missing} ({error.split(':', 1)[-1].strip()})"
    for pattern in (EP_ERROR, LOGGED_ERROR):
        found = pattern.search(text)
        if found:
            return found.group(1).strip()[:300]
    return None


def failure_line(provider: str, text: str, preload_failures: str = "") -> str:
    """One line: what failed, the versions that matter, and what to install."""
    reason = cause(text) or (f"its libraries did not load ({preload_failures})" if preload_failures else
                             "onnxruntime created no session on it and gave no reason")
    if "libcuda.so" in reason:
        hint = "; libcuda.so.1 comes with the NVIDIA driver (pip cannot install it)"
    else:
        hint = f"; {INSTALL_HINT[provider]}" if ".so" in reason and provider in INSTALL_HINT else ""
    return (f"provider '{provider}' cannot run here: {reason}; {version_facts(provider)}{hint}; "
            "refusing to fall back")
