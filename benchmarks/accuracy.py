"""The accuracy table of every shipped classifier: the lossless validation split, and the same
images JPEG-compressed at quality ≈ 75 (what a camera pipeline does to a model trained on clean
pixels).

    .venv/bin/python benchmarks/accuracy.py        # → benchmarks/results/accuracy.{md,json}

Both copies hold the same 5,000 validation images under the same names (docs/data.md), so the
robustness column is the same images, compressed; Δ and agreement are against each model's own
plain fp32 file on the lossless copy, through the function `toolkit eval` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolkit.edge.data.fsio import atomic_write_text  # noqa: E402
from toolkit.edge.infer import Evaluation, compare_to_reference, eval_split, evaluate_stream, row_labels  # noqa: E402
from toolkit.edge.runtime import open_model  # noqa: E402

CLEAN = REPO / "data" / "cifar10-png" / "train"
COMPRESSED = REPO / "data" / "cifar10-jpeg" / "train"
# Shipped classifiers, each model's plain fp32 file first (the reference of its rows).
FILES = ["cifar_cnn.onnx", "cifar_cnn.fp16.onnx", "cifar_cnn.int8.onnx", "cifar_cnn.ov.int8.onnx",
         "cifar_cnn.trt.int8.onnx", "cifar_cnn.tta.onnx", "cifar_cnn.fft_lowpass.onnx",
         "cifar_resnet.onnx", "cifar_resnet.fp16.onnx", "cifar_resnet.int8.onnx", "cifar_resnet.ov.int8.onnx",
         "cifar_resnet.tta.onnx"]


def evaluate(paths: list[Path], data: Path) -> list[Evaluation]:
    def stop(message: str) -> None:
        raise SystemExit(f"error: {message}")

    listing = eval_split(data, "val")
    models = [open_model(path) for path in paths]
    return evaluate_stream(models, listing, str(data.relative_to(REPO)), on_error=stop)


def table(clean: list[Evaluation], compressed: list[Evaluation]) -> str:
    lines = [(f"Top-1 accuracy on the fixed validation split (5,000 images) of {CLEAN.relative_to(REPO)}; Δ and "
             "agreement are against each model's plain fp32 file. The last two columns: the same images as "
             f"{COMPRESSED.relative_to(REPO)} (JPEG, quality ≈ 75), and the change from the lossless copy."), "",
             ("| model | precision | size (MB) | accuracy | Δ vs fp32 | top-1 agreement with fp32 | JPEG q75 | "
             "Δ JPEG |"), "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, r, j in zip(row_labels(clean), clean, compressed):
        lines.append(f"| {label} | {r.precision} | {r.size_mb:.2f} | {r.accuracy:.2%} | "
                     f"{(r.delta_vs_reference or 0.0) * 100:+.2f} pt | {r.agreement_with_reference or 0.0:.2%} | "
                     f"{j.accuracy:.2%} | {(j.accuracy - r.accuracy) * 100:+.2f} pt |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "accuracy")
    args = parser.parse_args()
    for folder in (CLEAN, COMPRESSED):
        if not folder.is_dir():
            raise SystemExit(f"error: {folder.relative_to(REPO)} not found (make data)")
    paths = [REPO / "models" / name for name in FILES if (REPO / "models" / name).is_file()]
    clean, compressed = evaluate(paths, CLEAN), evaluate(paths, COMPRESSED)
    compare_to_reference(clean)
    atomic_write_text(args.out.with_suffix(".md"), table(clean, compressed))
    doc = [{**r.to_json(), "accuracy_jpeg_q75": round(j.accuracy, 5)} for r, j in zip(clean, compressed)]
    for row in doc:
        row.pop("per_class")
        row["model"] = Path(row["model"]).name
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(doc, indent=1) + "\n")
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
