"""Opening and running models: the runtime interface and everything behind it. Never imports torch.

What callers use (imported from here): `open_model` (open.py) opens a file on a provider and returns
a `Model` (model.py) — inputs and outputs as TensorSpecs, `run`/`run_feeds`, `placement()`, its
`runtime`, `provider`, `path` and `schedule`, and what the benchmark times (`first_run`,
`timed_call`, `cache_facts`); `check_provider`/`usable_providers` say what runs here; the provider
table (registry.py) answers what a provider allows, so no caller compares provider names.

Behind it, one module per runtime: ort.py (onnxruntime: CPU, CUDA, TensorRT), openvino.py (the
OpenVINO runtime); and what they share: streams.py (schedules: streams and micro-batches),
tensorrt.py (engine caches and profiles), gpu.py (loading the GPU libraries, reading their failures).
"""

from toolkit.edge.runtime.model import DEFAULT_CACHE, Model, ModelError, ProviderError, TensorSpec, int8_target
from toolkit.edge.runtime.open import check_provider, open_model, usable_providers
from toolkit.edge.runtime.registry import (
    PROVIDER_TABLE,
    cpu_provider_of,
    int8_target_of,
    provider_facts,
    provider_is_cpu_side,
    providers_with,
    runtime_of,
)
from toolkit.edge.runtime.streams import PLAIN, Schedule

__all__ = [
    "DEFAULT_CACHE", "PLAIN", "PROVIDER_TABLE", "Model", "ModelError", "ProviderError", "Schedule", "TensorSpec",
    "check_provider", "cpu_provider_of", "int8_target", "int8_target_of", "open_model",
    "provider_facts", "provider_is_cpu_side", "providers_with", "runtime_of", "usable_providers",
]
