"""The full benchmark matrix on this machine → benchmarks/results/<machine>.json, .md and .png.

    make bench                                           # what gets committed; run on a quiet machine
    .venv/bin/python benchmarks/run_bench.py --seconds 0.5 --rounds 2 --out /tmp/bench   # a quick look

Measures every shipped model that exists (models/cifar_cnn.onnx, .fp16.onnx, .int8.onnx and
models/dcgan.onnx) on every provider that can really create a session here (cpu and openvino; cuda
and tensorrt on a GPU machine) — OpenVINO in f32 and, for float files, in bf16 as rows of their own
— at batch sizes 1, 8, 64 and 256, plus the PyTorch eager fp32 baseline of each net, all in one
process. The CPU rows come once per schedule (toolkit/edge/runtime/streams.py): one call per batch (the
plain rows), the batch cut into micro-batches of 64 on one stream, and micro-batches of 32 on two
streams of one thread each — each only where it cuts the batch (64 and 256). The rows are
interleaved: `--rounds` rounds, each giving every row `--seconds / --rounds` of counted runs in turn,
so a noisy neighbour or a clock change hits every row alike and the ratios stay fair. The roof
(all-core clock, int8/fp32/bf16 issue rates, each runtime's best GEMM) is measured in the same run
and every row gets its share of it. With data/cifar10-png/train present
(`make data`), the inputs are its validation images and classifier rows report their accuracy.

<machine> is a short slug of the hardware (e.g. cpu-amd-epyc-2c, gpu-nvidia-h100-80gb-hbm3), so
results from different machines sit side by side. On the 2-core dev machine it takes about 25
minutes. Anything else running on the machine shows up in the numbers: check the p99 column and
`uptime` first.
"""

import argparse
import sys
from pathlib import Path

from toolkit.edge import bench
from toolkit.edge.runtime import ModelError, ProviderError, usable_providers
from toolkit.edge.runtime.streams import Schedule
from toolkit.pytorch.torch_bench import torch_rows

ROOT = Path(__file__).resolve().parent.parent
BATCH_SIZES = [1, 8, 64, 256]
SCHEDULES = ["1", "1x64", "2x32"]
DEFAULT_DATA = ROOT / "data" / "cifar10-png" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="counted time per row, over all rounds (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaving rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs per row, not counted (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="threads for every runtime (0: one per core)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                        help="class-per-folder tree for real inputs and accuracy (default: data/cifar10-png/train "
                             "when present)")
    parser.add_argument("--schedule", action="append",
                        help=f"STREAMS[xMICRO], repeatable (default {' '.join(SCHEDULES)})")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    args = parser.parse_args()

    models = bench.default_models()
    if not models:
        sys.exit("error: no shipped models in models/ — run `make models` first")
    providers = usable_providers()
    try:
        schedules = [Schedule.parse(text) for text in args.schedule or SCHEDULES]
    except ValueError as exc:
        sys.exit(f"error: --schedule: {exc}")
    print(f"models: {', '.join(m.name for m in models)}; providers: {', '.join(providers)}; batch sizes: "
          f"{BATCH_SIZES}; schedules: {', '.join(s.spec for s in schedules)}; {args.seconds:g} s per row in "
          f"{args.rounds} rounds; data: {args.data or 'none'}", flush=True)
    cfg = bench.BenchConfig(models=models, providers=providers, batch_sizes=BATCH_SIZES, threads=args.threads or None,
                            warmup=args.warmup, seconds=args.seconds, rounds=args.rounds, data=args.data,
                            precision_hints=["f32", "bf16"], torch_rows=torch_rows, schedules=schedules)

    def on_row(row: dict) -> None:
        hint = f" ({row['compute']})" if row.get("compute") else ""
        hint += f", {row['schedule']}" if row.get("schedule") else ""
        share = f", {row['isa_roof_share']:.0%} of the ISA roof" if row.get("isa_roof_share") else ""
        print(f"  {row['model']} {row['precision']}{hint} {row['provider']} {row['backend']} batch "
              f"{row['batch_size']}: p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, "
              f"{row['throughput']:,.0f} img/s{share}", flush=True)

    try:
        doc = bench.run_benchmark(cfg, on_row=on_row, log=lambda message: print(message, flush=True))
        written = bench.write_reports(doc, args.out)
    except (bench.BenchError, ProviderError, ModelError, OSError) as exc:
        sys.exit(f"error: {exc}")
    for line in bench.summary_lines(doc):
        print(line)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
