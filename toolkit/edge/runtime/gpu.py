"""The GPU providers' native side: loading the CUDA, cuDNN and TensorRT libraries, which versions
are really loaded, and why a provider could not load. Never imports torch.

On Linux onnxruntime does not look in the pip NVIDIA folders (`site-packages/nvidia/...`,
`site-packages/tensorrt_libs`) by itself; a process that happened to import a CUDA build of torch
first has them loaded already, a torch-free `toolkit` command does not. So before the first CUDA
or TensorRT session `preload` loads them by path: onnxruntime's own `preload_dlls` on the library
folders of every `nvidia` package on sys.path (one per site-packages that has NVIDIA wheels), the
TensorRT wheel's libraries here. It then checks what the CUDA provider needs is loaded, cuDNN
included: the provider loads cuDNN only on the first convolution, so a session opens without it
and the first run of a CNN is where a missing cuDNN shows (`first_run_line` names it). When a
provider cannot load, onnxruntime logs the loader's message (which library is missing) and
quietly builds a CPU session; `captured` collects that text and `failure_line` turns it into the
one line the user reads. Which onnxruntime is installed, and whether it is new enough: install.py.
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
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import toolkit.edge.runtime.install as install

GPU_PROVIDERS = ("cuda", "tensorrt")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# onnxruntime's message when dlopen of a provider library fails (provider_bridge_ort.cc).
LOAD_FAILURE = re.compile(r"Failed to load library (\S+) with error: ([^\n]+)")
EP_ERROR = re.compile(r"EP Error:? ([^\n]+)")
LOGGED_ERROR = re.compile(r"\[E:onnxruntime:[^\]]*\] ([^\n]+)")
# The cuDNN major onnxruntime-gpu 1.2x–1.31 load (by name, on the first convolution, not at link time).
CUDNN = "libcudnn.so.9"
# What installs the missing libraries: the CUDA 13 runtime and cuDNN wheels, and TensorRT 10 for CUDA 13.
GPU_EXTRA = {"cuda": "toolkit[gpu]", "tensorrt": "toolkit[gpu,tensorrt]"}
INSTALL_HINT = {"cuda": "pip install 'toolkit[gpu]' installs the CUDA and cuDNN wheels",
                "tensorrt": "pip install 'toolkit[gpu,tensorrt]' installs the CUDA, cuDNN and TensorRT wheels"}

def _ort():
    return install.onnxruntime()


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

def tensorrt_wheel_dir() -> Path | None:
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
    folder = tensorrt_wheel_dir()
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


def nvidia_folders() -> list[Path]:
    """Every `nvidia` package folder on sys.path: the NVIDIA wheels (CUDA runtime, cuBLAS, cuDNN …)
    may sit in another site-packages than onnxruntime, e.g. a venv made with --system-site-packages
    over a Python that has torch and its CUDA wheels."""
    found: list[Path] = []
    for entry in sys.path:
        folder = Path(entry or ".") / "nvidia"
        if folder.is_dir() and folder.resolve() not in found:
            found.append(folder.resolve())
    return found


def library_folders(roots: list[Path]) -> list[Path]:
    """The folders of those packages that hold shared libraries (nvidia/cu13/lib, nvidia/cudnn/lib,
    nvidia/cublas/lib …), cuDNN's last: its loader resolves the CUDA libraries already loaded."""
    folders = [lib for root in roots for lib in sorted(root.glob("*/lib")) if any(lib.glob("lib*.so*"))]
    return sorted(folders, key=lambda lib: lib.parent.name == "cudnn")


def cuda_libraries() -> dict[str, str]:
    """stem → soname of what the CUDA provider needs at run time: what it links (cuBLAS, cuBLASLt,
    cuRAND, the CUDA runtime) and cuDNN 9, which it loads only when a convolution first runs."""
    major = (cuda_build_version() or "13").split(".")[0]
    return {"libcudart": f"libcudart.so.{major}", "libcublasLt": f"libcublasLt.so.{major}",
            "libcublas": f"libcublas.so.{major}", "libcurand": "libcurand.so.10", "libcudnn": CUDNN}


