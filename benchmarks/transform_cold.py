"""How long `toolkit transform` takes with an empty cache: building, gating and caching the graph.

    .venv/bin/python benchmarks/transform_cold.py                    # 128, 512 and 2048 px
    .venv/bin/python benchmarks/transform_cold.py --sizes 128 --ops walsh-compress

Each row runs the `toolkit` command in a fresh process with TOOLKIT_CACHE pointing at an empty
folder, on one seeded random RGB image of the size (power-of-two sides, so that Walsh takes them),
then once more with that cache filled. The cold run builds the graph, checks it against the float64
numpy reference and caches it; the warm run only loads it. Wall-clock seconds of the whole command,
interpreter start included. Writes benchmarks/results/transform-cold.md; anything else running on
the machine shows in the numbers.

It also times the float64 Walsh reference that gates the graph, forward and inverse, against the
textbook double sum written as one three-operand `np.einsum` (which sums over both axes at once,
O(H²·W²) per channel), at the sizes up to 128 px where that finishes in a minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.edge.bench.machine import machine_info, machine_lines
from toolkit.edge.data.fsio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = Path(sys.executable).with_name("toolkit")
OPS = ("walsh-compress", "fft-lowpass", "fft-spectrum")
EINSUM_LIMIT = 128


def timed(command: list[str], cache: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env={"TOOLKIT_CACHE": str(cache), "PATH": str(TOOLKIT.parent)},
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return seconds


def measure(op: str, side: int, work: Path) -> tuple[float, float]:
    image = work / f"{side}.png"
    if not image.exists():
        pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image)
    cache = work / f"cache-{op}-{side}"
    command = [str(TOOLKIT), "transform", str(image), "--op", op, "--out", str(work / f"out-{op}-{side}.png")]
    return timed(command, cache), timed(command, cache)


def reference_seconds(side: int) -> tuple[float | None, float]:
    """Seconds of the Walsh reference round trip on one RGB image: as the einsum double sum (None
    above 128 px) and as toolkit's two matrix products."""
    from toolkit.edge.spectral.ops import reference_inverse_walsh, reference_walsh, sequency_hadamard

    x = np.random.default_rng(side).normal(size=(1, side, side, 3))
    start = time.perf_counter()
    reference_inverse_walsh(reference_walsh(x))
    products = time.perf_counter() - start
    if side > EINSUM_LIMIT:
        return None, products
    s = sequency_hadamard(side)
    start = time.perf_counter()
    np.einsum("ha,nhbc,bw->nawc", s, np.einsum("ha,nawc,bw->nhbc", s, x, s), s)
    return time.perf_counter() - start, products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "transform-cold.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for op in args.ops:
            for side in args.sizes:
                cold, warm = measure(op, side, Path(tmp))
                rows.append(f"| {op} | {side}×{side} | {cold:.1f} | {warm:.1f} |")
                print(rows[-1], flush=True)
    references = []
    for side in args.sizes if "walsh-compress" in args.ops else []:
        einsum, products = reference_seconds(side)
        references.append(f"| {side}×{side} | {f'{einsum:.2f}' if einsum is not None else '—'} | {products:.3f} |")
        print(references[-1], flush=True)
    lines = ["# `toolkit transform`, cold cache", "",
             "One image per run, default form (matmul) and parameters; seconds of wall clock for the whole",
             "command in a fresh process (`benchmarks/transform_cold.py`). Cold: empty TOOLKIT_CACHE, so the",
             "graph is built, gated against the float64 reference and cached; warm: the same command again.", "",
             *(f"- {line}" for line in machine_lines(machine_info())),
             f"- Load average at the end of the run: {', '.join(f'{v:.1f}' for v in os.getloadavg())}", "",
             "| op | image | cold s | warm s |", "|---|---|---:|---:|", *rows, ""]
    if references:
        lines += ["The float64 Walsh reference alone (forward and inverse, one RGB image, in this process), seconds:",
                  "", "| image | three-operand einsum | two matrix products |", "|---|---:|---:|", *references, ""]
    atomic_write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
