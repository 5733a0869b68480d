"""onnxruntime behind the runtime interface: its CPU, CUDA and TensorRT providers, with strict checks
and node placement. Never imports torch; callers open models through `open.open_model`.

A provider you ask for is a promise, kept three ways:
- The session is on it or there is no session. GPU libraries are loaded from the pip wheels first
  (gpu.preload); onnxruntime's own fallback to the CPU is switched off; when the provider still
  cannot load, the error names the library that failed and the driver's and the build's CUDA
  versions (gpu.failure_line). `get_available_providers()` lists CUDA and TensorRT in every
  onnxruntime-gpu wheel, GPU or not, so only a created session counts.
- Placement is read, not assumed: `get_providers()` lists a provider that took no node, so
  `placement()` reads the session's graph assignment (`session.record_ep_graph_assignment_info`):
  which compute nodes (Conv, Gemm, MatMul, …) each provider runs, the nodes inside a TensorRT
  subgraph counted one by one. A model whose compute nodes are not all on the requested provider
  is `complete=False`; the benchmark marks it and `--strict-placement` refuses it.
- TensorRT builds what it will run: with the input shapes known (the benchmark: one session per
  batch size) the optimisation profile is explicit (min = opt = max), so the engine is built for
  exactly that shape at session creation, not on a first run with whatever shape comes; engine and
  timing caches sit in a folder keyed by model hash, GPU, the TensorRT library actually loaded and
  the onnxruntime version, published only after the first run succeeds (`Model.first_run`).
"""


from __future__ import annotations

import contextlib
import os
import re
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import toolkit.edge.runtime.gpu as gpu
import toolkit.edge.runtime.install as install
from toolkit.edge.errors import first_line
from toolkit.edge.runtime.model import (
    DEFAULT_CACHE,
    Model,
    ModelError,
    OpenOptions,
    Placement,
    ProviderError,
    TensorSpec,
    int8_target,
    numpy_dtype,
)
from toolkit.edge.runtime.streams import Feeds, Runner, available_cores
from toolkit.edge.runtime.tensorrt import EngineCache, cache_key, profile_tag, tensorrt_version, trt_profile

# The toolkit's provider names → onnxruntime's execution providers.
ORT_PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
# The nodes whose placement decides a row: where the multiply-adds are (quantized and fused forms
# included) and DFT, which CUDA has no kernel for.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "FusedConv", "NhwcConv", "Gemm",
                         "FusedGemm", "QGemm", "MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul",
                         "MatMulIntegerToFloat", "DFT", "STFT"})
# Providers that compile a subgraph into one kernel (an engine) rather than running node by node.
COMPILING = frozenset({"TensorrtExecutionProvider"})

# onnxruntime's messages: `[ONNXRuntimeError] : 1 : FAIL : Load model from X failed:<file>.cc:256
# <C++ signature> <reason>`. The status prefix, the path (the caller names the file) and the source
# location with its function signature say nothing to the user; the reason after them does.
_STATUS = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")
_LOAD_FROM = re.compile(r"^Load model from .*? failed:\s*")
_SOURCE = re.compile(r"\S+\.(?:cc|cpp|cu|h):\d+\s+")
_SIGNATURE = re.compile(r"(?:[\w:<>,*&]+ )*[\w~<>:]+::[\w~<>]+\(")


def _ort():
    try:  # one line, not an ImportError or an AttributeError later, when none, two or an old one is installed
        ort = install.onnxruntime()
    except install.SetupError as exc:
        raise ProviderError(str(exc)) from None
    # Fatal only outside session creation: gpu.captured() raises it to ERROR while a session is made
    # and turns what is logged into the one-line error, instead of colour-coded lines on the terminal.
    ort.set_default_logger_severity(4)
    return ort


def short(provider_name: str) -> str:
    return provider_name.replace("ExecutionProvider", "")


def reason(exc: BaseException) -> str:
    """onnxruntime's message as the one line a user needs: its first line without the status
    prefix, the repeated path, the C++ source location and function signature."""
    line = _STATUS.sub("", first_line(exc))
    rest = _LOAD_FROM.sub("", line)
    source = _SOURCE.search(rest)
    if source is not None:
        rest = _after_signature(rest[source.end():])
    return rest.strip() or line


