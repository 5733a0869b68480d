"""Bring your own model, measured: a foreign ResNet-18 through wrap → int8 → bench (issue #10).

    .venv/bin/python benchmarks/byom.py            # → benchmarks/results/byom.{md,json}; ~10 min on 2 cores
    .venv/bin/python benchmarks/byom.py --quick    # smoke test at 64×64, written to a temp folder

"Their" model is a ResNet-18 — torchvision's topology and initialisation, written out below because
torchvision cannot be installed next to this torch and nothing can be downloaded — at random
initialisation, exported the way other tools export: plain `torch.onnx.export`, float32 NCHW
[N, 3, 224, 224], ImageNet normalisation expected outside the graph, dynamic batch. Then, through
the toolkit's Python API:
  1. `wrap`: ImageNet mean/std and 1,000 labels → a uint8 NHWC contract model (parity-gated);
  2. `quantize --precision int8`, calibrated on CIFAR-10 training images (upscaled); there are no
     ImageNet labels here, so the guard holds top-1 agreement with fp32 (`unlabeled`). A random
     net's top-1 says little (the report counts how many classes it predicts at all): the
     accuracy evidence for int8 is the CIFAR models' (README, benchmarks/results/accuracy.md);
  3. `bench`: the original fed preprocessed float input (synthesised by bench), the wrapped fp32
     and the int8 model, at batch 1 and 64, in the same run, the rows interleaved over several
     rounds so that a load change on the shared CPU hits every row alike.
The contract head's cost is the wrapped fp32 p50 over the original's at batch 64 (limit 5%).
Run it on a quiet machine (`uptime` load < 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from toolkit import bench, quantize, wrap  # noqa: E402
from toolkit.edge.data.fsio import atomic_write_text  # noqa: E402

DATA = REPO / "data" / "cifar10-png" / "train"
RESULTS = REPO / "benchmarks" / "results"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HEAD_COST_LIMIT = 0.05


# ----------------------------------------------------------------------------- their model

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's layers and initialisation (11,689,512 parameters with 1,000 classes)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, layers, cin = (64, 128, 256, 512), [], 64
        for i, width in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, width, 1 if i == 0 else 2), BasicBlock(width, width, 1)))
            cin = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def export_theirs(path: Path, size: int) -> int:
    torch.manual_seed(0)
    net = ResNet18().eval()
    with warnings.catch_warnings():          # the TorchScript exporter: what most tools still use
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False, opset_version=17)
    return sum(p.numel() for p in net.parameters())


def classes_predicted(model: Path, size: int, n: int) -> int:
    """How many distinct classes the model predicts for the first `n` validation images."""
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.infer import predict
    from toolkit.edge.runtime import open_model

    images = read_split(DATA, "val", (size, size), limit=n).images
    return len(set(predict(open_model(model), images, batch_size=32).tolist()))


# ----------------------------------------------------------------------------- measuring

def measure(models: list[Path], batch_sizes: list[int], rounds: int, seconds: float, warmup: int) -> tuple[dict, list]:
    """One bench run over every model and batch size, its rows interleaved over `rounds` rounds so
    that a load change on the shared CPU hits every row alike."""
    doc = bench([str(m) for m in models], batch_sizes=batch_sizes, seconds=seconds, warmup=warmup,
                rounds=rounds, roof=False)
    by_key = {(Path(r["file"]).name, r["batch_size"]): r for r in doc["rows"]}
    rows = [{k: v for k, v in by_key[(m.name, b)].items() if k != "timings_ms"} for m in models for b in batch_sizes]
    return doc["machine"], rows


def report(machine: dict, rows: list[dict], facts: dict) -> str:
    from toolkit.edge.bench.machine import machine_lines

    names = {facts["original"]: "original (theirs)", facts["wrapped"]: "wrapped (contract)",
             facts["int8"]: "wrapped, int8"}
    inputs = {facts["original"]: f"float32 [N, 3, {facts['size']}, {facts['size']}], preprocessed",
              facts["wrapped"]: f"uint8 [N, {facts['size']}, {facts['size']}, 3]",
              facts["int8"]: f"uint8 [N, {facts['size']}, {facts['size']}, 3]"}
    base = {r["batch_size"]: r for r in rows if Path(r["file"]).name == facts["original"]}
    lines = [
        "# Bring your own model: a foreign ResNet-18 through wrap → int8 → bench", "",
        (f"`{facts['command']}` — {facts['created']}. onnxruntime CPU, {rows[0]['threads']} threads; each row "
         f"measured for {facts['seconds']:g} s after {facts['warmup']} warm-up runs, interleaved with the others "
         f"over {facts['rounds']} rounds (`toolkit bench --rounds`)."), "",
        *[f"- {line}" for line in machine_lines(machine)], "",
        (f"Their model: ResNet-18 (torchvision's topology and initialisation, {facts['parameters']:,} parameters) "
         f"at random initialisation, exported with plain `torch.onnx.export`: float32 NCHW, ImageNet mean/std "
         f"expected outside the graph, dynamic batch."), "",
        "| model | input | precision | size (MB) | batch | p50 (ms) | p90 (ms) | images/s | p50 vs original |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        name = Path(r["file"]).name
        ratio = r["p50_ms"] / base[r["batch_size"]]["p50_ms"]
        lines.append(f"| {names[name]} | {inputs[name]} | {r['precision']} | {r['file_size_bytes'] / 1e6:.1f} | "
                     f"{r['batch_size']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['throughput']:,.1f} | "
                     f"{ratio:.3f}× |")
    largest = max(base)
    wrapped = next(r for r in rows if Path(r["file"]).name == facts["wrapped"] and r["batch_size"] == largest)
    head = wrapped["p50_ms"] / base[largest]["p50_ms"] - 1
    verdict = "within" if head <= HEAD_COST_LIMIT else "OVER"
    lines += [
        "",
        (f"**Contract head cost at batch {largest}: {head:+.1%}** of the original's p50 ({verdict} the "
         f"{HEAD_COST_LIMIT:.0%} limit). The head converts uint8 NHWC pixels (a quarter of the bytes of the "
         f"float input the original is fed) to normalised float NCHW inside the graph."),
        (f"- wrap: parity with the original fed numpy-preprocessed images: max |Δ| {facts['wrap_max_diff']:.1e} on "
         f"{facts['wrap_images']} CIFAR-10 images upscaled to {facts['size']}×{facts['size']}, top-1 identical."),
        (f"- int8 (static QDQ, per-channel, {facts['calibration']} calibration images): top-1 agreement with fp32 "
         f"{facts['agreement']:.1%} on {facts['guard_images']} validation images (guard ≥ "
         f"{facts['min_agreement']:.0%}); nodes kept in float: {', '.join(facts['excluded']) or 'none'}. There are "
         f"no ImageNet labels here, and the random net predicts only {facts['classes_predicted']} distinct "
         f"class(es) for those images, so this agreement says little about int8 accuracy: that evidence is the "
         f"CIFAR models' (README)."),
    ]
    return "\n".join(lines) + "\n"


def measure_all(work: Path, size: int, batches: list[int], seconds: float, warmup: int,
                args: argparse.Namespace) -> dict:
    """Export theirs, wrap, quantize and bench, in `work`; the facts for the report."""
    original, wrapped = work / "resnet18.onnx", work / "resnet18.wrapped.onnx"
    int8 = work / "resnet18.wrapped.int8.onnx"
    parameters = export_theirs(original, size)
    print(f"their model: {original} ({original.stat().st_size / 1e6:.1f} MB, {parameters:,} parameters)")
    wrapped_result = wrap(original, wrapped, mean=IMAGENET_MEAN, std=IMAGENET_STD, name="resnet18",
                          labels=[f"class_{i:03d}" for i in range(1000)], images=DATA, log=print)
    print(wrapped_result.describe())
    q = quantize(wrapped, int8, "int8", data=DATA, unlabeled=True, calibration_images=args.calibration_images,
                 guard_images=args.guard_images, min_agreement=args.min_agreement, log=print)
    print(q.describe())
    machine, rows = measure([original, wrapped, int8], batches, args.rounds, seconds, warmup)
    return {"machine": machine, "rows": rows, "original": original.name, "wrapped": wrapped.name,
            "int8": int8.name, "size": size, "parameters": parameters, "rounds": args.rounds, "seconds": seconds,
            "warmup": warmup, "command": " ".join(["python benchmarks/byom.py", *sys.argv[1:]]),
            "created": datetime.now().isoformat(timespec="seconds"),
            "wrap_max_diff": wrapped_result.max_abs_diff, "wrap_images": wrapped_result.n_images,
            "calibration": args.calibration_images, "agreement": q.score, "guard_images": args.guard_images,
            "min_agreement": args.min_agreement, "excluded": q.excluded,
            "classes_predicted": classes_predicted(wrapped, size, args.guard_images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smoke test: 64×64, short runs, temp output.")
    parser.add_argument("--rounds", type=int, default=6, help="Rounds the rows are interleaved over.")
    parser.add_argument("--seconds", type=float, default=12.0, help="Measuring time per row, all rounds together.")
    parser.add_argument("--calibration-images", type=int, default=200)
    parser.add_argument("--guard-images", type=int, default=200, help="Validation images for the agreement guard.")
    parser.add_argument("--min-agreement", type=float, default=0.98)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA} not found (make data)")
    size, batches, warmup = (64, [1, 8], 2) if args.quick else (224, [1, 64], 3)
    seconds = 0.6 if args.quick else args.seconds
    out_dir = Path(tempfile.mkdtemp(prefix="byom_")) if args.quick else RESULTS
    with tempfile.TemporaryDirectory(prefix="byom_models_") as tmp:
        facts = measure_all(Path(tmp), size, batches, seconds, warmup, args)
    machine = facts.pop("machine")
    rows = facts.pop("rows")
    text = report(machine, rows, facts)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "byom.md", text)
    atomic_write_text(out_dir / "byom.json", json.dumps({"machine": machine, "facts": facts, "rows": rows}, indent=1))
    print(text)
    print(f"wrote {out_dir / 'byom.md'} and {out_dir / 'byom.json'}")


if __name__ == "__main__":
    main()
