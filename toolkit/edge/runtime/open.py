"""Opening a model: the one `open_model` for every runtime, and which providers can run here.
Never imports torch.

What holds for every runtime is checked here, once, before the runtime is imported: the file obeys
the contract (modelfile.check_model_file: one file, external data only inside its folder), the
provider is known, and each option applies to it (a schedule to the providers that run streams, a
precision hint to those that take one). The runtime module named in registry.RUNTIMES then opens it.
"""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

import toolkit.edge.runtime.registry as registry
from toolkit.edge.runtime.deployment import DeploymentError, deployment_of, settle
from toolkit.edge.runtime.model import Model, ModelError, OpenOptions, ProviderError
from toolkit.edge.runtime.streams import Schedule, available_cores


class RuntimeModule(Protocol):
    """What a runtime module of registry.RUNTIMES defines."""

    def open_runtime(self, path: Path, provider: str, model_file, options: OpenOptions) -> Model: ...


def _check_options(provider: str, options: OpenOptions) -> None:
    """ProviderError for an option that does not apply to `provider` or cannot be met."""
    if not options.schedule.plain:
        if not registry.provider_facts(provider).schedule:
            streaming = " and ".join(registry.providers_with(schedule=True))
            raise ProviderError(f"streams and micro-batches apply to the {streaming} providers, not {provider}")
        try:
            options.schedule.threads_per_stream(options.threads or available_cores())
        except ValueError as exc:
            raise ProviderError(str(exc)) from None
    if options.shapes is not None and not registry.provider_facts(provider).engine_per_shape:
        raise ProviderError(f"input shapes to build an engine for apply to the "
                            f"{', '.join(registry.providers_with(engine_per_shape=True))} provider only")
    if options.precision_hint is not None and not registry.provider_facts(provider).precision_hint:
        raise ProviderError(f"a precision hint (f32 | bf16) applies to the "
                            f"{', '.join(registry.providers_with(precision_hint=True))} provider only")


def open_model(path: str | os.PathLike, provider: str | None = None, threads: int | None = None,
               schedule: Schedule | None = None, precision_hint: str | None = None, cache_dir: Path | None = None,
               shapes: dict[str, tuple[int, ...]] | None = None, trt_fp16: bool = False,
               device_id: int = 0) -> Model:
    """Open `path` on `provider` or raise ProviderError / ModelError with a one-line message; no
    silent fallback to another provider. `schedule` (cpu, openvino): streams and micro-batches
    (streams.py), the threads shared out among the streams. `precision_hint` (openvino: f32 | bf16):
    the compute precision of float models. `shapes` (tensorrt): the input shapes to build the engine
    for (an explicit profile); without them TensorRT builds on the first run for the shapes it sees.
    `trt_fp16`: let TensorRT choose fp16 kernels (for an fp16 file). Provider, threads, schedule and
    hint left as None come from the file's deployment (deployment.py) where it has one, else cpu,
    the runtime's threads, one call per batch, no hint."""
    path = Path(path)
    if provider is not None:
        registry.provider_facts(provider)                 # an unknown provider is refused before the file is read
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    from toolkit.edge.modelfile import ModelFileError, check_model_file
    try:  # the contract is enforced when reading too: one file, external data only inside the folder
        model_file = check_model_file(path)
    except ModelFileError as exc:
        raise ModelError(str(exc)) from None
    try:
        chosen = settle(deployment_of(model_file.metadata, str(path)), provider, threads, schedule, precision_hint)
    except DeploymentError as exc:
        raise ModelError(str(exc)) from None
    provider = chosen.provider
    options = OpenOptions(threads=chosen.threads, schedule=chosen.schedule, precision_hint=chosen.precision_hint,
                          cache_dir=cache_dir, shapes=shapes, trt_fp16=trt_fp16, device_id=device_id)
    _check_options(provider, options)
    module: RuntimeModule = importlib.import_module(registry.RUNTIMES[registry.runtime_of(provider)])
    return module.open_runtime(path, provider, model_file, options)


# ----------------------------------------------------------------------------- what can run here

def _probe_model(path: Path) -> dict[str, np.ndarray]:
    """A one-node model, a 3×3 convolution on float [1, 1, 4, 4], written to `path`; returns its
    feeds. A convolution, because the CUDA provider loads cuDNN only when one first runs: a probe
    without one passes on a machine where every CNN then fails."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], [weight])
    # IR 8 loads in every supported onnxruntime; onnx.helper's default IR can be newer than it reads.
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return {"x": np.ones((1, 1, 4, 4), np.float32)}


@functools.cache
def _probe(provider: str) -> str | None:
    """None when `provider` opens and runs a one-node model here, else why not."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        feeds = _probe_model(path)
        try:
            open_model(path, provider, cache_dir=Path(tmp) / "cache").first_run(feeds)
        except (ProviderError, ModelError) as exc:
            return str(exc)
    return None


def check_provider(provider: str) -> None:
    """Raise ProviderError, with the real cause, when `provider` cannot run a model here."""
    registry.provider_facts(provider)
    reason = _probe(provider)
    if reason is not None:
        raise ProviderError(reason)


def usable_providers() -> list[str]:
    """The providers that can really open and run a model here (tests skip GPU cases by it)."""
    return [name for name in registry.PROVIDER_TABLE if _probe(name) is None]
