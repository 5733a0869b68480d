"""Does the FFT low-pass earn its place? Robustness of the shipped classifier, and transform cost.

    make data                                    # extracts data/cifar10-png/train
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robustness.py
    .venv/bin/python benchmarks/robustness.py --per-class 50 --out /tmp/robustness   # a quick look

1. Accuracy of `models/cifar_cnn.onnx` on the validation images (the fixed split: in each class
   folder, sorted by name, the last 10% — 4500.jpg … 4999.jpg, 5,000 images) under
   - additive Gaussian noise, σ = 0, 0.05, 0.1, 0.2 of full scale (rounded and clipped to uint8),
   - JPEG re-compression at a few qualities,
   each classified as is and after a transform in front: fft-lowpass at a few radii and
   walsh-compress. The transform runs as its own ONNX graph (matmul form, 32×32) before the
   classifier; `toolkit export --model cifar-cnn --preprocess …` fuses the very same module, so
   the numbers hold for the fused file too. The classifier was trained on unfiltered images;
   `--classifier LABEL=PATH` adds columns for other classifiers run as they are, e.g. one
   fine-tuned on filtered images with the filter fused in front.
2. CPU latency of both forms of every transform op at batch 1 and 256, the classifier alongside.

Writes benchmarks/results/robustness.md and robustness.png. About 4 minutes on the 2-core dev
machine; anything else running on it shows in the latency table.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.edge import bench
from toolkit.edge.bench.machine import machine_lines
from toolkit.edge.data.datasets import class_folder_files, split_indices
from toolkit.edge.data.fsio import atomic_write, atomic_write_text
from toolkit.edge.data.images import load_image, resize
from toolkit.edge.runtime import open_model
from toolkit.edge.spectral import transforms

ROOT = Path(__file__).resolve().parent.parent
SEED = 0


# ----------------------------------------------------------------------------- data and corruptions

def validation_images(root: Path, per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The fixed validation split, decoded: only those files are read, not the whole tree."""
    files, labels, _ = class_folder_files(root)
    _, val = split_indices(labels)
    if per_class:
        val = np.concatenate([val[labels[val] == c][:per_class] for c in np.unique(labels)])
    images = np.stack([resize(load_image(files[i]), 32, 32) for i in val])
    return images, labels[val]


