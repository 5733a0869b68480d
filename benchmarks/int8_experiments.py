"""Where onnxruntime's int8 time goes on the paper CNN, and what each change to the int8 path buys,
measured in one interleaved run → benchmarks/results/int8-experiments.md (and .json).

    .venv/bin/python benchmarks/int8_experiments.py                      # on a quiet machine (uptime < 0.5)
    .venv/bin/python benchmarks/int8_experiments.py --seconds 0.5 --rounds 2 --out /tmp/int8   # a quick look

Needs models/cifar_cnn.onnx (`make models`) and data/cifar10-png/train (`make data`): calibration
uses 500 training images of the fixed split, as `toolkit export --precision int8` does, and every
file's accuracy is measured on the 5,000 validation images. The guard is the shipped one: at most
0.5 points below fp32.

1. The baseline is the fp32 file quantized with the recipe the toolkit used before these
   experiments (BASELINE_RECIPE: float input head, uint8 logits), beside the int8 file in models/.
2. Per-node profile of the baseline at batch 256 (onnxruntime's profiler), and of the new recipe.
3. Variants of the file, one change at a time and together (CPU_RECIPE, what `toolkit export` and
   `toolkit quantize` now build), then session options on the new file: optimisation level, a
   saved optimised model, thread spinning, dynamic scheduling — OpenVINO on three of the files —
   and schedules (toolkit/edge/runtime/streams.py: the batch cut into micro-batches on 1 or 2 streams) for
   the new file in onnxruntime and the OpenVINO files (unpacked, NHWC head) in OpenVINO.
4. Every row is timed in the same process, interleaved in rounds, at batch 256 and batch 1. A
   row's ratio to the baseline is the median over rounds of the baseline's median time per run in
   a round over the row's in the same round: pairs measured seconds apart, so load that comes and
   goes on a shared machine cancels out of the ratio far better than out of the absolute numbers.
"""

import argparse
import json
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from toolkit.edge import bench
from toolkit.edge.data.datasets import CIFAR10_LABELS
from toolkit.edge.data.fsio import atomic_write_text
from toolkit.edge.quantize import variants as quantize
from toolkit.edge.quantize.classifier import read_quantization_data
from toolkit.edge.quantize.config import QuantizeOptions
from toolkit.edge.quantize.recipe import BASELINE_RECIPE, CPU_RECIPE, OPENVINO_RECIPE
from toolkit.edge.runtime import open_model
from toolkit.edge.runtime.streams import Schedule

ROOT = Path(__file__).resolve().parent.parent
FP32 = ROOT / "models" / "cifar_cnn.onnx"
SHIPPED = ROOT / "models" / "cifar_cnn.int8.onnx"
DATA = ROOT / "data" / "cifar10-png" / "train"
MAX_DROP = 0.5
# (name, what changed, recipe, nodes kept in float)
FILE_VARIANTS = [
    ("today", "the recipe before: float head (Cast, Sub, Mul, Quantize), uint8 logits", BASELINE_RECIPE, ()),
    ("integer head", "normalisation folded into conv1; its input is the uint8 pixels (exact borders)",
     replace(BASELINE_RECIPE, integer_head=True), ()),
    ("integer head, zero-point borders", "the same, conv1 pads with the mean pixel z (one op fewer)",
     replace(BASELINE_RECIPE, integer_head=True, border="zero-point"), ()),
    ("float logits", "no Quantize/Dequantize pair on the output: the last QGemm writes float",
     replace(BASELINE_RECIPE, float_logits=True), ()),
    ("unpacked recipe", "integer head + float logits, first conv not packed (the OpenVINO files before the NHWC head)",
     replace(OPENVINO_RECIPE, nhwc_head=False, nhwc_flatten=False), ()),
    ("OpenVINO recipe", ("the unpacked recipe, padded and dequantized before the input's Transpose, NHWC flatten "
     "(OPENVINO_RECIPE: target openvino)"), OPENVINO_RECIPE, ()),
    ("packed recipe", "integer head + float logits + the first conv packed 4 pixels wide (default until the flatten)",
     replace(CPU_RECIPE, nhwc_flatten=False), ()),
    ("new recipe", "the packed recipe + the first Gemm reading the pooled map in NHWC order (CPU_RECIPE, the default)",
     CPU_RECIPE, ()),
    ("new recipe, per-tensor weights", "one weight scale per tensor instead of per output channel",
     replace(CPU_RECIPE, per_channel=False), ()),
    ("new recipe, u8u8", "uint8 weights (zero point 128) instead of int8: VNNI multiplies u8 × s8",
     replace(CPU_RECIPE, weight_type="uint8"), ()),
    ("today, conv1 in float", "the first convolution (3 input channels) kept in fp32", BASELINE_RECIPE,
     ("node_conv2d",)),
]
# (file, provider, schedule): the batch cut into micro-batches run on streams (toolkit/edge/runtime/streams.py)
SCHEDULE_VARIANTS = [("new recipe", "cpu", "2x32"), ("new recipe", "cpu", "1x32"),
                     ("unpacked recipe", "openvino", "1x64"), ("OpenVINO recipe", "openvino", "1x64"),
                     ("OpenVINO recipe", "openvino", "2x32")]
