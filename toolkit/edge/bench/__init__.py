"""Latency and throughput of ONNX models per precision, runtime and batch size, on this machine,
against a roof measured in the same run.

    toolkit bench                                   # shipped models, CPU, batch 1 and 64
    toolkit bench --batch-size 1 --batch-size 256 --torch --data data/cifar10-png/train
    toolkit bench --provider cpu --provider openvino --precision-hint f32 --precision-hint bf16
    toolkit bench --model theirs.onnx --shape input=8x3x224x224     # any ONNX file, inputs synthesised
    toolkit bench --compare benchmarks/results/cpu-amd-epyc-2c.json
    make bench                                      # the full matrix → benchmarks/results/

Honest timing: warm-up runs are excluded, every counted run is timed and kept, inputs are real
images (or latents, or values synthesised from the declared types) drawn into a rotating set of
buffers, rows can be interleaved so load changes hit all of them alike, and the report carries
the machine's fingerprint and its measured roof. On CUDA and TensorRT the inputs and outputs
stay on the device (IO binding) unless `--include-copy`. Every row reports where its nodes ran.

The package, by job: inputs.py (signatures, shapes, real and synthesised inputs, multiply-adds),
timing.py (timed runs, statistics, accuracy), measure.py (plans, interleaved rounds, the whole run;
each row's timed call is the model's own `Model.timed_call`, IO binding on a GPU included),
machine.py (fingerprint), roof.py + roof.c (the measured roof), report.py (tables, plots, JSON,
comparison). Nothing here imports torch: the PyTorch rows are made
by toolkit/pytorch/torch_bench.py and handed in as `BenchConfig.torch_rows`.
"""

from toolkit.edge.bench.inputs import (
    BUFFER_BYTES,
    MAX_BUFFERS,
    MIN_BUFFERS,
    BenchError,
    InputPool,
    TensorSpec,
    image_pool,
    latent_pool,
    multiply_adds,
    parse_shapes,
    resolve_shapes,
    rotating_buffers,
    signature,
    synthesise,
)
from toolkit.edge.bench.machine import available_cores, machine_info, machine_slug
from toolkit.edge.bench.measure import (
    DEFAULT_BATCH_SIZES,
    BenchConfig,
    Context,
    Plan,
    default_models,
    measure_plans,
    run_benchmark,
)
from toolkit.edge.bench.report import (
    compare_rows,
    load_result,
    markdown_report,
    placement_lines,
    plot_report,
    print_comparison,
    print_table,
    result_json,
    summary_lines,
    write_reports,
)
from toolkit.edge.bench.roof import measure_roof, shares
from toolkit.edge.bench.timing import DEFAULT_RUNS, MIN_TIMED_RUNS, accuracy_of, latency_stats, time_runs

__all__ = [
    "BUFFER_BYTES", "DEFAULT_BATCH_SIZES", "DEFAULT_RUNS", "MAX_BUFFERS", "MIN_BUFFERS", "MIN_TIMED_RUNS",
    "BenchConfig", "BenchError", "Context", "InputPool", "Plan", "TensorSpec", "accuracy_of", "available_cores",
    "compare_rows", "default_models", "image_pool", "latency_stats", "latent_pool", "load_result", "machine_info",
    "machine_slug", "markdown_report", "measure_plans", "measure_roof", "multiply_adds", "parse_shapes",
    "placement_lines",
    "plot_report", "print_comparison", "print_table", "resolve_shapes", "result_json", "rotating_buffers",
    "run_benchmark", "shares", "signature", "summary_lines", "synthesise", "time_runs", "write_reports",
]
