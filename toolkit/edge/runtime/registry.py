"""Which runtime runs each provider, and what each provider allows: the one table every caller asks
instead of comparing provider names. Standard library only, so anything may import it.

Adding a runtime is one module that defines `open_runtime(path, provider, model_file, options)`
returning a Model (ort.py and openvino.py are the two there are), one entry in RUNTIMES naming that
module, and a row in PROVIDER_TABLE per provider it serves (plus the name in options.Provider, the
CLI's choices, which a test holds equal to this table's keys). `open.open_model` imports the module
of the provider's runtime only when a model is opened on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderFacts:
    """What a provider is. `cpu_side`: computes on the host CPU (a GPU provider keeps its data on the
    device, so the benchmark binds inputs and outputs there). `schedule`: streams and micro-batches
    (streams.py) apply. `precision_hint`: takes a compute precision for float models (f32 | bf16).
    `engine_per_shape`: builds an engine for exact input shapes, so a caller that knows its shapes
    opens one model per shape set. `int8_target`: the int8 scheme (`toolkit.calibration` target)
    of the files quantized for it. `dft`: runs ONNX's DFT operator (onnxruntime has no GPU kernel
    for it and TensorRT rejects it), so the spectral ops default to their DFT form there."""
    runtime: str
    cpu_side: bool
    schedule: bool = False
    precision_hint: bool = False
    engine_per_shape: bool = False
    int8_target: str = "cpu"
    dft: bool = False


# The module that runs each runtime (imported when a model is opened on it).
RUNTIMES = {
    "onnxruntime": "toolkit.edge.runtime.ort",
    "openvino": "toolkit.edge.runtime.openvino",
}

PROVIDER_TABLE = {
    "cpu": ProviderFacts("onnxruntime", cpu_side=True, schedule=True, dft=True),
    "cuda": ProviderFacts("onnxruntime", cpu_side=False),
    "tensorrt": ProviderFacts("onnxruntime", cpu_side=False, engine_per_shape=True, int8_target="tensorrt"),
    # The OpenVINO runtime itself, not an onnxruntime provider (openvino.py says why).
    "openvino": ProviderFacts("openvino", cpu_side=True, schedule=True, precision_hint=True, int8_target="openvino"),
}


class ProviderError(RuntimeError):
    """The provider the user asked for is unknown or cannot run this model; one line for the user."""


def provider_facts(provider: str) -> ProviderFacts:
    """What `provider` is and allows (`provider_facts(p).schedule`, `.precision_hint`, `.engine_per_shape`,
    `.dft`); ProviderError for a name that is not in the table."""
    try:
        return PROVIDER_TABLE[provider]
    except KeyError:
        raise ProviderError(f"unknown provider {provider!r} (choose from {', '.join(PROVIDER_TABLE)})") from None


def runtime_of(provider: str) -> str:
    """`onnxruntime`, `openvino`, …: the runtime behind a provider."""
    return provider_facts(provider).runtime


def providers_with(**wanted: bool) -> list[str]:
    """Provider names whose facts match, e.g. providers_with(schedule=True)."""
    return [name for name, row in PROVIDER_TABLE.items()
            if all(getattr(row, key) == value for key, value in wanted.items())]


def provider_is_cpu_side(provider: str) -> bool:
    return provider_facts(provider).cpu_side


def cpu_provider_of(runtime: str) -> str:
    """The provider that runs `runtime` on the host CPU (what the roof's GEMM is measured on)."""
    found = [name for name, row in PROVIDER_TABLE.items() if row.runtime == runtime and row.cpu_side]
    if not found:
        raise ProviderError(f"no CPU provider for runtime {runtime!r} (runtimes: {', '.join(RUNTIMES)})")
    return found[0]


def int8_target_of(provider: str) -> str:
    """The int8 scheme of the files quantized for `provider` (a file of another scheme is not its)."""
    return provider_facts(provider).int8_target
