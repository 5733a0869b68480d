"""The local engine and the Ray engine side by side on the same folder: images/s, peak memory per
worker, top-1 agreement image for image, and the accuracy of `eval` on both.

    .venv/bin/python benchmarks/ray_scaling.py            # → benchmarks/results/ray-scaling.{md,json}
    .venv/bin/python benchmarks/ray_scaling.py --models models/cifar_cnn.onnx --out /tmp/ray-scaling

The folder is the validation split of data/cifar10-png/train (the last 500 PNGs of each class,
5,000 images), copied once into .cache/ray-scaling/val (git-ignored). Every run is a fresh process,
as a user runs it, timed from start to exit (`wall`, which holds Ray's cluster start and the actors'
model loading); the Ray rows also give the pipeline's own rate (`pipeline`: first batch asked to
last row written). Local peak memory is the process's maximum resident set; a Ray row's is the
largest of its model workers' (each one process holding one model). A Ray row runs the Python API
in a child process (toolkit.edge.scale.infer_to_folder), because the size of a local cluster is not
a command-line option: `cpus` is the logical CPUs the local cluster gets — above the machine's cores
it oversubscribes them, which the rows with more workers than fit show.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from toolkit.edge.bench.machine import machine_info, machine_lines
from toolkit.edge.data.datasets import list_split
from toolkit.edge.data.fsio import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "cifar10-png" / "train"
CACHE = ROOT / ".cache" / "ray-scaling"
MODELS = [ROOT / "models" / "cifar_cnn.onnx", ROOT / "models" / "cifar_resnet.onnx"]
# (workers, threads per worker, logical CPUs of the local cluster): one worker beside one decoding
# CPU (what fits on 2 cores), one worker of 2 threads, and two workers on 3 logical CPUs.
POOLS = [(1, 1, 2), (1, 2, 3), (2, 1, 3)]
TOOLKIT = [sys.executable, "-m", "toolkit"]

RAY_RUN = """
import json, sys
from toolkit.edge.scale import RayOptions, infer_to_folder
a = json.loads(sys.argv[1])
s = infer_to_folder([a["folder"]], a["out"], a["model"], options=RayOptions(cpus=a["cpus"], workers=a["workers"],
                    threads=a["threads"], batch_size=64))
print(json.dumps({"new": s.new, "errors": s.errors, "seconds": s.throughput.seconds,
                  "per_second": s.throughput.per_second, "worker_peak_mb": list(s.throughput.worker_peak_mb.values())}))
"""


def val_folder() -> Path:
    """The validation split, copied once into a class-per-folder tree of its own."""
    folder = CACHE / "val"
    if (folder / ".complete").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    listing = list_split(DATA, "val")
    for path in listing.files or []:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, folder / path.parent.name / path.name)
    (folder / ".complete").touch()
    return folder


def timed(cmd: list[str], stdout=subprocess.PIPE) -> tuple[float, float, str, int]:
    """Wall seconds, peak resident MB of the process, its stdout, its exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out, proc.returncode


def top1(rows: dict[str, list]) -> dict[str, str]:
    return {path: top[0]["label"] for path, top in rows.items() if top}


def measure_model(model: Path, folder: Path, work: Path) -> list[dict]:
    wall, peak, out, code = timed([*TOOLKIT, "infer", str(folder), "--model", str(model), "--json"])
    local = {row["path"]: row["top"] for row in map(json.loads, out.splitlines())}
    rows = [{"model": model.name, "engine": "local", "workers": 1, "threads": os.cpu_count(), "cpus": os.cpu_count(),
             "images": len(local), "wall_s": wall, "images_per_s": len(local) / wall, "peak_mb": peak,
             "load": os.getloadavg()[0], "exit": code}]
    from toolkit.edge.scale import read_results
    for workers, threads, cpus in POOLS:
        out_dir = work / f"{model.stem}-{workers}x{threads}-{cpus}"
        args = {"folder": str(folder), "out": str(out_dir), "model": str(model), "cpus": cpus, "workers": workers,
                "threads": threads}
        wall, _, out, code = timed([sys.executable, "-c", RAY_RUN, json.dumps(args)])
        summary = json.loads(out.strip().splitlines()[-1]) if code == 0 else {}
        got = {r["path"]: r["top"] for r in read_results(out_dir)} if code == 0 else {}
        same = sum(1 for path, label in top1(local).items() if top1(got).get(path) == label)
        rows.append({"model": model.name, "engine": "ray", "workers": workers, "threads": threads, "cpus": cpus,
                     "images": summary.get("new", 0), "wall_s": wall,
                     "images_per_s": summary.get("new", 0) / wall, "pipeline_per_s": summary.get("per_second", 0.0),
                     "peak_mb": max(summary.get("worker_peak_mb", [0.0])), "same_top1": same,
                     "probs_equal": sum(1 for p, top in local.items() if got.get(p) == top),
                     "local_images": len(local), "load": os.getloadavg()[0], "exit": code})
        rerun_wall, _, rerun_out, _ = timed([sys.executable, "-c", RAY_RUN, json.dumps(args)])
        rows[-1]["rerun_new"] = json.loads(rerun_out.strip().splitlines()[-1])["new"] if rerun_out.strip() else None
        rows[-1]["rerun_wall_s"] = rerun_wall
        print(json.dumps(rows[-1]), flush=True)
    return rows


