"""The PyTorch eager fp32 rows of `toolkit bench --torch`: the same net as an ONNX row, in the same
contract form (uint8 images → logits, or z → uint8 images), fed the same inputs at the same batch
sizes and threads, measured in the same run.

The runtime bench (toolkit/edge/bench) never imports torch; the CLI hands `torch_rows` to it as
`BenchConfig.torch_rows` when `--torch` is given.
"""

from __future__ import annotations

import time
from pathlib import Path

import toolkit.zoo as zoo
from toolkit.edge.bench import BenchError, Context, Plan, accuracy_of, inputs


def _module(spec: zoo.ModelSpec, weights: Path | None, metadata: dict):
    from toolkit.pytorch import export

    if spec.task == "classify":
        return export.classifier_module(weights, metadata.get("toolkit.preprocess"), model=spec.name)
    return export.generator_module(weights)


def torch_rows(onnx_plan: Plan, ctx: Context) -> list[Plan]:
    """PyTorch eager fp32 plans for the zoo net behind an ONNX plan, with the shipped weights where
    they exist (accuracy is reported only with them); [] for a net the zoo cannot build."""
    name = onnx_plan.metadata.get("toolkit.model")
    spec = zoo.REGISTRY.get(name or "")
    if spec is None or spec.task not in ("classify", "generate"):
        ctx.log(f"--torch: no PyTorch form for {name or onnx_plan.facts['file']}; skipped")
        return []
    try:
        import torch
    except ImportError:
        raise BenchError("--torch needs PyTorch, which is not installed here (pip install 'toolkit[train]')") from None
    cfg = ctx.cfg
    torch.set_num_threads(cfg.threads or 1)
    weights = spec.weights_path if spec.weights_path.is_file() else None
    start = time.perf_counter()
    module = _module(spec, weights, onnx_plan.metadata)
    create_s = time.perf_counter() - start
    ctx.log(f"torch {spec.name}: module built in {create_s:.3f} s, weights "
            f"{weights or 'freshly initialised (no shipped weights)'}")
    pool = ctx.images(spec.input_size) if spec.task == "classify" else ctx.latents(spec.latent_dim)

    def predict(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    accuracy = accuracy_of(predict, spec.labels if weights else [], pool, "the PyTorch net")
    plans = []
    for batch_size in cfg.batch_sizes:
        buffers = [torch.from_numpy(b) for b in ctx.rotating(pool, batch_size)]

        def call(i: int, buffers=buffers):
            with torch.inference_mode():
                return module(buffers[i % len(buffers)])

        facts = {"model": spec.name, "precision": "fp32", "provider": "cpu", "backend": "torch",
                 "batch_size": batch_size, "compute": None, "schedule": None,
                 "file": inputs.report_path(weights) if weights else None,
                 "file_size_bytes": weights.stat().st_size if weights else None, "session_create_s": create_s,
                 "placement": None, "io_binding": False, "input": pool.source, "input_buffers": len(buffers),
                 "multiply_adds_per_item": onnx_plan.facts["multiply_adds_per_item"],
                 "torch_version": torch.__version__}
        plans.append(Plan(facts, call, accuracy, onnx_plan.metadata))
    return plans