# (name, what changed, session config entries, graph optimisation level, offline-optimised file)
SESSION_VARIANTS = [
    ("new recipe, level extended", "graph optimisation EXTENDED (no NHWC layout transformer)", {}, "extended", False),
    ("new recipe, level basic", "graph optimisation BASIC", {}, "basic", False),
    ("new recipe, saved optimised model", "optimised once, saved, loaded with optimisation off", {}, "disabled", True),
    ("new recipe, no spinning", "session.intra_op.allow_spinning = 0", {"session.intra_op.allow_spinning": "0"},
     "all", False),
    ("new recipe, dynamic blocks", "session.dynamic_block_base = 4 (kept: open_model sets it)",
     {"session.dynamic_block_base": "4"}, "all", False),
]


def ort_session(path: Path, threads: int, level: str = "all", config: dict | None = None, save_to: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def profile(path: Path, images: np.ndarray, threads: int, runs: int = 20) -> list[dict]:
    """Mean time per run of each node at this batch, largest first (onnxruntime's profiler)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, {"image": images})
        events = json.loads(Path(session.end_profiling()).read_text())
    total, kinds = Counter(), {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"].removesuffix("_kernel_time")
            total[name] += event["dur"]
            kinds[name] = event["args"].get("op_name", "")
    whole = sum(total.values()) or 1
    return [{"node": name, "op": kinds[name], "ms": us / runs / 1e3, "share": us / whole}
            for name, us in total.most_common()]


def build_files(out: Path, calibration: np.ndarray, log) -> dict[str, Path]:
    pre = out / "pre.onnx"
    quantize.preprocess_for_quantization(FP32, pre)
    files = {}
    for name, _, recipe, excluded in FILE_VARIANTS:
        path = out / (name.replace(" ", "_").replace(",", "") + ".onnx")
        quantize.quantize_int8_static(pre, path, calibration, "minmax", excluded, recipe=recipe)
        files[name] = path
        log(f"built {name}: {path.name}")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="counted time per row over all rounds (default 4)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaving rounds (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="threads (0: one per core)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="class-per-folder tree (default data/cifar10-png/train)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    args = parser.parse_args()
    if not FP32.is_file() or not args.data.is_dir():
        sys.exit(f"error: needs {FP32.relative_to(ROOT)} (make models) and {args.data} (make data)")
    threads = args.threads or bench.available_cores()
    data = read_quantization_data(args.data, (32, 32), list(CIFAR10_LABELS), QuantizeOptions(), log=print)
    labels = np.asarray(data.labels)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = build_files(work, data.calibration, print)
        rng = np.random.default_rng(0)
        batches = {b: [np.ascontiguousarray(data.guard[rng.choice(len(data.guard), b)]) for _ in range(8)]
                   for b in (256, 1)}
        before = profile(files["today"], batches[256][0], threads)
        after = profile(files["new recipe"], batches[256][0], threads)
        fp32_logits = open_model(FP32, "cpu").run(data.guard)
        rows: list[dict] = []

        def accuracy_of(path: Path) -> dict:
            logits = np.concatenate([open_model(path, "cpu").run(data.guard[i:i + 500])
                                     for i in range(0, len(data.guard), 500)])
            accuracy = float(np.mean(logits.argmax(1) == labels))
            return {"accuracy": accuracy, "agreement": float(np.mean(logits.argmax(1) == fp32_logits.argmax(1))),
                    "drop_points": (float(np.mean(fp32_logits.argmax(1) == labels)) - accuracy) * 100}

        runners = {}
        for name, what, _, _ in FILE_VARIANTS:
            session = ort_session(files[name], threads)
            runners[name] = (what, lambda x, s=session: s.run(None, {"image": x}), accuracy_of(files[name]))
        if SHIPPED.is_file():
            session = ort_session(SHIPPED, threads)
            runners["shipped file"] = (f"{SHIPPED.relative_to(ROOT)} as it is",
                                       lambda x, s=session: s.run(None, {"image": x}), accuracy_of(SHIPPED))
        new = files["new recipe"]
        for name, what, config, level, offline in SESSION_VARIANTS:
            source = new
            if offline:
                source = work / "optimised.onnx"
                ort_session(new, threads, "all", config, save_to=source)
            session = ort_session(source, threads, level, config)
            runners[name] = (what, lambda x, s=session: s.run(None, {"image": x}), runners["new recipe"][2])
        try:
            for name in ("today", "unpacked recipe", "OpenVINO recipe", "new recipe"):
                model = open_model(files[name], "openvino", threads=threads)
                runners[f"{name}, OpenVINO"] = ("the same file in OpenVINO 2026 (LATENCY hint, f32 float parts)",
                                                model.run, runners[name][2])
        except Exception as exc:  # noqa: BLE001  (OpenVINO is optional; the table says it is missing)
            print(f"OpenVINO rows skipped: {exc}")
        for name, provider, spec in SCHEDULE_VARIANTS:
            schedule = Schedule.parse(spec)
            try:
                model = open_model(files[name], provider, threads=threads, schedule=schedule)
            except Exception as exc:  # noqa: BLE001  (OpenVINO is optional)
                print(f"{name} on {provider}, {schedule.label}: skipped ({exc})")
                continue
            runtime = "OpenVINO" if provider == "openvino" else "onnxruntime"
            each = threads // schedule.streams
            what = (f"{runtime}, the batch cut into micro-batches of {schedule.micro_batch} run on "
                    f"{schedule.label.split(' ×')[0]} ({each} thread{'s' if each > 1 else ''} each)")
            runners[f"{name}, {runtime}, {schedule.label}"] = (what, model.run, runners[name][2])
        cfg = bench.BenchConfig(models=[], threads=threads, warmup=5, seconds=args.seconds, rounds=args.rounds)
        plans = [bench.Plan({"variant": name, "batch_size": b},
                            (lambda i, run=run, xs=batches[b]: run(xs[i % len(xs)])))
                 for b in (256, 1) for name, (_, run, _) in runners.items()]
        print(f"measuring {len(plans)} rows, {args.seconds:g} s each in {args.rounds} rounds", flush=True)
        bench.measure_plans(plans, cfg, lambda plan: None)
        baseline = {p.facts["batch_size"]: p for p in plans if p.facts["variant"] == "today"}
        for plan in plans:
            batch, name = plan.facts["batch_size"], plan.facts["variant"]
            stats = bench.latency_stats(plan.timings, batch)
            ratios = round_medians(baseline[batch]) / round_medians(plan)
            rows.append({"variant": name, "what": runners[name][0], "batch_size": batch, "p50_ms": stats["p50_ms"],
                         "throughput": stats["throughput"], "runs": len(plan.timings),
                         "ratio": float(np.median(ratios)), "ratio_range": [float(ratios.min()), float(ratios.max())],
                         **runners[name][2]})
    doc = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
           "machine": bench.machine_info(), "threads": threads, "rounds": args.rounds, "seconds": args.seconds,
           "profile_today": before, "profile_new": after, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "int8-experiments.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(args.out / "int8-experiments.md", markdown(doc))
    print(markdown(doc))


def round_medians(plan) -> np.ndarray:
    """The median run time of each round of a plan."""
    starts = [0, *plan.round_ends[:-1]]
    return np.array([np.median(plan.timings[a:b]) for a, b in zip(starts, plan.round_ends)])


def _ratio(row: dict) -> str:
    low, high = row["ratio_range"]
    return f"{row['ratio']:.2f}× ({low:.2f}–{high:.2f})"


def _profile_table(nodes: list[dict], top: int = 12) -> list[str]:
    lines = ["| node | op | ms per batch | share |", "|---|---|---:|---:|"]
    lines += [f"| {n['node']} | {n['op']} | {n['ms']:.3f} | {n['share']:.1%} |" for n in nodes[:top]]
    return lines


def markdown(doc: dict) -> str:
    by = {(r["variant"], r["batch_size"]): r for r in doc["rows"]}
    lines = ["# The int8 path in onnxruntime: what was tried", "",
             (f"Measured {doc['created']} with `{doc['command']}` on {doc['machine']['cpu']} "
             f"({doc['threads']} threads, {', '.join(doc['machine']['isa'])}); every row in one process, interleaved "
             f"in {doc['rounds']} rounds, {doc['seconds']:g} s per row. Ratios are to the `today` file (the fp32 "
             "model quantized with the recipe used before these experiments): per round, the baseline's median "
             "time per run over the row's; the median over the rounds, their range in brackets. Accuracy: top-1 "
             f"on the 5,000 validation images; the guard allows at most {MAX_DROP} points below fp32."), "",
             "## Where the time goes (today's recipe, batch 256)", "", *_profile_table(doc["profile_today"])]
    lines += ["", "## What was tried", "",
              ("| variant | what changed | batch 256 img/s | × today | batch 1 p50 ms | × today | top-1 | Δ vs fp32 "
               "| agreement with fp32 | guard |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["variant"] for r in doc["rows"]):
        r256, r1 = by[(name, 256)], by[(name, 1)]
        lines.append(f"| {name} | {r256['what']} | {r256['throughput']:,.0f} | {_ratio(r256)} "
                     f"| {r1['p50_ms']:.3f} | {_ratio(r1)} | {r256['accuracy']:.2%} | "
                     f"{-r256['drop_points']:+.2f} pt | {r256['agreement']:.2%} | "
                     f"{'holds' if r256['drop_points'] <= MAX_DROP else 'fails'} |")
    lines += ["", "## Where the time goes with the new recipe (batch 256)", "", *_profile_table(doc["profile_new"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
