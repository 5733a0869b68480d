"""onnxruntime sessions per provider, with strict provider checks. Never imports torch.

`get_available_providers()` lists CUDA and TensorRT in every onnxruntime-gpu wheel, GPU or not;
only a created session's `get_providers()` tells the truth, so that is what we check.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections import Counter
from importlib import metadata as importlib_metadata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    # Not an onnxruntime provider: the OpenVINO runtime behind the same Model interface (openvino.py).
    "openvino": "OpenVINO",
}
DEFAULT_CACHE = Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "toolkit"))


class ProviderError(RuntimeError):
    """The provider the user asked for cannot run this session."""


class ModelError(ValueError):
    """The file is not a usable toolkit ONNX model."""


def _ort():
    import onnxruntime as ort
    # Fatal only: a provider library that fails to load is logged at ERROR level (with colour codes)
    # straight to the terminal, while the exception or the provider check already says it in one line.
    ort.set_default_logger_severity(4)
    return ort


@dataclass
class Model:
    """An ONNX model opened for inference: the session plus what its metadata says."""
    path: Path
    session: object
    provider: str
    metadata: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.metadata.get("toolkit.task", "")

    @property
    def labels(self) -> list[str]:
        return json.loads(self.metadata.get("toolkit.labels", "[]"))

    @property
    def precision(self) -> str:
        return self.metadata.get("toolkit.precision", "fp32")

    @property
    def input(self):
        return self.session.get_inputs()[0]

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """(H, W) of an image input with fixed spatial size, else None."""
        shape = self.input.shape
        if len(shape) == 4 and isinstance(shape[1], int) and isinstance(shape[2], int):
            return shape[1], shape[2]
        return None

    def run(self, feed: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input.name: feed})[0]


def model_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def gpu_name(device_id: int = 0) -> str | None:
    """The GPU's name as nvidia-smi reports it, or None where there is no NVIDIA GPU."""
    try:
        out = subprocess.run(["nvidia-smi", "-i", str(device_id), "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip()


@functools.lru_cache(maxsize=None)
def tensorrt_version() -> str | None:
    """The TensorRT version onnxruntime will load: the pip wheel's, else the system library's."""
    for name in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs"):
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    for lib in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            code = ctypes.CDLL(lib).getInferLibVersion()
        except (OSError, AttributeError):
            continue
        # TensorRT 10 encodes major·10000 + minor·100 + patch; 8.x encodes major·1000 + minor·100 + patch.
        major, rest = (code // 10000, code % 10000) if code >= 10000 else (code // 1000, code % 1000)
        return f"{major}.{rest // 100}.{rest % 100}"
    return None


def provider_options(provider: str, model_path: Path, trt_fp16: bool = False, trt_int8: bool = False,
                     cache_dir: Path | None = None, device_id: int = 0) -> list:
    """The providers list for InferenceSession: the requested one first, CPU as the host fallback
    for nodes it cannot take (which the placement summary reports)."""
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"]
    # TensorRT: engines and timing caches are keyed by model hash, GPU and TensorRT version via
    # the folder, because a stale engine for another GPU or TensorRT silently costs accuracy or fails.
    gpu = re.sub(r"[^a-z0-9]+", "-", (gpu_name(device_id) or "unknown-gpu").lower()).strip("-")
    key = f"{model_hash(model_path)}-{gpu}-trt{tensorrt_version() or 'unknown'}"
    cache = Path(cache_dir or DEFAULT_CACHE / "trt") / key
    cache.mkdir(parents=True, exist_ok=True)
    opts = {
        "device_id": device_id,
        "trt_fp16_enable": trt_fp16,
        "trt_int8_enable": trt_int8,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache),
        "trt_engine_hw_compatible": False,
    }
    return [("TensorrtExecutionProvider", opts), cuda, "CPUExecutionProvider"]


def open_model(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
               trt_fp16: bool = False, trt_int8: bool = False, cache_dir: Path | None = None,
               profile: bool = False, precision_hint: str | None = None) -> Model:
    """Create a session on `provider` or raise ProviderError / ModelError with a one-line message.
    `precision_hint` (f32 | bf16) applies to openvino, which computes float models in f32 unless asked."""
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    from toolkit.core.contract import ModelFileError, check_model_file
    try:  # the contract is enforced when reading too: one file, external data only inside the folder
        check_model_file(path)
    except ModelFileError as exc:
        raise ModelError(str(exc)) from None
    if provider == "openvino":
        from toolkit.core.openvino import open_openvino
        return open_openvino(path, threads=threads, precision_hint=precision_hint, cache_dir=cache_dir)
    if precision_hint is not None:
        raise ProviderError("a precision hint (f32 | bf16) applies to the openvino provider only")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"toolkit_profile_{os.getpid()}")
    providers = provider_options(provider, path, trt_fp16, trt_int8, cache_dir)
    try:
        # onnxruntime print()s an 'EP Error … falling back' banner to stdout when a provider library
        # fails to load; that would corrupt --json output, and the provider check below reports it.
        with contextlib.redirect_stdout(io.StringIO()):
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if provider != "cpu" and "provider" in msg.lower():
            raise ProviderError(f"{provider}: cannot create a session ({msg})") from None
        raise ModelError(f"{path}: cannot load model ({msg[:300]})") from None
    wanted = PROVIDERS[provider]
    got = session.get_providers()
    if wanted not in got:
        raise ProviderError(
            f"provider '{provider}' was requested but is not usable here (the session would run on "
            f"{', '.join(p.replace('ExecutionProvider', '') for p in got)}); refusing to fall back")
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    return Model(path=path, session=session, provider=provider, metadata=metadata)


def node_placement(model: Model, feed: np.ndarray) -> dict[str, int]:
    """How many graph nodes each provider ran, read from one profiled run.

    The model must have been opened with profile=True."""
    model.run(feed)
    profile_path = model.session.end_profiling()
    try:
        events = json.loads(Path(profile_path).read_text())
    finally:
        Path(profile_path).unlink(missing_ok=True)
    nodes: dict[str, str] = {}
    for ev in events:
        args = ev.get("args") or {}
        if ev.get("cat") == "Node" and "provider" in args:
            nodes[args.get("op_name", "") + ":" + ev["name"].removesuffix("_kernel_time")] = args["provider"]
    return dict(Counter(p.replace("ExecutionProvider", "") for p in nodes.values()))


def usable_providers() -> list[str]:
    """The providers that can really create a session here (used by tests to skip GPU cases)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    # IR 8 loads in every supported onnxruntime; onnx.helper's default IR can be newer than it reads.
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    usable = []
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "probe.onnx"
        onnx.save(proto, p)
        for name in PROVIDERS:
            try:
                open_model(p, name, cache_dir=Path(tmp))
                usable.append(name)
            except (ProviderError, ModelError):
                pass
    return usable


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, labels: list[str], k: int) -> list[list[dict]]:
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[{"label": labels[j] if j < len(labels) else str(j), "prob": round(float(p[j]), 4)} for j in row]
            for p, row in zip(probs, order)]
