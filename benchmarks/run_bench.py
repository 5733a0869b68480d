"""The full benchmark matrix on this machine → benchmarks/results/<machine>.json, .md and .png.

    make bench                                           # what gets committed; run on a quiet machine
    .venv/bin/python benchmarks/run_bench.py --seconds 1 --out /tmp/bench   # a quick, noisier look

Measures every shipped model that exists (models/cifar_cnn.onnx, .fp16.onnx, .int8.onnx and
models/dcgan.onnx) on every provider that can really create a session here (cpu; cuda and tensorrt
on a GPU machine), at batch sizes 1, 8, 64 and 256, plus the PyTorch eager fp32 baseline of the
classifier — all in one process, one row after another, `--seconds` of counted runs per row after
the warm-up. With data/cifar10-jpeg/train present (`make data`), the inputs are its validation
images and classifier rows report their validation accuracy.

<machine> is a short slug of the hardware (e.g. cpu-amd-epyc-2c, gpu-nvidia-h100-80gb-hbm3), so
results from different machines sit side by side. On the 2-core dev machine it takes about 3 minutes.
Anything else running on the machine shows up in the numbers: check the p99 column.
"""

import argparse
import sys
from pathlib import Path

from toolkit.core import bench
from toolkit.core.sessions import ModelError, ProviderError, usable_providers

ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = [1, 8, 64, 256]
DEFAULT_DATA = ROOT / "data" / "cifar10-jpeg" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="counted time per row (default 5)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs per row, not counted (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="threads for onnxruntime and torch (0: one per core)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                        help="class-per-folder tree for real inputs and accuracy (default: data/cifar10-jpeg/train "
                             "when present)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    args = parser.parse_args()

    models = bench.default_models()
    if not models:
        sys.exit("error: no shipped models in models/ — export them first (see README)")
    providers = usable_providers()
    print(f"models: {', '.join(m.name for m in models)}; providers: {', '.join(providers)}; "
          f"batch sizes: {BATCH_SIZES}; {args.seconds:g} s per row; data: {args.data or 'none'}", flush=True)
    cfg = bench.BenchConfig(models=models, providers=providers, batch_sizes=BATCH_SIZES, threads=args.threads or None,
                            warmup=args.warmup, seconds=args.seconds, torch=True, data=args.data)

    def on_row(row: dict) -> None:
        print(f"  {row['model']} {row['precision']} {row['provider']} {row['backend']} batch {row['batch_size']}: "
              f"p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, {row['throughput']:,.0f} img/s", flush=True)

    try:
        doc = bench.run_benchmark(cfg, on_row=on_row, log=lambda message: print(message, flush=True))
        written = bench.write_reports(doc, args.out)
    except (bench.BenchError, ProviderError, ModelError, OSError) as exc:
        sys.exit(f"error: {exc}")
    limit = bench.int8_limit_text(doc)
    if limit:
        print(limit)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
