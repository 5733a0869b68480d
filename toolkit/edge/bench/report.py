"""Reports of a benchmark document: the table (terminal and markdown), the latency and throughput
plots, the JSON files, and the comparison with an earlier run."""

from __future__ import annotations

import json
import os
from pathlib import Path

from toolkit.edge.bench.inputs import BUFFER_BYTES, MAX_BUFFERS, MIN_BUFFERS, BenchError
from toolkit.edge.bench.machine import machine_lines
from toolkit.edge.bench.roof import compute_kind, roof_lines
from toolkit.edge.data.fsio import atomic_write
from toolkit.edge.runtime.registry import provider_is_cpu_side

# What identifies a row: rows of two runs that agree on these are compared (--compare).
ROW_KEY = ("model", "precision", "provider", "backend", "batch_size", "compute", "schedule")
TABLE_COLUMNS = ("model", "precision", "runtime", "batch", "p50 ms", "p90 ms", "p99 ms", "img/s", "vs torch",
                 "vs fp32", "ISA roof", "GEMM roof", "accuracy", "size MB", "session s", "runs")


THROUGHPUT_NOTE = ("img/s: batch size ÷ the mean time per batch over the counted runs, what a loop of these runs "
                   "delivers (not batch ÷ p50).")
LEGEND = ("Latency is per batch. `vs torch`: PyTorch eager fp32 p50 / this row's p50 (same net, batch and "
          "threads). `vs fp32`: this row's throughput / the fp32 row of the same runtime. `ISA roof`, `GEMM roof`: "
          "this row's multiply-adds per second as a share of the issue roof and of the runtime's own best GEMM "
          "(see above). A precision in brackets is what OpenVINO was asked to compute in. `runs`: warm-up + counted.")
OPENVINO_NOTE = ("- OpenVINO computes float files in f32 unless a row says bf16 (its CPU default would be bf16); its "
                 "session time is the compile time (a cached compile is marked `openvino_cache: hit` in the JSON).")
GPU_NOTE = ("- GPU rows use IO binding (inputs and outputs stay on the device) unless `io_binding` is false in the "
            "JSON (`--include-copy`). TensorRT rows: one engine per batch size, built for exactly that shape (an "
            "explicit optimisation profile) and cached by model, GPU, TensorRT library and onnxruntime version; "
            "`engine_build_s` (session creation plus first run, where the engine is built or loaded, `engine_cache`) "
            "is never in the timed runs, and at least one warm-up run follows it. fp16 files are built with fp16 "
            "kernels allowed (`trt_fp16_enable`; TensorRT 10 builds weakly typed networks); int8 files are Q/DQ "
            "graphs whose scales TensorRT takes as they are.")
SCHEDULE_NOTE = ("- A runtime named with a schedule (`2 streams × 32`) ran each batch as micro-batches of that size "
                 "on that many concurrent streams, the threads shared out among them (onnxruntime: one session run "
                 "from that many threads; OpenVINO: its THROUGHPUT hint with exactly that many streams); the "
                 "latency is still the whole batch's, its outputs those of one call. Without one: one call per "
                 "batch. OpenVINO runs each input shape on a compile made for exactly that shape.")
PARTIAL_NOTE = ("- `*` after the runtime: not every compute node (Conv, Gemm, MatMul, …) of that row ran on its "
                "provider; `compute_elsewhere` in the JSON and the node placement above say which ran where "
                "(`--strict-placement` refuses such rows).")


# ----------------------------------------------------------------------------- comparing runs