@functools.cache
def _preload_cuda() -> str:
    """onnxruntime.preload_dlls() on every NVIDIA library folder, then on its own search (beside
    onnxruntime, then the loader's path); returns what is still not loaded, '' when all is.
    preload_dlls print()s its failures, which would corrupt `--json` output, and treats a missing
    cuDNN as optional, which it is not for any convolution: the libraries are checked here instead."""
    ort = _ort()
    if cuda_build_version() is None:
        return ""
    folders = library_folders(nvidia_folders())
    with contextlib.redirect_stdout(io.StringIO()):
        for folder in [*folders, None]:
            try:
                ort.preload_dlls(directory=None if folder is None else str(folder))
            except (RuntimeError, OSError):
                continue
    missing = [soname for stem, soname in cuda_libraries().items()
               if _mapped(re.escape(stem) + r"\.so(\.\d+)*") is None]
    if not missing:
        return ""
    where = f"in {', '.join(str(f) for f in folders)}" if folders else "in any nvidia package on sys.path"
    named = ", ".join(f"cuDNN ({soname}: every convolution needs it)" if soname == CUDNN else soname
                      for soname in missing)
    return f"{named} not found {where} nor on the loader's path"


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
        # The wheel's libnvinfer is not on the loader's path: load it by path first, as a session would.
        preload("tensorrt")
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
    code = infer_lib_version(path)
    if code is None:
        return None
    # TensorRT 10 on encodes major·10000 + minor·100 + patch; TensorRT 8 encoded major·1000 + minor·100 + patch.
    scale = 10000 if code >= 10000 else 1000
    major, rest = divmod(code, scale)
    return path, f"{major}.{rest // 100}.{rest % 100}"


def infer_lib_version(path: Path) -> int | None:
    """libnvinfer's own version code (getInferLibVersion), None when it does not load."""
    try:
        return int(ctypes.CDLL(str(path)).getInferLibVersion())
    except (OSError, AttributeError):
        return None


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
            return found.group(1).strip()
    return None


def failure_line(provider: str, text: str, preload_failures: str = "") -> str:
    """One line: what failed, the versions that matter, and what to install."""
    found = cause(text)
    if found is None:
        reason = (f"its libraries did not load ({preload_failures})" if preload_failures else
                  "onnxruntime created no session on it and gave no reason")
    else:    # the first library the loader missed, and every other one still missing (cuDNN among them)
        reason = f"{found}{f'; {preload_failures}' if preload_failures else ''}"
    if cuda_build_version() is None and provider in GPU_EXTRA:
        # A CPU build has no GPU provider at all: the fix is the other runtime, not a library; the
        # CPU build goes first because the two share one folder.
        return (f"provider '{provider}' cannot run here: onnxruntime {_ort().__version__} is a CPU build, without "
                f"CUDA or TensorRT providers: pip uninstall -y onnxruntime && pip install '{GPU_EXTRA[provider]}'; "
                "refusing to fall back")
    if "libcuda.so" in reason:
        hint = "; libcuda.so.1 comes with the NVIDIA driver (pip cannot install it)"
    else:
        hint = f"; {INSTALL_HINT[provider]}" if ".so" in reason and provider in INSTALL_HINT else ""
    shadow = install.shadowing(install.installed_runtimes())
    return (f"provider '{provider}' cannot run here: {reason}; {version_facts(provider)}{hint}"
            f"{'; ' + shadow if shadow else ''}; refusing to fall back")


def first_run_line(provider: str, name: str, reason: str) -> str:
    """One line for a first run that failed on a GPU provider: a session opens without cuDNN (the
    CUDA provider loads it on the first convolution), so a missing library is named here too."""
    missing = preload(provider)
    return f"{provider}: the first run of {name} failed: {reason}{'; ' + missing if missing else ''}"
