"""One inference call per runtime, the same for every row: the model's own run (onnxruntime's
session or OpenVINO's infer requests, by its schedule), or onnxruntime with IO binding (GPU rows:
data stays on the device) — plus where the nodes ran. Never imports torch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from toolkit.edge.runtime import ort as sessions
from toolkit.edge.runtime.ort import Model

Feeds = dict[str, np.ndarray]


def backend(model: Model) -> str:
    """The runtime behind a model: `openvino` or `onnxruntime`."""
    return "openvino" if model.provider == "openvino" else "onnxruntime"


def step(model: Model, feeds: list[Feeds], device: bool) -> Callable[[int], object]:
    """One inference per call, cycling through `feeds`. With `device` (onnxruntime on CUDA or
    TensorRT), inputs are copied to the GPU once and outputs stay there (IO binding), so only the
    inference itself is timed."""
    if not device:
        run = model.run_feeds     # by the model's schedule (streams.py)
        return lambda i: run(feeds[i % len(feeds)])
    import onnxruntime as ort

    session = model.session
    outputs = [o.name for o in session.get_outputs()]
    bindings = []
    for feed in feeds:
        binding = session.io_binding()
        for name, array in feed.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        for output in outputs:
            binding.bind_output(output, "cuda", 0)
        bindings.append(binding)
    # run_with_iobinding synchronises the device before returning, so the wall time is complete.
    return lambda i: session.run_with_iobinding(bindings[i % len(bindings)])


def placement(model: Model) -> dict:
    """Where the nodes run, as row facts. onnxruntime: the session's graph assignment per provider
    (sessions.placement: compute nodes per provider, TensorRT subgraphs counted with the nodes
    inside them, `placement_ok` when every compute node is on the requested provider); OpenVINO:
    the compiled graph's nodes per element type they compute in (`CPU u8`, `CPU f32`, …), which is
    where its precision choices show."""
    runtime_precisions = getattr(model, "runtime_precisions", None)
    if runtime_precisions is not None:
        return {"placement": {f"CPU {kind}": n for kind, n in sorted(runtime_precisions().items())},
                "placement_ok": True}
    return sessions.placement(model).facts()
