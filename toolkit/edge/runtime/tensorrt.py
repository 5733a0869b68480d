"""TensorRT's engine and timing caches, and its optimisation profiles. Never imports torch.

An engine is valid only for the model, GPU, TensorRT library and onnxruntime build it was made
with, and onnxruntime does not check all of these itself, so the cache folder is keyed by all four
(the TensorRT version read from the loaded library, not from pip metadata). Inside it, one folder
per optimisation profile: engines built for batch 1 and for batch 256 never overwrite each other.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import toolkit.edge.runtime.gpu as gpu


def onnxruntime_version() -> str:
    import onnxruntime
    return onnxruntime.__version__


# The mark of a cache folder whose engine ran: written after the first run succeeded.
READY = ".ready"


@dataclass
class EngineCache:
    """Where a TensorRT session keeps engines and timing caches: `folder`, for the session's whole
    life. onnxruntime keeps the path it was given and writes there every engine it builds, a later
    one for a new input shape included, so the folder is never moved or renamed while a session may
    use it. It becomes a cache (later sessions hit it) when the first run succeeds: `publish` writes
    the READY mark. A folder without the mark holds a build that failed or was cut short: `prepare`
    empties it before use and `discard` removes it, so a failed build leaves nothing behind."""
    folder: Path
    pending: bool = False

    @property
    def hit(self) -> bool:
        return not self.pending

    @property
    def path(self) -> Path:
        return self.folder

    @classmethod
    def prepare(cls, root: Path, key: str, tag: str) -> EngineCache:
        folder = root / key / tag
        if (folder / READY).is_file():
            return cls(folder)
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, pending=True)

    def publish(self) -> None:
        if self.pending:
            (self.folder / READY).write_text("the first run with this engine succeeded\n")
            self.pending = False

    def discard(self) -> None:
        """Remove a folder whose first run did not succeed (a published one stays)."""
        if not self.pending or (self.folder / READY).is_file():
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):     # the model's folder, when no other profile is in it
            self.folder.parent.rmdir()


def model_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@functools.cache
def gpu_name(device_id: int = 0) -> str | None:
    """The GPU's name as nvidia-smi reports it, or None where there is no NVIDIA GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "-i", str(device_id), "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip()


def tensorrt_version() -> str | None:
    """The version of the libnvinfer onnxruntime's TensorRT provider loads (read from the library)."""
    loaded = gpu.tensorrt_library()
    return loaded[1] if loaded else None


def cache_key(model_path: Path, device_id: int = 0) -> str:
    """Model hash, GPU, TensorRT library and onnxruntime version: an engine built for another of
    any of these is not valid here (wrong kernels for the GPU, or a format the library rejects)."""
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu_name(device_id) or "unknown-gpu").lower()).strip("-")
    return f"{model_hash(model_path)}-{slug}-trt{tensorrt_version() or 'unknown'}-ort{onnxruntime_version()}"


def trt_profile(proto, shapes: dict[str, tuple[int, ...]]) -> str | None:
    """TensorRT's profile string (`name:1x32x32x3,other:…`) for every input with a dynamic
    dimension, at the shapes given; None for a model whose inputs are all static."""
    from toolkit.edge.onnxgraph import input_signature

    parts = []
    for value in input_signature(proto):
        if value.static:
            continue
        if value.name not in shapes:
            raise ValueError(f"tensorrt: no shape given for the dynamic input {value.name!r}")
        if re.search(r"[,:\s]", value.name):
            raise ValueError(f"tensorrt: input name {value.name!r} cannot be written in a TensorRT profile")
        parts.append(f"{value.name}:{'x'.join(str(int(d)) for d in shapes[value.name])}")
    return ",".join(parts) or None


def profile_tag(profile: str | None) -> str:
    """The folder name of an optimisation profile inside a cache key."""
    if profile is None:
        return "dynamic"
    return re.sub(r"[^A-Za-z0-9]+", "_", profile)[:48] + "-" + hashlib.sha256(profile.encode()).hexdigest()[:8]