def _after_signature(text: str) -> str:
    """`ns::Cls::fn(args…) const reason` → `reason`; text without a leading signature unchanged."""
    match = _SIGNATURE.match(text)
    if match is None:
        return text
    depth = 0
    for i in range(match.end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[i + 1:].strip().removeprefix("const").strip()
    return text


@dataclass(kw_only=True)
class OnnxRuntimeModel(Model):
    """A model in an onnxruntime InferenceSession on one of its providers."""
    session: Any = field(repr=False)          # onnxruntime ships no types
    engine_cache: EngineCache | None = None

    def make_runner(self) -> Runner:
        """Every stream runs on the one session (its run is thread-safe)."""
        return Runner(self.schedule, [self.session] * self.schedule.streams,
                      lambda session, feeds: session.run(None, feeds))

    def run_feeds(self, feeds: Feeds) -> list:
        if self.engine_cache is not None and self.engine_cache.pending:
            self.first_run(feeds)
        return self.runner(feeds)

    def explain(self, exc: BaseException) -> str:
        return reason(exc)

    def _first_run_done(self, ok: bool) -> None:
        if self.engine_cache is not None and ok:
            self.engine_cache.publish()
        elif self.engine_cache is not None:
            self.engine_cache.discard()

    def placement(self) -> Placement:
        """The session's graph assignment, as onnxruntime recorded it when it partitioned the graph."""
        info = self.session.get_provider_graph_assignment_info()
        return classify(((sg.ep_name, [(n.op_type, n.name) for n in sg.get_nodes()]) for sg in info), self.provider)

    @property
    def binds_io(self) -> bool:
        return not self.cpu_side

    def timed_call(self, feeds: list[Feeds], io_binding: bool = False) -> Callable[[int], object]:
        if not (io_binding and self.binds_io):
            return super().timed_call(feeds)
        ort = _ort()
        session = self.session
        bindings = []
        for feed in feeds:
            binding = session.io_binding()
            for name, array in feed.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
            for output in self.outputs:
                binding.bind_output(output.name, "cuda", 0)
            bindings.append(binding)
        # run_with_iobinding synchronises the device before returning, so the wall time is complete.
        return lambda i: session.run_with_iobinding(bindings[i % len(bindings)])

    def cache_facts(self) -> dict[str, str]:
        if self.engine_cache is None:
            return {}
        return {"engine_cache": "hit" if self.engine_cache.hit else "miss"}


def classify(subgraphs: Iterable[tuple[str, list[tuple[str, str]]]], requested: str) -> Placement:
    """Placement from (onnxruntime provider, [(op_type, node name)]) per assigned subgraph."""
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
    return Placement(short(ORT_PROVIDER_NAMES.get(requested, requested)), dict(nodes), dict(compiled), compute)


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
    own, so this is explicit quantization, not TensorRT's implicit, calibrated kind. TensorRT 11 drops the
    flag (strongly typed networks), so it is set for TensorRT ≤ 10 only."""
    if provider not in ORT_PROVIDER_NAMES:
        raise ProviderError(f"unknown onnxruntime provider {provider!r} (choose from {', '.join(ORT_PROVIDER_NAMES)})")
    host = ORT_PROVIDER_NAMES["cpu"]
    if ORT_PROVIDER_NAMES[provider] == host:
        return [host], None
    cuda = (ORT_PROVIDER_NAMES["cuda"], {"device_id": device_id})
    if ORT_PROVIDER_NAMES[provider] not in COMPILING:
        return [cuda, host], None
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
    return [(ORT_PROVIDER_NAMES["tensorrt"], opts), cuda, host], cache


def _tensorrt_major() -> int:
    """Major version of the TensorRT library onnxruntime loads (10, what this build links, if unknown)."""
    version = tensorrt_version()
    return int(version.split(".")[0]) if version and version.split(".")[0].isdigit() else 10


# ----------------------------------------------------------------------------- sessions

def _session_options(options: OpenOptions):
    so = _ort().SessionOptions()
    so.log_severity_level = 3
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    # Smaller blocks at the end of each parallel loop, so both threads finish together: 1.00–1.03×
    # at batch 256 on the CNN's int8 file in three interleaved runs, never slower, batch 1 unchanged
    # (benchmarks/results/int8-experiments.md, "dynamic blocks").
    so.add_session_config_entry("session.dynamic_block_base", "4")
    schedule = options.schedule
    if options.threads or not schedule.plain:
        so.intra_op_num_threads = (options.threads if schedule.plain
                                   else schedule.threads_per_stream(options.threads or available_cores()))
        so.inter_op_num_threads = 1
    return so


def load_failure(model: Path | bytes) -> str | None:
    """Why onnxruntime's CPU provider cannot load a model (a file, or a serialized ModelProto), in
    one line (`reason`); None when it loads."""
    options = _ort().SessionOptions()
    options.log_severity_level = 3
    try:
        _ort().InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=[ORT_PROVIDER_NAMES["cpu"]])
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
        return reason(exc)
    return None


def _signature(values) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(v.name, numpy_dtype(v.type), tuple(v.shape)) for v in values)


def open_runtime(path: Path, provider: str, model_file, options: OpenOptions) -> OnnxRuntimeModel:
    """An InferenceSession on `provider` or ProviderError / ModelError in one line. `model_file`:
    the file as modelfile.check_model_file read it. With `options.shapes` (tensorrt) the engine is
    built for those input shapes at session creation (an explicit profile); without them, on the
    first run for the shapes it sees."""
    ort = _ort()
    preload_failures = gpu.preload(provider)
    compiling = ORT_PROVIDER_NAMES[provider] in COMPILING
    try:
        profile = trt_profile(model_file.proto, options.shapes) if compiling and options.shapes else None
    except ValueError as exc:
        raise ProviderError(str(exc)) from None
    qdq_int8 = compiling and int8_target(model_file.metadata) == "tensorrt"
    providers, cache = provider_options(provider, path, options.trt_fp16, options.cache_dir, options.device_id,
                                        profile, qdq_int8)
    on_gpu = provider in gpu.GPU_PROVIDERS
    # Made before the capture: the first SessionOptions of a process sets up onnxruntime's logging,
    # and made inside it, the provider's load failure is not logged where the capture reads it.
    session_options = _session_options(options)
    text: list[str] = []
    try:
        with gpu.captured() if on_gpu else contextlib.nullcontext(text) as text, warnings.catch_warnings():
            # onnxruntime warns (a Python warning on stderr) when a requested provider is not in its
            # build; the placement check below turns that into the one line the user reads.
            warnings.simplefilter("ignore", UserWarning)
            # enable_fallback=0: onnxruntime would otherwise retry on the CPU when the provider fails.
            session = ort.InferenceSession(str(path), sess_options=session_options, providers=providers,
                                           enable_fallback=0)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
        if cache is not None:
            cache.discard()
        message, logged = first_line(exc), "\n".join(text)
        # A file the CPU loads makes the failure the provider's, even where onnxruntime logged no
        # cause (it logs a provider library that fails to load only on the first try in a process).
        if on_gpu and ("EP_FAIL" in message or type(exc).__name__ == "EPFail" or gpu.cause(logged)
                       or load_failure(path) is None):
            raise ProviderError(gpu.failure_line(provider, logged + "\n" + message, preload_failures)) from None
        raise ModelError(f"{path}: cannot load model ({reason(exc)})") from None
    session.disable_fallback()
    if ORT_PROVIDER_NAMES[provider] not in session.get_providers():
        if cache is not None:
            cache.discard()
        raise ProviderError(gpu.failure_line(provider, "\n".join(text), preload_failures))
    try:  # a damaged file may hold names or metadata that are not UTF-8; the binding fails on reading them
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = _signature(session.get_inputs()), _signature(session.get_outputs())
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a usable model (names or metadata are not UTF-8)") from None
    model = OnnxRuntimeModel(path=path, provider=provider, inputs=inputs, outputs=outputs, metadata=metadata,
                             schedule=options.schedule, session=session, engine_cache=cache)
    if cache is not None and cache.pending:
        weakref.finalize(model, cache.discard)    # removes the folder only if no first run succeeded
    return model


# ----------------------------------------------------------------------------- the gates' reference runner

def reference_run(path: str | os.PathLike, feed: np.ndarray, batch_size: int = 256, output: str | None = None,
                  fixed_batch: int | None = None) -> np.ndarray:
    """One output (default: the first) of a model on a plain CPU session over `feed`, in batches: the
    reference every parity gate compares against (contract.run_onnx). A model whose batch is fixed
    at B (`fixed_batch`) gets chunks of exactly B, the last one padded. A plain session, not
    open_model: the file being gated was written a moment ago, and the gate must not depend on the
    provider machinery. Failures are ModelError (loading) or RuntimeError (running), one line each,
    onnxruntime's own cause kept."""
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=[ORT_PROVIDER_NAMES["cpu"]])
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise ModelError(reason(exc)) from None
    name = session.get_inputs()[0].name
    step = fixed_batch or batch_size
    outs = []
    for i in range(0, len(feed), step):
        chunk = feed[i:i + step]
        n = len(chunk)
        if fixed_batch and n < fixed_batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed_batch - n, axis=0)])
        try:
            outs.append(session.run([output] if output else None, {name: chunk})[0][:n])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types)
            raise RuntimeError(reason(exc)) from None
    return np.concatenate(outs)
