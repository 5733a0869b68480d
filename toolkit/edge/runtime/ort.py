"""onnxruntime sessions per provider, with strict checks and node placement. Never imports torch.

A provider you ask for is a promise, kept three ways:
- The session is on it or there is no session. GPU libraries are loaded from the pip wheels first
  (gpu.preload); onnxruntime's own fallback to the CPU is switched off; when the provider still
  cannot load, the error names the library that failed and the driver's and the build's CUDA
  versions (gpu.failure_line). `get_available_providers()` lists CUDA and TensorRT in every
  onnxruntime-gpu wheel, GPU or not, so only a created session counts.
- Placement is read, not assumed: `get_providers()` lists a provider that took no node, so
  `placement` reads the session's graph assignment (`session.record_ep_graph_assignment_info`):
  which compute nodes (Conv, Gemm, MatMul, …) each provider runs, the nodes inside a TensorRT
  subgraph counted one by one. A model whose compute nodes are not all on the requested provider
  is `complete=False`; the benchmark marks it and `--strict-placement` refuses it.
- TensorRT builds what it will run: with the input shapes known (the benchmark: one session per
  batch size) the optimisation profile is explicit (min = opt = max), so the engine is built for
  exactly that shape at session creation, not on a first run with whatever shape comes; engine and
  timing caches sit in a folder keyed by model hash, GPU, the TensorRT library actually loaded and
  the onnxruntime version, published only after the first run succeeds (`first_run`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.edge.runtime import gpu
from toolkit.edge.runtime.model import DEFAULT_CACHE, Model, ModelError, ProviderError, first_line, first_run
from toolkit.edge.runtime.streams import PLAIN, Schedule, available_cores
from toolkit.edge.runtime.tensorrt import (
    EngineCache,
    cache_key,
    gpu_name,
    model_hash,
    profile_tag,
    tensorrt_version,
    trt_profile,
)

# Model, its errors and first_run live in model.py (shared with openvino.py), gpu_name, model_hash
# and tensorrt_version in tensorrt.py; callers open models here and find them here too.
__all__ = ["COMPUTE_OPS", "DEFAULT_CACHE", "PROVIDERS", "Model", "ModelError", "Placement", "ProviderError",
           "check_provider", "classify", "first_run", "gpu_name", "int8_target", "model_hash", "open_model",
           "placement", "provider_options", "softmax", "tensorrt_version", "topk", "usable_providers"]

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    # Not an onnxruntime provider: the OpenVINO runtime behind the same Model interface (openvino.py).
    "openvino": "OpenVINO",
}
# The nodes whose placement decides a row: where the multiply-adds are (quantized and fused forms
# included) and DFT, which CUDA has no kernel for.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv", "Gemm",
                         "FusedGemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul",
                         "MatMulIntegerToFloat", "DFT", "STFT"})
# Providers that compile a subgraph into one kernel (an engine) rather than running node by node.
COMPILING = frozenset({"TensorrtExecutionProvider"})

def _ort():
    import onnxruntime as ort
    # Fatal only outside session creation: gpu.captured() raises it to ERROR while a session is made
    # and turns what is logged into the one-line error, instead of colour-coded lines on the terminal.
    ort.set_default_logger_severity(4)
    return ort


def short(provider_name: str) -> str:
    return provider_name.replace("ExecutionProvider", "")


def provider_options(provider: str, model_path: Path, trt_fp16: bool = False, cache_dir: Path | None = None,
                     device_id: int = 0, profile: str | None = None,
                     trt_qdq_int8: bool = False) -> tuple[list, EngineCache | None]:
    """The providers list for InferenceSession — the requested one first, then the host providers
    for the nodes it cannot take, which `placement` reports — and the TensorRT cache it uses.

    `trt_qdq_int8`: the file is a Q/DQ int8 graph of the TensorRT scheme. TensorRT 10 refuses to
    build such a graph unless the builder's INT8 flag is set ("Int8 precision has been set for a
    layer … but int8 is not configured in the builder": onnxruntime#13381, TensorRT#4021), and
    onnxruntime's only way to set that flag is `trt_int8_enable`. For a Q/DQ graph onnxruntime sets
    no dynamic ranges and reads no calibration table (onnxruntime#8969): the scales are the file's
    own, so this is explicit quantization, not the old implicit calibration. TensorRT 11 drops the
    flag (strongly typed networks), so it is set for TensorRT ≤ 10 only."""
    if provider not in PROVIDERS or provider == "openvino":
        raise ProviderError(f"unknown onnxruntime provider {provider!r} (choose from cpu, cuda, tensorrt)")
    if provider == "cpu":
        return ["CPUExecutionProvider"], None
    cuda = ("CUDAExecutionProvider", {"device_id": device_id})
    if provider == "cuda":
        return [cuda, "CPUExecutionProvider"], None
    cache = EngineCache.prepare(Path(cache_dir or DEFAULT_CACHE / "trt"), cache_key(model_path, device_id),
                                profile_tag(profile))
    opts: dict[str, object] = {
        "device_id": device_id,
        # TensorRT 10 (what this onnxruntime build links) builds weakly typed networks: without this
        # an fp16 file's layers may be computed in fp32.
        "trt_fp16_enable": trt_fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache.path),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache.path),
        "trt_engine_hw_compatible": False,
    }
    if trt_qdq_int8 and _tensorrt_major() <= 10:
        opts.update(trt_int8_enable=True, trt_int8_use_native_calibration_table=False)
    if profile is not None:
        opts.update(trt_profile_min_shapes=profile, trt_profile_opt_shapes=profile, trt_profile_max_shapes=profile)
    return [("TensorrtExecutionProvider", opts), cuda, "CPUExecutionProvider"], cache


# ----------------------------------------------------------------------------- sessions

def open_model(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
               trt_fp16: bool = False, cache_dir: Path | None = None, precision_hint: str | None = None,
               shapes: dict[str, tuple[int, ...]] | None = None, device_id: int = 0,
               schedule: Schedule = PLAIN) -> Model:
    """Create a session on `provider` or raise ProviderError / ModelError with a one-line message.
    `shapes` (tensorrt): the input shapes to build the engine for (an explicit profile); without
    them TensorRT builds on the first run for the shapes it sees. `precision_hint` (f32 | bf16)
    applies to openvino, which computes float models in f32 unless asked. `schedule` (cpu,
    openvino): streams and micro-batches (streams.py), the threads shared out among the streams."""
    ort = _ort()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    from toolkit.edge.contract import ModelFileError, check_model_file, read_metadata
    try:  # the contract is enforced when reading too: one file, external data only inside the folder
        model_file = check_model_file(path)
    except ModelFileError as exc:
        raise ModelError(str(exc)) from None
    if not schedule.plain:
        if provider not in ("cpu", "openvino"):
            raise ProviderError(f"streams and micro-batches apply to the cpu and openvino providers, not {provider}")
        try:
            per_stream = schedule.threads_per_stream(threads or available_cores())
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
    if provider == "openvino":
        from toolkit.edge.runtime.openvino import open_openvino
        return open_openvino(path, threads=threads, precision_hint=precision_hint, cache_dir=cache_dir,
                             schedule=schedule)
    if precision_hint is not None:
        raise ProviderError("a precision hint (f32 | bf16) applies to the openvino provider only")
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
    preload_failures = gpu.preload(provider)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    # Smaller blocks at the end of each parallel loop, so both threads finish together: 1.00–1.03×
    # at batch 256 on the CNN's int8 file in three interleaved runs, never slower, batch 1 unchanged
    # (benchmarks/results/int8-experiments.md, "dynamic blocks").
    so.add_session_config_entry("session.dynamic_block_base", "4")
    if threads or not schedule.plain:
        so.intra_op_num_threads = threads if schedule.plain else per_stream
        so.inter_op_num_threads = 1
    trt = provider == "tensorrt"
    try:
        profile_shapes = trt_profile(model_file.proto, shapes) if trt and shapes else None
    except ValueError as exc:
        raise ProviderError(str(exc)) from None
    trt_qdq_int8 = trt and int8_target(read_metadata(model_file.proto)) == "tensorrt"
    providers, cache = provider_options(provider, path, trt_fp16, cache_dir, device_id, profile_shapes, trt_qdq_int8)
    on_gpu = provider in gpu.GPU_PROVIDERS
    text: list[str] = []
    try:
        with gpu.captured() if on_gpu else contextlib.nullcontext(text) as text:
            # enable_fallback=0: onnxruntime would otherwise retry on the CPU when the provider fails.
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers, enable_fallback=0)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
        if cache is not None:
            cache.discard()
        message = first_line(exc)
        logged = "\n".join(text)
        if on_gpu and ("EP_FAIL" in message or type(exc).__name__ == "EPFail" or gpu.cause(logged)):
            raise ProviderError(gpu.failure_line(provider, logged + "\n" + message, preload_failures)) from None
        raise ModelError(f"{path}: cannot load model ({message[:300]})") from None
    session.disable_fallback()
    if PROVIDERS[provider] not in session.get_providers():
        if cache is not None:
            cache.discard()
        raise ProviderError(gpu.failure_line(provider, "\n".join(text), preload_failures))
    try:  # a damaged file may hold names or metadata that are not UTF-8; the binding fails on reading them
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        [(value.name, value.type) for value in [*session.get_inputs(), *session.get_outputs()]]
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a usable model (names or metadata are not UTF-8)") from None
    model = Model(path=path, session=session, provider=provider, metadata=metadata, engine_cache=cache,
                  schedule=schedule)
    if cache is not None and cache.staging is not None:
        weakref.finalize(model, shutil.rmtree, cache.staging, True)   # never run: nothing published
    return model


def _tensorrt_major() -> int:
    """Major version of the TensorRT library onnxruntime loads (10, what this build links, if unknown)."""
    from toolkit.edge.runtime.tensorrt import tensorrt_version
    version = tensorrt_version()
    return int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else 10


def int8_target(metadata: dict) -> str | None:
    """The int8 scheme a toolkit file was quantized for (`toolkit.calibration`): 'tensorrt'
    (symmetric int8 activations, zero point 0), 'cpu' (uint8 activations, onnxruntime's layout) or
    'openvino' (uint8, OpenVINO's); None if not int8."""
    if metadata.get("toolkit.precision") != "int8":
        return None
    try:
        calibration = json.loads(metadata.get("toolkit.calibration") or "{}")
    except json.JSONDecodeError:
        calibration = {}
    return str(calibration.get("target", "cpu")) if isinstance(calibration, dict) else "cpu"


# ----------------------------------------------------------------------------- placement

@dataclass
class Placement:
    """Where a session's nodes run. `nodes`: provider → nodes (those inside a compiled subgraph
    counted one by one); `subgraphs`: provider → subgraphs it compiled (TensorRT engines);
    `compute`: provider → its compute nodes as `OpType name`."""
    requested: str
    nodes: dict[str, int]
    subgraphs: dict[str, int]
    compute: dict[str, list[str]]

    @property
    def elsewhere(self) -> list[str]:
        return [f"{node} on {where}" for where, names in self.compute.items() if where != self.requested
                for node in names]

    @property
    def complete(self) -> bool:
        """Every compute node on the requested provider, and that provider runs something."""
        return not self.elsewhere and self.nodes.get(self.requested, 0) > 0

    def facts(self) -> dict:
        return {"placement": self.nodes, "placement_subgraphs": self.subgraphs,
                "compute_nodes": {p: len(names) for p, names in self.compute.items()},
                "compute_elsewhere": self.elsewhere, "placement_ok": self.complete}


def classify(subgraphs: Iterable[tuple[str, list[tuple[str, str]]]], requested: str) -> Placement:
    """Placement from (provider, [(op_type, node name)]) per assigned subgraph."""
    nodes: Counter = Counter()
    compiled: Counter = Counter()
    compute: dict[str, list[str]] = {}
    for provider, members in subgraphs:
        name = short(provider)
        nodes[name] += len(members)
        if provider in COMPILING:
            compiled[name] += 1
        for op_type, node in members:
            if op_type in COMPUTE_OPS:
                compute.setdefault(name, []).append(f"{op_type} {node}")
    return Placement(short(PROVIDERS.get(requested, requested)), dict(nodes), dict(compiled), compute)


def placement(model: Model) -> Placement:
    """The session's graph assignment, as onnxruntime recorded it when it partitioned the graph."""
    info = model.session.get_provider_graph_assignment_info()
    return classify(((sg.ep_name, [(n.op_type, n.name) for n in sg.get_nodes()]) for sg in info), model.provider)


# ----------------------------------------------------------------------------- what can run here

@functools.cache
def _probe(provider: str) -> str | None:
    """None when `provider` creates a session and runs a one-node model here, else why not."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    # IR 8 loads in every supported onnxruntime; onnx.helper's default IR can be newer than it reads.
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(proto, path)
        try:
            model = open_model(path, provider, cache_dir=Path(tmp) / "cache")
            if provider != "openvino":
                first_run(model, {"x": np.ones(1, np.float32)})
        except (ProviderError, ModelError) as exc:
            return str(exc)
    return None


def check_provider(provider: str) -> None:
    """Raise ProviderError, with the real cause, when `provider` cannot run a session here."""
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDERS)})")
    reason = _probe(provider)
    if reason is not None:
        raise ProviderError(reason)


def usable_providers() -> list[str]:
    """The providers that can really create and run a session here (tests skip GPU cases by it)."""
    return [name for name in PROVIDERS if _probe(name) is None]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, labels: list[str], k: int) -> list[list[dict]]:
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[{"label": labels[j] if j < len(labels) else str(j), "prob": round(float(p[j]), 4)} for j in row]
            for p, row in zip(probs, order)]