def gaussian_noise(images: np.ndarray, sigma: float) -> np.ndarray:
    """Add N(0, σ·255) per pixel and channel, round and clip back to uint8."""
    if sigma == 0:
        return images
    noise = np.random.default_rng(SEED).normal(0.0, sigma * 255.0, images.shape)
    return np.clip(np.round(images + noise), 0, 255).astype(np.uint8)


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Encode every image as JPEG at `quality` (4:2:0, Pillow's default) and decode it again."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


# ----------------------------------------------------------------------------- accuracy

def run_batched(model, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    return np.concatenate([model.run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def accuracy_grid(pipelines: dict, corruptions: dict, labels: np.ndarray, log) -> dict:
    """{corruption: {column: accuracy}}; each pipeline is a list of ONNX models run in turn."""
    grid: dict[str, dict[str, float]] = {}
    for corruption, images in corruptions.items():
        grid[corruption] = {}
        for name, models in pipelines.items():
            outputs = images
            for model in models:
                outputs = run_batched(model, outputs)
            grid[corruption][name] = float(np.mean(outputs.argmax(1) == labels))
        log(f"  {corruption:>14}: " + "  ".join(f"{n} {a:.2%}" for n, a in grid[corruption].items()))
    return grid


# ----------------------------------------------------------------------------- latency

def latency_rows(classifier_path: Path, images: np.ndarray, threads: int, seconds: float, log) -> list[dict]:
    """p50 latency of each op and form on CPU at batch 1 and 256, and of the classifier."""
    cases = [("fft-lowpass", {"radius": 0.5}, "dft"), ("fft-lowpass", {"radius": 0.5}, "matmul"),
             ("fft-spectrum", {}, "dft"), ("fft-spectrum", {}, "matmul"),
             ("walsh-compress", {"keep": 0.5}, "matmul")]
    models = [(transforms.describe(op, params), form, transforms.cached_transform(op, params, form, (32, 32)))
              for op, params, form in cases]
    models.append(("cifar-cnn classifier (reference)", "", classifier_path))
    rows = []
    for name, form, path in models:
        model = open_model(path, "cpu", threads=threads)
        for batch_size in (1, 256):
            batches = [images[i * batch_size % len(images):][:batch_size] for i in range(4)]
            batches = [b for b in batches if len(b) == batch_size] or [images[:batch_size]]

            def call(i: int, model=model, batches=batches) -> object:
                return model.run(batches[i % len(batches)])

            timings = bench.time_runs(call, warmup=5, seconds=seconds)
            stats = bench.latency_stats(timings, batch_size)
            rows.append({"op": name, "form": form, "batch": batch_size, **stats})
            log(f"  {name} {form} batch {batch_size}: p50 {stats['p50_ms']:.3f} ms")
    return rows


# ----------------------------------------------------------------------------- report

def markdown(args, grid: dict, latency: list[dict], n_images: int, wall_s: float) -> str:
    columns = list(grid["clean"])
    clean = grid["clean"]
    lines = [
        "# Does the FFT low-pass earn its place?",
        "",
        (f"Made by `benchmarks/robustness.py` ({wall_s / 60:.1f} min). Classifier `{args.model.name}` "
         f"({clean['none']:.2%} on clean validation images), trained on unfiltered images. {n_images:,} validation "
         "images (fixed split). Noise: additive Gaussian, σ in units of full scale, seed 0. JPEG: Pillow, 4:2:0. "
         "Transforms run as their own ONNX graph (matmul form, 32×32) in front of the classifier."),
        "",
        *[f"- {line}" for line in machine_lines(bench.machine_info())],
        f"- Load average when the report was written: {os.getloadavg()[0]:.2f} (other jobs slow the latency rows)",
        "",
        "## Top-1 accuracy",
        "",
        "| input | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for corruption, row in grid.items():
        best = max(row.values())
        cells = [f"**{a:.2%}**" if a == best else f"{a:.2%}" for a in row.values()]
        lines.append(f"| {corruption} | " + " | ".join(cells) + " |")
    lines += ["", "Change against the unfiltered classifier, in points:", "",
              "| input | " + " | ".join(columns[1:]) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for corruption, row in grid.items():
        changes = [f"{100 * (a - row['none']):+.1f}" for a in list(row.values())[1:]]
        lines.append(f"| {corruption} | " + " | ".join(changes) + " |")
    lines += ["", (f"## CPU latency (onnxruntime, {args.threads} thread{'s' if args.threads > 1 else ''}, "
                   "p50, 32×32 images)"), "",
              "| op | form | batch 1 (ms) | batch 256 (ms) | batch 256 (µs/image) |", "|---|---|---:|---:|---:|"]
    for i in range(0, len(latency), 2):
        one, many = latency[i], latency[i + 1]
        lines.append(f"| {one['op']} | {one['form']} | {one['p50_ms']:.3f} | {many['p50_ms']:.2f} | "
                     f"{1e3 * many['p50_ms'] / 256:.1f} |")
    lines += ["", ("The fft-spectrum dft form runs its DFT in float64 (onnxruntime's float32 DFT is not "
                   "accurate enough at sizes that are not powers of two); the matmul forms contain no DFT node and "
                   "run on every provider."), ""]
    return "\n".join(lines)


def plot(grid: dict, sigmas: list[float], qualities: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = list(grid["clean"])
    fig, (noise_ax, jpeg_ax) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for name in columns:
        style = {"color": "black", "linewidth": 2.5} if name == "none" else {}
        noise_ax.plot(sigmas, [100 * grid[noise_name(s)][name] for s in sigmas], marker="o", label=name, **style)
        xs = ["clean"] + [f"q{q}" for q in qualities]
        jpeg_ax.plot(xs, [100 * grid["clean"][name]] + [100 * grid[f"jpeg q{q}"][name] for q in qualities],
                     marker="o", label=name, **style)
    noise_ax.set(xlabel="Gaussian noise σ (fraction of full scale)", ylabel="top-1 accuracy (%)",
                 title="additive noise")
    jpeg_ax.set(xlabel="JPEG re-compression quality", title="JPEG re-compression")
    for ax in (noise_ax, jpeg_ax):
        ax.grid(alpha=0.3)
    jpeg_ax.legend(fontsize=8)
    fig.suptitle("CIFAR-10 CNN on validation images, with and without a spectral filter in front")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def log(message: str) -> None:
    print(message, flush=True)


def noise_name(sigma: float) -> str:
    return "clean" if sigma == 0 else f"noise σ={sigma:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "cifar_cnn.onnx", help="ONNX classifier")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "cifar10-png" / "train",
                        help="class-per-folder tree; its fixed validation split is used")
    parser.add_argument("--per-class", type=int, default=None, help="only the first N validation images per class")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2], help="noise levels")
    parser.add_argument("--qualities", type=int, nargs="+", default=[50, 25, 10], help="JPEG qualities")
    parser.add_argument("--radii", type=float, nargs="+", default=[0.9, 0.75, 0.5, 0.35], help="low-pass radii")
    parser.add_argument("--keeps", type=float, nargs="+", default=[0.5], help="walsh-compress fractions")
    parser.add_argument("--classifier", action="append", default=[], metavar="LABEL=PATH",
                        help="another ONNX classifier to add as a column, run as it is (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per latency row")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report folder")
    args = parser.parse_args()

    start = time.perf_counter()
    images, labels = validation_images(args.data, args.per_class)
    log(f"{len(images)} validation images from {args.data}")
    classifier = open_model(args.model, "cpu", threads=args.threads)
    pipelines = {"none": [classifier]}
    for radius in args.radii:
        path = transforms.cached_transform("fft-lowpass", {"radius": radius}, "matmul", (32, 32))
        pipelines[f"lowpass {radius:g}"] = [open_model(path, "cpu", threads=args.threads), classifier]
    for keep in args.keeps:
        path = transforms.cached_transform("walsh-compress", {"keep": keep}, "matmul", (32, 32))
        pipelines[f"walsh {keep:g}"] = [open_model(path, "cpu", threads=args.threads), classifier]
    for entry in args.classifier:
        label, sep, path = entry.partition("=")
        if not sep:
            parser.error(f"--classifier expects LABEL=PATH, got {entry!r}")
        pipelines[label] = [open_model(path, "cpu", threads=args.threads)]
    corruptions = {noise_name(s): gaussian_noise(images, s) for s in sorted(set(args.sigmas) | {0.0})}
    corruptions.update({f"jpeg q{q}": jpeg(images, q) for q in args.qualities})

    log("accuracy:")
    grid = accuracy_grid(pipelines, corruptions, labels, log)
    log("latency:")
    latency = latency_rows(args.model, images, args.threads, args.seconds, log)

    args.out.mkdir(parents=True, exist_ok=True)
    report = atomic_write_text(args.out / "robustness.md",
                               markdown(args, grid, latency, len(images), time.perf_counter() - start))
    plot(grid, sorted(set(args.sigmas) | {0.0}), args.qualities, args.out / "robustness.png")
    log(f"wrote {report} and {args.out / 'robustness.png'}")


if __name__ == "__main__":
    main()