def load_result(path: str | os.PathLike) -> dict:
    """An earlier `--json` / `--out` document, checked just enough to compare against."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise BenchError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise BenchError(f"{path}: not a benchmark result (no 'rows' list)")
    return doc


def compare_rows(new: dict, old: dict) -> list[dict]:
    """Per new row: old and new p50 and throughput, `speedup` = old p50 / new p50 (> 1: faster now)
    and `throughput_ratio` = new / old; None where the old run has no matching row."""
    old_rows = {tuple(r.get(k) for k in ROW_KEY): r for r in old["rows"]}
    result = []
    for row in new["rows"]:
        before = old_rows.get(tuple(row.get(k) for k in ROW_KEY))
        result.append({**{k: row.get(k) for k in ROW_KEY},
                       "old_p50_ms": before["p50_ms"] if before else None, "new_p50_ms": row["p50_ms"],
                       "speedup": before["p50_ms"] / row["p50_ms"] if before else None,
                       "throughput_ratio": row["throughput"] / before["throughput"] if before else None})
    return result


# ----------------------------------------------------------------------------- the table

def runtime_label(row: dict) -> str:
    """`onnxruntime cuda`, `openvino, 2 streams × 32`, …; `*` marks a row whose compute nodes did not
    all run on its provider."""
    label = f"onnxruntime {row['provider']}" if row["backend"] == "onnxruntime" else row["backend"]
    label += f", {row['schedule']}" if row.get("schedule") else ""
    return label + " *" if row.get("placement_ok") is False else label


def precision_label(row: dict) -> str:
    return f"{row['precision']} ({row['compute']})" if row.get("compute") else row["precision"]


def _fp32_reference(rows: list[dict], row: dict) -> dict | None:
    """The fp32 row this row's throughput is compared with: same runtime, provider, schedule and
    batch, computing in f32; for a PyTorch row, onnxruntime's plain one."""
    runtime = "onnxruntime" if row["backend"] == "torch" else row["backend"]
    return next((r for r in rows if r["model"] == row["model"] and r["batch_size"] == row["batch_size"]
                 and r["backend"] == runtime and r["provider"] == row["provider"] and r["precision"] == "fp32"
                 and not r.get("compute") and r.get("schedule") == row.get("schedule")), None)


def _percent(share: float | None) -> str:
    return f"{share:.0%}" if share is not None else ""


def table_cells(doc: dict) -> list[list[str]]:
    """The report table as strings, one list per row in TABLE_COLUMNS order. `vs torch` is the
    PyTorch eager row's p50 over this row's (latency speed-up at the same batch size); `vs fp32` is
    this row's throughput over the fp32 row of the same runtime and batch size."""
    rows = doc["rows"]
    cells = []
    for r in rows:
        torch_row = next((t for t in rows if t["backend"] == "torch" and t["model"] == r["model"]
                          and t["batch_size"] == r["batch_size"]), None)
        fp32_row = _fp32_reference(rows, r)
        cells.append([
            r["model"], precision_label(r), runtime_label(r), str(r["batch_size"]),
            f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}", f"{r['throughput']:,.0f}",
            f"{torch_row['p50_ms'] / r['p50_ms']:.2f}×" if torch_row and r is not torch_row else "",
            f"{r['throughput'] / fp32_row['throughput']:.2f}×" if fp32_row and r is not fp32_row else "",
            _percent(r.get("isa_roof_share")), _percent(r.get("gemm_roof_share")),
            f"{r['accuracy']:.2%}" if r.get("accuracy") is not None else "",
            f"{r['file_size_bytes'] / 1e6:.2f}" if r.get("file_size_bytes") else "",
            f"{r['session_create_s']:.3f}", f"{r['warmup_runs']}+{r['runs']}",
        ])
    return cells


def placement_lines(doc: dict) -> list[str]:
    """Per model, precision and runtime: nodes per provider (those inside a TensorRT subgraph counted
    one by one), the compute nodes that ran elsewhere, and TensorRT engine build times per batch."""
    seen: dict = {}
    for r in doc["rows"]:
        if r.get("placement"):
            seen.setdefault((r["model"], precision_label(r), runtime_label(r)), []).append(r)
    lines = []
    for (m, p, runtime), rows in seen.items():
        first = rows[0]
        subgraphs = first.get("placement_subgraphs") or {}
        text = f"{m} {p} on {runtime}: " + ", ".join(
            f"{k} {n} nodes"
            + (f" in {subgraphs[k]} subgraph{'s' if subgraphs[k] > 1 else ''}" if k in subgraphs else "")
            for k, n in first["placement"].items())
        if first.get("compute_elsewhere"):
            text += "; compute nodes elsewhere: " + ", ".join(first["compute_elsewhere"])
        builds = [f"batch {r['batch_size']} {r['engine_build_s']:.1f} s ({r.get('engine_cache') or 'no cache'})"
                  for r in rows if r.get("engine_build_s") is not None]
        lines.append(text + ("; engine build " + ", ".join(builds) if builds else ""))
    return lines


