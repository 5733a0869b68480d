"""How `infer`, `eval` and `transform` scale with the number of inputs: seconds per image at 1k,
10k and 100k tiny images, which must stay flat (a check done once per pair of paths would show
here as time per image growing with the folder).

    .venv/bin/python benchmarks/scaling.py                          # 1k and 10k → benchmarks/results/scaling.{md,json}
    .venv/bin/python benchmarks/scaling.py --sizes 1000 10000 100000   # and 100k (about half an hour on 2 cores)
    .venv/bin/python benchmarks/scaling.py --sizes 200 1000 --out /tmp/scaling   # a quick look

The images are 32×32 PNGs in a CIFAR-10-style class-per-folder tree (ten class folders, so the
same folder serves `infer FOLDER`, `eval --data FOLDER` and `transform FOLDER --out DIR`),
generated once into .cache/scaling/<n>/ (git-ignored) and reused. Each command runs as the user
runs it — the installed `toolkit` in a fresh process, its output sent to /dev/null — and is timed
from start to exit. A fixed cost (imports, opening the model, building the transform graph) is in
every run; it is measured on a folder of FIXED_IMAGES images and reported, and the marginal seconds
per image, (t(n) − t(fixed)) / (n − FIXED_IMAGES), is the number that must stay flat. The
transform graph is built once, before anything is timed, into a cache folder of the run's own.
Time on a shared machine moves with its load: the one-minute load average is recorded per run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.edge.bench.machine import machine_info, machine_lines
from toolkit.edge.data.datasets import CIFAR10_LABELS
from toolkit.edge.data.fsio import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "scaling"
MODEL = ROOT / "models" / "cifar_cnn.onnx"
FIXED_IMAGES = 10
SIZES = [1_000, 10_000]
COMMANDS = ("infer", "eval", "transform")


def image_tree(n: int) -> Path:
    """n 32×32 PNGs spread over the ten CIFAR-10 class folders, made once (a marker file records
    that the set is complete, so an interrupted generation is redone)."""
    root = CACHE / str(n)
    done = root / ".complete"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(n)
    ramp = np.linspace(0, 160, 32)[None, :, None]
    for i in range(n):
        label = CIFAR10_LABELS[i % len(CIFAR10_LABELS)]
        folder = root / label
        if i < len(CIFAR10_LABELS):
            folder.mkdir(parents=True)
        base = rng.integers(0, 96, 3)[None, None, :]
        pixels = np.clip(base + ramp + rng.integers(0, 32, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")
    done.write_text(f"{n}\n")
    return root


def toolkit_command() -> list[str]:
    script = Path(sys.executable).parent / "toolkit"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from toolkit.cli import main; main()"]


def command_line(command: str, data: Path, out: Path) -> list[str]:
    if command == "infer":
        return [*toolkit_command(), "infer", str(data), "--model", str(MODEL), "--json"]
    if command == "eval":
        return [*toolkit_command(), "eval", "--model", str(MODEL), "--data", str(data), "--split", "all", "--json"]
    return [*toolkit_command(), "transform", str(data), "--op", "fft-lowpass", "--out", str(out)]


def timed(command: str, data: Path, env: dict[str, str], n: int) -> dict:
    """One run of `command` on `data` (n images): wall seconds, the load average at the start, and
    for the commands that print a line per image (infer, transform) the seconds each tenth of the
    images took from the second tenth on, so that a slowdown within one run shows whatever the
    machine's load does."""
    out = CACHE / "out"
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    marks = [round(n * k / 10) for k in range(1, 11)]
    stamps: list[float] = []
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        with subprocess.Popen(command_line(command, data, out), env=env, stdout=subprocess.PIPE, stderr=errors,
                              text=True) as process:
            assert process.stdout is not None
            for lines, _ in enumerate(process.stdout, 1):
                if len(stamps) < len(marks) and lines == marks[len(stamps)]:
                    stamps.append(time.perf_counter() - start)
        seconds = time.perf_counter() - start
        errors.seek(0)
        message = errors.read().strip()[-500:]
    shutil.rmtree(out, ignore_errors=True)
    if process.returncode != 0:
        sys.exit(f"error: {command} on {data} exited {process.returncode}: {message}")
    # From the second tenth on: the first holds the start-up too.
    tenths = [b - a for a, b in itertools.pairwise(stamps)] if len(stamps) == len(marks) else []
    return {"seconds": seconds, "load": load, "tenth_seconds": tenths}


