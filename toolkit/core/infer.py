"""Running shipped ONNX models: classify images, evaluate classifiers, generate faces.

Never imports torch: this is the deployment path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.core.data import ImageError, load_image, resize
from toolkit.core.sessions import Model, ModelError, softmax, topk


def require_task(model: Model, task: str) -> None:
    if model.task != task:
        raise ModelError(f"{model.path}: a '{model.task or 'unknown'}' model, but this command needs a '{task}' model")


# ----------------------------------------------------------------------------- classify

@dataclass
class Prediction:
    path: str
    top: list[dict] = field(default_factory=list)
    error: str | None = None


def classify_files(model: Model, paths: list[Path], k: int = 3, batch_size: int = 64):
    """Yield a Prediction per path, in order. Unreadable files yield a Prediction with `error`;
    the rest are decoded, resized to the model's input and run in batches."""
    require_task(model, "classify")
    h, w = model.input_hw or (32, 32)
    labels = model.labels
    pending: list[tuple[str, np.ndarray]] = []

    def flush():
        batch = np.stack([img for _, img in pending])
        probs = softmax(model.run(batch).astype(np.float32))
        for (p, _), top in zip(pending, topk(probs, labels, k)):
            yield Prediction(path=p, top=top)
        pending.clear()

    for path in paths:
        try:
            pending.append((str(path), resize(load_image(path), h, w)))
        except ImageError as exc:
            yield from flush() if pending else ()
            yield Prediction(path=str(path), error=str(exc))
            continue
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()


# ----------------------------------------------------------------------------- evaluate

@dataclass
class Evaluation:
    model: str
    precision: str
    size_mb: float
    n: int
    accuracy: float
    per_class: dict[str, float]
    predictions: np.ndarray
    delta_vs_reference: float | None = None
    agreement_with_reference: float | None = None

    def to_json(self) -> dict:
        out = {"model": self.model, "precision": self.precision, "size_mb": round(self.size_mb, 3),
               "accuracy": round(self.accuracy, 5), "n": self.n,
               "per_class": {k: round(v, 5) for k, v in self.per_class.items()}}
        if self.delta_vs_reference is not None:
            out["delta_vs_fp32"] = round(self.delta_vs_reference, 5)
            out["agreement_with_fp32"] = round(self.agreement_with_reference, 5)
        return out


def match_labels(model_labels: list[str], class_names: list[str], source: str) -> np.ndarray:
    """Map the data's class folders onto the model's label indices, by name."""
    unknown = [c for c in class_names if c not in model_labels]
    if unknown:
        raise ValueError(f"{source}: class folders {unknown} are not labels of the model ({', '.join(model_labels)})")
    return np.asarray([model_labels.index(c) for c in class_names])


def predict(model: Model, images: np.ndarray, batch_size: int = 256, advance=None) -> np.ndarray:
    """Top-1 class indices; images of another size than the model's H×W are resized batch by batch."""
    hw = model.input_hw
    preds = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size]
        if hw is not None and batch.shape[1:3] != hw:
            batch = np.stack([resize(img, *hw) for img in batch])
        preds.append(model.run(batch).argmax(1))
        if advance:
            advance(min(batch_size, len(images) - i))
    return np.concatenate(preds)


def evaluate(model: Model, images: np.ndarray, labels: np.ndarray, class_names: list[str],
             source: str = "data", advance=None) -> Evaluation:
    """Top-1 accuracy of a classifier on labelled images (labels index `class_names`)."""
    require_task(model, "classify")
    target = match_labels(model.labels, class_names, source)[labels]
    preds = predict(model, images, advance=advance)
    per_class = {name: float(np.mean(preds[target == model.labels.index(name)] == model.labels.index(name)))
                 for name in class_names if np.any(target == model.labels.index(name))}
    return Evaluation(model=str(model.path), precision=model.precision,
                      size_mb=os.path.getsize(model.path) / 1e6, n=len(target),
                      accuracy=float(np.mean(preds == target)), per_class=per_class, predictions=preds)


def compare_to_reference(results: list[Evaluation]) -> None:
    """Fill Δ accuracy and top-1 agreement against the first fp32 result (or the first result)."""
    if not results:
        return
    ref = next((r for r in results if r.precision == "fp32"), results[0])
    for r in results:
        r.delta_vs_reference = r.accuracy - ref.accuracy
        r.agreement_with_reference = float(np.mean(r.predictions == ref.predictions))


# ----------------------------------------------------------------------------- generate

def generate(model: Model, n: int, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """n images (uint8 [n, H, W, 3]) from standard-normal latents; the same seed gives the same images."""
    require_task(model, "generate")
    latent_dim = int(model.metadata.get("toolkit.latent_dim", model.input.shape[1]))
    z = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    return np.concatenate([model.run(z[i:i + batch_size]) for i in range(0, n, batch_size)])


def accuracy_markdown(results: list[Evaluation], source: str, path: str | os.PathLike) -> Path:
    """The accuracy table as markdown, written atomically."""
    lines = [f"Top-1 accuracy on {source}; Δ and agreement are against the fp32 model.", "",
             "| model | precision | size (MB) | accuracy | Δ vs fp32 | top-1 agreement with fp32 |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {Path(r.model).name} | {r.precision} | {r.size_mb:.2f} | {r.accuracy:.2%} | "
                     f"{r.delta_vs_reference * 100:+.2f} pt | {r.agreement_with_reference:.2%} |")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
