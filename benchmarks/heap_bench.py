"""What keeping freed host memory (toolkit/pytorch/heap.py) buys a training step on the CPU.

    .venv/bin/python benchmarks/heap_bench.py [--rounds 3] [--steps 8] [--batch 1024]

One training step of `toolkit train cifar-resnet` as its loop takes it (the zoo net in channels-last,
bf16 autocast, SGD-Nesterov, label-smoothed cross-entropy) on a random uint8 batch, in a fresh
process per measurement: glibc's default allocator settings, then the same inside
`retained_heap()`, alternating for --rounds rounds so that both see the same machine. Each process
warms up for 3 steps, then times --steps steps and counts the minor page faults they take.
Writes benchmarks/results/heap.md: the median seconds per step and faults per step of each, and
their ratio. Run it on a quiet machine: anything else running shows in the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from toolkit.edge.bench.machine import machine_info, machine_lines
from toolkit.edge.data.fsio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
STEP = """
import contextlib, json, resource, sys, time
import torch
import torch.nn.functional as F
import toolkit.zoo as zoo
from toolkit.pytorch.heap import retained_heap
from toolkit.pytorch.nets.layers import Classifier

retained, steps, batch = sys.argv[1] == "retained", int(sys.argv[2]), int(sys.argv[3])
spec = zoo.get("cifar-resnet")
torch.manual_seed(0)
model = Classifier(spec.build(), spec.mean, spec.std).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.85, nesterov=True)
x = torch.randint(0, 256, (batch, 32, 32, 3), dtype=torch.uint8)
y = torch.randint(0, 10, (batch,))

def step():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=0.2)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()

with retained_heap() if retained else contextlib.nullcontext():
    for _ in range(3):
        step()
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"s_per_step": seconds / steps, "faults_per_step": faults / steps}))
"""


def measure(variant: str, steps: int, batch: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", STEP, variant, str(steps), str(batch)], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{variant} run failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "heap.md"))
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"default": [], "retained": []}
    for r in range(args.rounds):
        for variant in runs:
            runs[variant].append(measure(variant, args.steps, args.batch))
            print(f"round {r + 1} {variant}: {runs[variant][-1]}", flush=True)
    median = {v: {k: statistics.median(m[k] for m in ms) for k in ("s_per_step", "faults_per_step")}
              for v, ms in runs.items()}
    ratio = median["default"]["s_per_step"] / median["retained"]["s_per_step"]
    lines = ["# Keeping freed host memory in a CPU training step (toolkit/pytorch/heap.py)", "",
             (f"`python benchmarks/heap_bench.py --rounds {args.rounds} --steps {args.steps} --batch {args.batch}`: "
             f"one `cifar-resnet` training step at batch {args.batch} (bf16 autocast, channels-last, "
             f"{args.rounds} interleaved rounds of a fresh process each, {args.steps} timed steps after 3 "
             "warm-up steps; medians over rounds)."), "",
             *(f"- {line}" for line in machine_lines(machine_info())), "",
             "| allocator | s / step | minor page faults / step | every round (s / step) |", "|---|---:|---:|---|"]
    for variant, m in median.items():
        name = "glibc defaults" if variant == "default" else "`retained_heap()` (what `toolkit train` uses)"
        each = " ".join(f"{x['s_per_step']:.3f}" for x in runs[variant])
        lines.append(f"| {name} | {m['s_per_step']:.3f} | {m['faults_per_step']:,.0f} | {each} |")
    lines += ["", f"Steps per second, retained ÷ defaults: **{ratio:.2f}×**."]
    atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