def measure_eval(model: Path) -> dict:
    base = [*TOOLKIT, "eval", "--model", str(model), "--data", str(DATA), "--split", "val", "--json"]
    out = {}
    for engine in ("local", "ray"):
        wall, _peak, text, code = timed([*base, "--engine", engine])
        out[engine] = {"wall_s": wall, "exit": code, **(json.loads(text.splitlines()[0]) if code == 0 else {})}
    return {"model": model.name, **{f"{e}_{k}": v for e, r in out.items() for k, v in r.items() if k != "per_class"}}


def markdown(rows: list[dict], evals: list[dict], machine: dict) -> str:
    lines = ["# Local engine and Ray engine on one machine", "",
             (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `benchmarks/ray_scaling.py`; the validation split of "
             f"data/cifar10-png/train (5,000 32×32 PNGs) as one folder."), "",
             *[f"- {line}" for line in machine_lines(machine)], "",
             ("| model | engine | workers × threads | cluster CPUs | images | wall (s) | images/s (wall) | "
             "images/s (pipeline) | peak MB per worker | same top-1 as local | rerun: new images | load (1 min) |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        pipeline = f"{r['pipeline_per_s']:,.0f}" if "pipeline_per_s" in r else "–"
        same = f"{r['same_top1']:,} / {r['local_images']:,}" if "same_top1" in r else "–"
        lines.append(f"| {r['model']} | {r['engine']} | {r['workers']} × {r['threads']} | {r['cpus']} | "
                     f"{r['images']:,} | {r['wall_s']:.1f} | {r['images_per_s']:,.0f} | {pipeline} | "
                     f"{r['peak_mb']:,.0f} | {same} | {r.get('rerun_new', '–')} | {r['load']:.1f} |")
    lines += ["", ("Ratios (images/s against the local engine's, both from start to exit; pipeline: Ray's rate "
              "once its workers are up):"), ""]
    for name in dict.fromkeys(r["model"] for r in rows):
        local = next(r for r in rows if r["model"] == name and r["engine"] == "local")
        ray = {(r["workers"], r["threads"]): r for r in rows if r["model"] == name and r["engine"] == "ray"}
        parts = [f"{w} × {t}: {r['images_per_s'] / local['images_per_s']:.2f} (pipeline "
                 f"{r['pipeline_per_s'] / local['images_per_s']:.2f})" for (w, t), r in ray.items()]
        lines.append(f"- {name}: " + "; ".join(parts))
    lines += ["", "`eval --split val` on data/cifar10-png/train:", "",
              "| model | local accuracy | ray accuracy | local wall (s) | ray wall (s) |", "|---|---:|---:|---:|---:|"]
    for e in evals:
        lines.append(f"| {e['model']} | {e.get('local_accuracy', 0):.2%} | {e.get('ray_accuracy', 0):.2%} | "
                     f"{e['local_wall_s']:.1f} | {e['ray_wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, default=MODELS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ray-scaling")
    args = parser.parse_args()
    folder = val_folder()
    rows, evals = [], []
    with tempfile.TemporaryDirectory() as work:
        for model in args.models:
            rows += measure_model(model, folder, Path(work))
            evals.append(measure_eval(model))
            print(json.dumps(evals[-1]), flush=True)
    machine = machine_info()
    atomic_write_text(args.out.with_suffix(".json"), json.dumps({"rows": rows, "eval": evals, "machine": machine},
                                                                indent=1) + "\n")
    atomic_write_text(args.out.with_suffix(".md"), markdown(rows, evals, machine))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