def measure(sizes: list[int], repeats: int, log) -> list[dict]:
    env = {**os.environ, "TOOLKIT_CACHE": str(CACHE / "toolkit-cache")}
    fixed_tree = image_tree(FIXED_IMAGES)
    timed("transform", fixed_tree, env, FIXED_IMAGES)         # builds and caches the graph, untimed
    trees = {n: image_tree(n) for n in sizes}
    rows = []
    for command in COMMANDS:
        fixed = min(timed(command, fixed_tree, env, FIXED_IMAGES)["seconds"] for _ in range(repeats))
        for n in sizes:
            runs = [timed(command, trees[n], env, n) for _ in range(repeats)]
            best = min(runs, key=lambda r: r["seconds"])
            row = {"command": command, "images": n, "seconds": best["seconds"], "fixed_seconds": fixed,
                   "s_per_image": best["seconds"] / n,
                   "marginal_s_per_image": (best["seconds"] - fixed) / (n - FIXED_IMAGES),
                   "load": best["load"], "runs": [r["seconds"] for r in runs],
                   "tenth_seconds": best["tenth_seconds"]}
            rows.append(row)
            log(f"{command:9s} {n:>7,} images: {row['seconds']:8.2f} s, {row['marginal_s_per_image'] * 1e3:.3f} ms "
                f"per image beyond the fixed {fixed:.2f} s (load {row['load']:.2f})")
    return rows


def flatness(rows: list[dict], command: str) -> float:
    """Marginal time per image at the largest size over that at the smallest (1.0: flat)."""
    mine = sorted((r for r in rows if r["command"] == command), key=lambda r: r["images"])
    return mine[-1]["marginal_s_per_image"] / mine[0]["marginal_s_per_image"]


def report(doc: dict) -> str:
    sizes = sorted({r["images"] for r in doc["rows"]})
    intro = (f"`benchmarks/scaling.py --sizes {' '.join(map(str, sizes))}`, {doc['date']}. Each command runs as "
             f"a user runs it (a fresh `toolkit` process, output to /dev/null) on a class-per-folder tree of "
             f"32×32 PNGs. The fixed cost (start-up, opening the model) is measured on {FIXED_IMAGES} images; "
             f"*marginal* is (t(n) − t(fixed)) / (n − {FIXED_IMAGES}), the number that must stay flat.")
    lines = ["# Scaling with the number of inputs", "", intro, "",
             f"Machine `{doc['machine']['slug']}`:", "", *[f"- {line}" for line in machine_lines(doc["machine"])], "",
             "| command | images | total (s) | fixed (s) | ms per image | marginal ms per image | load (1 min) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        lines.append(f"| {r['command']} | {r['images']:,} | {r['seconds']:.2f} | {r['fixed_seconds']:.2f} | "
                     f"{r['s_per_image'] * 1e3:.3f} | {r['marginal_s_per_image'] * 1e3:.3f} | {r['load']:.2f} |")
    ratio = (f"Marginal time per image at {sizes[-1]:,} over that at {sizes[0]:,} images "
             "(1.00 = flat; the machine's load moves it by some percent either way):")
    lines += ["", ratio, ""]
    lines += [f"- {command}: {flatness(doc['rows'], command):.2f}" for command in COMMANDS]
    within = [r for r in doc["rows"] if r.get("tenth_seconds") and r["images"] == sizes[-1]]
    if within:
        lines += ["", (f"Within the {sizes[-1]:,}-image runs, ms per image in each tenth of the images from the "
                       "second on (the first holds the start-up); a check growing with the folder would make "
                       "each tenth slower than the one before:"), ""]
        for r in within:
            per_image = [t / (r["images"] / 10) * 1e3 for t in r["tenth_seconds"]]
            lines.append(f"- {r['command']}: {' '.join(f'{v:.2f}' for v in per_image)}")
    if sizes[-1] < 100_000:
        lines += ["", ("100k images: `--sizes 1000 10000 100000` (at the marginal times above, about half an "
                       "hour here, most of it transform).")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES,
                        help=f"folder sizes to run (default {' '.join(map(str, SIZES))}; add 100000 for 100k)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per command and size; the fastest counts")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    parser.add_argument("--report-only", action="store_true", help="rewrite scaling.md from --out's scaling.json")
    args = parser.parse_args()
    if args.report_only:
        doc = json.loads((args.out / "scaling.json").read_text(encoding="utf-8"))
        atomic_write_text(args.out / "scaling.md", report(doc))
        return
    if min(args.sizes) <= FIXED_IMAGES or args.repeats < 1:
        sys.exit(f"error: sizes must be over {FIXED_IMAGES} images and --repeats at least 1")
    if not MODEL.is_file():
        sys.exit(f"error: {MODEL} is missing; run `make models` first")
    sizes = sorted(set(args.sizes))
    rows = measure(sizes, args.repeats, log=lambda line: print(line, flush=True))
    doc = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_info(),
           "fixed_images": FIXED_IMAGES, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "scaling.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(args.out / "scaling.md", report(doc))
    print(f"wrote {args.out / 'scaling.md'} and {args.out / 'scaling.json'}")


if __name__ == "__main__":
    main()
