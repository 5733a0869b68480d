"""Which onnxruntime is installed, and whether the toolkit can use it. Standard library only until
the checks pass, so that a broken install is one line, not a traceback or a wrong answer later.

- No runtime: the package leaves the choice to the user (`toolkit[cpu]` installs onnxruntime,
  `toolkit[gpu]` onnxruntime-gpu), so a bare `pip install toolkit` has none.
- Two runtimes in one folder: onnxruntime, onnxruntime-gpu and the other builds all install the
  same `onnxruntime/` package; whichever was installed last overwrote the other's files, and the
  GPU providers then vanish or half-load. Found from the package metadata, before the import.
- Too old: the toolkit reads where every node ran from `get_provider_graph_assignment_info`
  (onnxruntime 1.24) and loads the CUDA wheels with `preload_dlls` (1.21); an older onnxruntime
  would fail on every benchmark row, the CPU's included, with an AttributeError.
"""

from __future__ import annotations

import functools
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

# The oldest onnxruntime the code runs on: Session.get_provider_graph_assignment_info came in 1.24.
ORT_FLOOR = (1, 24)
# onnxruntime-gpu 1.31, the GPU build the toolkit is checked against, ships wheels for CPython 3.11+.
PYTHON_FLOOR = (3, 11)
# The distributions that install the `onnxruntime` package (each build of it under its own name).
RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                         "onnxruntime-qnn", "ort-nightly", "ort-nightly-gpu")
CHOOSE = "pip install 'toolkit[cpu]' (onnxruntime) or 'toolkit[gpu]' (onnxruntime-gpu: CPU, CUDA and TensorRT)"


class SetupError(RuntimeError):
    """onnxruntime is missing, too old, or installed twice in one folder; the message is one line."""


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def installed_runtimes() -> list[tuple[str, str, Path]]:
    """(distribution, version, the folder it is installed in) for every onnxruntime build that
    package metadata shows on sys.path, in sys.path order."""
    found = []
    for dist in metadata.distributions():
        name = _normal(dist.metadata["Name"] or "")
        if name in RUNTIME_DISTRIBUTIONS:
            found.append((name, dist.version, Path(str(dist.locate_file(""))).resolve()))
    return found


def conflict(found: list[tuple[str, str, Path]]) -> str | None:
    """The one-line fix when two onnxruntime builds share a folder (they overwrite each other's
    files there), else None. The GPU build is the one kept: it runs on the CPU too."""
    by_folder: dict[Path, list[tuple[str, str]]] = {}
    for name, version, folder in found:
        if (name, version) not in by_folder.setdefault(folder, []):
            by_folder[folder].append((name, version))
    for folder, builds in by_folder.items():
        names = sorted({name for name, _ in builds})
        if len(names) < 2:
            continue
        keep_name = "onnxruntime-gpu" if "onnxruntime-gpu" in names else names[0]
        keep_version = next(version for name, version in builds if name == keep_name)
        drop = [name for name in names if name != keep_name]
        listed = " and ".join(f"{name} {version}" for name, version in builds)
        return (f"{listed} are all installed in {folder} and overwrite each other's onnxruntime/ folder: uninstall "
                f"{', '.join(drop)} and restore the files they shared: pip uninstall -y {' '.join(drop)} && "
                f"pip install --force-reinstall --no-deps {keep_name}=={keep_version}")
    return None


def shadowing(found: list[tuple[str, str, Path]]) -> str | None:
    """When a CPU-only build earlier on sys.path hides onnxruntime-gpu installed further on (a venv
    over a system Python that has it): what this Python imports, and what it does not."""
    if not found or found[0][0] == "onnxruntime-gpu":
        return None
    hidden = next((entry for entry in found[1:] if entry[0] == "onnxruntime-gpu" and entry[2] != found[0][2]), None)
    if hidden is None:
        return None
    return (f"this Python imports {found[0][0]} {found[0][1]} from {found[0][2]}, which hides onnxruntime-gpu "
            f"{hidden[1]} in {hidden[2]} (pip uninstall -y {found[0][0]} in the first)")


def parse(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as 1.31.1 or 1.24.0.dev20260101."""
    major, minor, *_ = [*(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in version.split(".")), 0, 0]
    return major, minor


def floors(ort_version: str | None, python: tuple[int, int] = sys.version_info[:2]) -> str | None:
    """One line when this Python or this onnxruntime is older than the code needs, else None."""
    if python < PYTHON_FLOOR:
        return (f"toolkit needs Python ≥ {'.'.join(map(str, PYTHON_FLOOR))}; this is {'.'.join(map(str, python))} "
                f"({sys.executable})")
    if ort_version is not None and parse(ort_version) < ORT_FLOOR:
        return (f"toolkit needs onnxruntime ≥ {'.'.join(map(str, ORT_FLOOR))} (for the node placement every run "
                f"reports); this is {ort_version}: pip install -U 'toolkit[cpu]' or 'toolkit[gpu]'")
    return None


@functools.cache
def onnxruntime() -> ModuleType:
    """The onnxruntime module, imported once the install is known to be usable; SetupError (one
    line) when none is installed, two share a folder, or it or Python is too old."""
    problem = floors(None) or conflict(installed_runtimes())
    if problem:
        raise SetupError(problem)
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as exc:
        if exc.name != "onnxruntime":
            raise
        raise SetupError(missing_line()) from None
    problem = floors(ort.__version__)
    if problem:
        raise SetupError(problem)
    return ort


def missing_line() -> str:
    return f"no onnxruntime is installed for {sys.executable}: {CHOOSE}"