def roof_table(doc: dict) -> list[str]:
    """Per model, precision and runtime, the largest-batch row against both roofs, in img/s."""
    best: dict = {}
    for r in doc["rows"]:
        if r.get("isa_roof_share") is None and r.get("gemm_roof_share") is None:
            continue
        key = (r["model"], precision_label(r), runtime_label(r))
        if key not in best or r["batch_size"] > best[key]["batch_size"]:
            best[key] = r
    if not best:
        return []
    lines = [("| model | precision | runtime | batch | img/s | G multiply-adds/s | ISA roof img/s | share | "
              "GEMM roof img/s | share |"), "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, precision, runtime), r in best.items():
        throughput = r["throughput"]
        isa, gemm = r.get("isa_roof_share"), r.get("gemm_roof_share")
        roofs = [f"{throughput / share:,.0f} | {share:.0%}" if share else "— | —" for share in (isa, gemm)]
        lines.append(f"| {model} | {precision} | {runtime} | {r['batch_size']} | {throughput:,.0f} | "
                     f"{throughput * r['multiply_adds_per_item'] / 1e9:,.0f} | {roofs[0]} | {roofs[1]} |")
    return lines


def _row(rows: list[dict], model: str, batch: int, precision: str, backend: str, best: bool = False) -> dict | None:
    """The plain row (no schedule) of a model, batch, precision and runtime computing in its own
    precision; with `best`, the fastest of that runtime's rows whatever their schedule."""
    found = [r for r in rows if (r["model"], r["batch_size"], r["precision"], r["backend"]) ==
             (model, batch, precision, backend) and not r.get("compute") and (best or not r.get("schedule"))]
    return max(found, key=lambda r: r["throughput"]) if found else None


def summary_lines(doc: dict) -> list[str]:
    """Per model with int8 rows, one sentence: batch-1 latency and largest-batch throughput of the
    best int8 runtime (and schedule) against fp32 and PyTorch, and its share of the measured int8 roof."""
    rows, lines = doc["rows"], []
    for model in dict.fromkeys(r["model"] for r in rows if r["precision"] == "int8"
                               and provider_is_cpu_side(r["provider"])):
        int8 = [r for r in rows
                if r["model"] == model and r["precision"] == "int8" and provider_is_cpu_side(r["provider"])]
        small, large = min(r["batch_size"] for r in int8), max(r["batch_size"] for r in int8)
        fastest = min((r for r in int8 if r["batch_size"] == small), key=lambda r: r["p50_ms"])
        best = max((r for r in int8 if r["batch_size"] == large), key=lambda r: r["throughput"])
        ort_int8 = _row(rows, model, large, "int8", "onnxruntime", best=True)
        ort_fp32 = _row(rows, model, large, "fp32", "onnxruntime", best=True)
        eager = _row(rows, model, small, "fp32", "torch")
        fp32_small = _row(rows, model, small, "fp32", "onnxruntime")
        text = f"{model}: int8 at batch {small} p50 {fastest['p50_ms']:.3f} ms ({runtime_label(fastest)})"
        if fp32_small:
            text += f", fp32 {fp32_small['p50_ms']:.3f} ms (onnxruntime)"
        if eager:
            text += f", PyTorch eager {eager['p50_ms']:.3f} ms"
        text += f"; at batch {large} {best['throughput']:,.0f} img/s ({runtime_label(best)})"
        if best.get("isa_roof_share"):
            text += f", {best['isa_roof_share']:.0%} of the measured int8 roof"
        for name, row in (("int8", ort_int8), ("fp32", ort_fp32)):
            if row and row is not best:
                text += f"; onnxruntime {name} {row['throughput']:,.0f} img/s"
                text += f" ({row['schedule']})" if row.get("schedule") else ""
        lines.append(text + ".")
    return lines


def markdown_report(doc: dict) -> str:
    rows, machine, roof = doc["rows"], doc["machine"], doc.get("roof")
    lines = [f"# Benchmark: {machine['slug']}", "",
             f"Measured {doc.get('created', '')} with `{doc.get('command', 'toolkit bench')}`.", "",
             "## Machine", ""] + [f"- {line}" for line in machine_lines(machine)]
    summary = summary_lines(doc)
    if summary:
        lines += ["", "## Summary", ""] + [f"- {line}" for line in summary]
    if roof:
        lines += ["", "## The measured roof", "", *roof_lines(roof)]
    lines += ["", "## Results", "", "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_cells(doc)]
    lines += ["", LEGEND, "", THROUGHPUT_NOTE]
    distance = roof_table(doc)
    if distance:
        lines += ["", "## Distance from the roof (largest batch)", "", *distance]
    lines += ["", "## Node placement", ""]
    lines += [f"- {line}" for line in placement_lines(doc)] or ["- (no ONNX rows)"]
    first = rows[0] if rows else {}
    sources = sorted({r["input"] for r in rows})
    rounds = first.get("rounds", 1)
    order = (f"interleaved in {rounds} rounds (each round gives every row its slice in turn, so load changes "
             "hit all rows alike)" if rounds > 1 else "one row after another")
    lines += ["", "## How it was measured", "",
              (f"- Threads: {first.get('threads')} for every runtime (onnxruntime intra-op, OpenVINO's "
               "INFERENCE_NUM_THREADS with the LATENCY hint, torch); warm-up runs excluded; every counted run timed "
               "with `time.perf_counter` (per-run timings in `<machine>.runs.json`, not committed). Rows measured "
               f"{order}."),
              (f"- Inputs: {'; '.join(sources)}, drawn into a rotating set of distinct buffers (enough to span "
               f"{BUFFER_BYTES >> 20} MiB, within {MIN_BUFFERS}–{MAX_BUFFERS} buffers) so a run does not find its "
               "input in cache."),
              "- Throughput = batch size / mean latency. Accuracy: top-1 on the validation part of `--data`.",
              OPENVINO_NOTE]
    if any(r.get("schedule") for r in rows):
        lines += [SCHEDULE_NOTE]
    if any(not provider_is_cpu_side(r["provider"]) for r in rows):
        lines += [GPU_NOTE]
    if any(r.get("placement_ok") is False for r in rows):
        lines += [PARTIAL_NOTE]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the plot

def _roof_images_per_s(doc: dict, model: str) -> dict[str, float]:
    """The ISA roof in img/s for a model, per precision the rows compute in."""
    isa = (doc.get("roof") or {}).get("isa") or {}
    macs = next((r["multiply_adds_per_item"] for r in doc["rows"] if r["model"] == model
                 and r.get("multiply_adds_per_item")), None)
    kinds = {compute_kind(r) for r in doc["rows"] if r["model"] == model and provider_is_cpu_side(r["provider"])}
    return {kind: isa[kind]["macs_per_s"] / macs for kind in sorted(kinds) if macs and kind in isa}


def plot_report(doc: dict, path: str | os.PathLike) -> Path:
    """Per model: p50 latency vs batch size (log-log) beside throughput vs batch size, one line per
    precision × runtime, with the ISA roof in img/s as dashed lines."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("writing the PNG plot needs matplotlib (a dev dependency: pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in doc["rows"])) or [""]
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.6 * len(models)), squeeze=False)
    for (latency_ax, throughput_ax), model in zip(axes, models):
        series: dict[str, list] = {}
        for r in doc["rows"]:
            if r["model"] == model:
                label = f"{precision_label(r)} {runtime_label(r)}"
                series.setdefault(label, []).append((r["batch_size"], r["p50_ms"], r["throughput"]))
        for label, points in series.items():
            points.sort()
            batches, p50, throughput = zip(*points)
            line, = latency_ax.plot(batches, p50, marker="o", label=label)
            throughput_ax.plot(batches, throughput, marker="o", label=label, color=line.get_color())
        for kind, images in _roof_images_per_s(doc, model).items():
            throughput_ax.axhline(images, linestyle="--", linewidth=1, color="grey")
            throughput_ax.annotate(f"{kind} ISA roof {images:,.0f}", (0.01, images), xycoords=("axes fraction", "data"),
                                   fontsize=7, color="dimgrey", va="bottom")
        ticks = sorted({b for points in series.values() for b, _, _ in points})
        for ax, ylabel, log_y in ((latency_ax, "p50 latency per batch (ms)", True),
                                  (throughput_ax, "throughput (images/s)", False)):
            ax.set_xscale("log", base=2)
            if log_y:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
            ax.set_xticks(ticks, [str(b) for b in ticks])
            ax.minorticks_off()
            ax.set_xlabel("batch size")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model}: {'latency' if log_y else 'throughput'}")
            ax.grid(True, which="both", alpha=0.3)
        latency_ax.legend(fontsize=7)
    fig.suptitle(doc["machine"]["slug"])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, format="png")   # the path may be a temp name
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- files and terminal

def result_json(doc: dict, timings: bool = True) -> str:
    """The document as JSON with one row per line: readable and diffable. Without `timings` the
    per-run timings are left out (the summary that gets committed)."""
    parts = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items() if k != "rows"]
    rows = ",\n".join(f"  {json.dumps(row if timings else {k: v for k, v in row.items() if k != 'timings_ms'})}"
                      for row in doc["rows"])
    return "{\n" + ",\n".join(parts) + f',\n "rows": [\n{rows}\n ]\n}}\n'


def write_reports(doc: dict, out_dir: str | os.PathLike, stem: str | None = None) -> list[Path]:
    """<stem>.json (summary), <stem>.runs.json (with every run's time), <stem>.md and <stem>.png
    in `out_dir` (stem: the machine slug), each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or doc["machine"]["slug"]
    written = []
    for suffix, write in ((".json", lambda p: p.write_text(result_json(doc, timings=False))),
                          (".runs.json", lambda p: p.write_text(result_json(doc))),
                          (".md", lambda p: p.write_text(markdown_report(doc))),
                          (".png", lambda p: plot_report(doc, p))):
        written.append(atomic_write(out_dir / f"{stem}{suffix}", write))
    return written


def print_table(doc: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"toolkit bench — {doc['machine']['slug']}", title_justify="left")
    for i, name in enumerate(TABLE_COLUMNS):
        table.add_column(name, justify="left" if i < 3 else "right")
    for cells in table_cells(doc):
        table.add_row(*cells)
    console.print(table)
    console.print(THROUGHPUT_NOTE, highlight=False)
    if any(r.get("placement_ok") is False for r in doc["rows"]):
        console.print(PARTIAL_NOTE.removeprefix("- ").replace("`", ""), highlight=False)
    for line in machine_lines(doc["machine"]):
        console.print(line, highlight=False)
    if doc.get("roof"):
        for line in roof_lines(doc["roof"])[:-1]:
            console.print(line.removeprefix("- ").replace("**", ""), highlight=False)


def print_comparison(comparison: list[dict], old: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"against {old.get('machine', {}).get('slug', 'the earlier run')} "
                        f"({old.get('created', 'date unknown')})", title_justify="left")
    for i, name in enumerate(("model", "precision", "runtime", "batch", "old p50 ms", "new p50 ms", "speed-up",
                              "throughput ratio")):
        table.add_column(name, justify="left" if i < 3 else "right")
    for c in comparison:
        found = c["speedup"] is not None
        table.add_row(c["model"], precision_label(c), runtime_label(c), str(c["batch_size"]),
                      f"{c['old_p50_ms']:.3f}" if found else "—", f"{c['new_p50_ms']:.3f}",
                      f"{c['speedup']:.2f}×" if found else "new row",
                      f"{c['throughput_ratio']:.2f}×" if found else "")
    console.print(table)
