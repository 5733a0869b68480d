"""Running shipped ONNX models: classify images, evaluate classifiers, generate faces.

Every multi-input function here isolates its inputs: a file that cannot be read or decoded, or
whose classifier output is not finite, is one error (a message of one line) and the others go on;
in an evaluation of several models, a model that cannot run on the data is one error and the
other models go on. Evaluation streams the data set a chunk at a time, and generation streams its
images batch by batch, so memory follows the batch, not the request. Never imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.edge.data.fsio import atomic_write_text
from toolkit.edge.data.images import ImageError, OnError, load_image, resize
from toolkit.edge.errors import shown
from toolkit.edge.runtime import Model, ModelError

MAX_BATCH_SIZE = 4096             # images (or latents) per runtime call, for every command alike
MAX_GENERATE = 100_000            # images per `generate` call (written one by one: memory is one batch)
MAX_GRID = 1024                   # images in one grid picture (32 × 32 tiles of 64 px: a 2,114 px square)



def require_task(model: Model, task: str) -> None:
    """ModelError unless `model` is a `task` model whose metadata that task needs is usable."""
    if model.task != task:
        raise ModelError(f"{shown(model.path)}: a '{shown(model.task) or 'unknown'}' model, but this command needs a "
                         f"'{task}' model")
    if task == "classify":
        _ = model.labels          # raises ModelError for labels that are not a JSON list of names


def _runtime_failure(model: Model, exc: Exception) -> str:
    return f"{shown(model.path)}: the model failed to run ({model.explain(exc)})"


def class_count(model: Model) -> int:
    """How many classes a classifier scores: its labels, else its output's declared width."""
    if model.labels:
        return len(model.labels)
    return model.output_width or 0


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def topk(probs: np.ndarray, labels: list[str], k: int) -> list[list[dict]]:
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[{"label": labels[j] if j < len(labels) else str(j), "prob": round(float(p[j]), 4)} for j in row]
            for p, row in zip(probs, order)]


# ----------------------------------------------------------------------------- classify

@dataclass
class Prediction:
    path: str
    top: list[dict] = field(default_factory=list)
    error: str | None = None


def top_k_of(model: Model, k: int) -> int:
    """`k` clamped to the number of classes the classifier scores."""
    return min(k, class_count(model)) if class_count(model) else k


def classify_batch(model: Model, paths: list[str], images: np.ndarray, k: int) -> list[Prediction]:
    """One runtime call on decoded images (uint8 [N, H, W, 3] at the model's size): a Prediction per
    path, in order; a failed call is an error for each of them, non-finite scores for that image."""
    try:
        logits = np.asarray(model.run(images), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types; the failure is this batch's)
        message = _runtime_failure(model, exc)
        return [Prediction(path=p, error=f"{shown(p)}: {message}") for p in paths]
    finite = [bool(np.isfinite(row).all()) for row in logits]
    probs = softmax(np.where(np.isfinite(logits), logits, 0.0))
    return [Prediction(path=p, top=top) if ok else
            Prediction(path=p, error=f"{shown(p)}: the model's output is not finite (NaN or infinity); no prediction")
            for p, ok, top in zip(paths, finite, topk(probs, model.labels, k))]


def classify_files(model: Model, paths: list[Path], k: int = 3, batch_size: int = 64) -> Iterator[Prediction]:
    """Yield a Prediction per path, in order. A file that cannot be read or decoded, or whose
    scores are not finite, yields a Prediction with `error` (one line). `k` is clamped to the
    number of classes."""
    require_task(model, "classify")
    h, w = model.input_hw or (32, 32)
    k = top_k_of(model, k)
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> Iterator[Prediction]:
        yield from classify_batch(model, [str(p) for p, _ in pending], np.stack([img for _, img in pending]), k)
        pending.clear()

    for path in paths:
        try:
            pending.append((Path(path), resize(load_image(path), h, w)))
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
    errors: list[str] = field(default_factory=list)      # the inputs left out, one line each
    targets: np.ndarray | None = None                    # the true class per prediction (model's indices)

    def to_json(self) -> dict:
        out = {"model": self.model, "precision": self.precision, "size_mb": round(self.size_mb, 3),
               "accuracy": round(self.accuracy, 5), "n": self.n,
               "per_class": {k: round(v, 5) for k, v in self.per_class.items()}}
        if self.delta_vs_reference is not None and self.agreement_with_reference is not None:
            out["delta_vs_fp32"] = round(self.delta_vs_reference, 5)
            out["agreement_with_fp32"] = round(self.agreement_with_reference, 5)
        return out


def match_labels(model_labels: list[str], class_names: list[str], source: str) -> np.ndarray:
    """Map the data's class folders onto the model's label indices, by name."""
    unknown = [c for c in class_names if c not in model_labels]
    if unknown:
        raise ValueError(f"{source}: class folders {unknown} are not labels of the model ({', '.join(model_labels)})")
    return np.asarray([model_labels.index(c) for c in class_names])


def _evaluation(model: Model, preds: np.ndarray, target: np.ndarray, class_names: list[str]) -> Evaluation:
    per_class = {name: float(np.mean(preds[target == model.labels.index(name)] == model.labels.index(name)))
                 for name in class_names if np.any(target == model.labels.index(name))}
    return Evaluation(model=str(model.path), precision=model.precision,
                      size_mb=os.path.getsize(model.path) / 1e6, n=len(target),
                      accuracy=float(np.mean(preds == target)) if len(target) else 0.0,
                      per_class=per_class, predictions=preds, targets=target)


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
    """Top-1 accuracy of a classifier on labelled images held in memory (labels index `class_names`)."""
    require_task(model, "classify")
    target = match_labels(model.labels, class_names, source)[labels]
    return _evaluation(model, predict(model, images, advance=advance), target, class_names)


@dataclass
class _Tally:
    """One model's running evaluation over the streamed chunks."""
    model: Model
    to_label: np.ndarray
    preds: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    failure: str | None = None
    not_finite: int = 0
    first_not_finite: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return self.model.input_hw or (32, 32)

    def add(self, images: np.ndarray, labels: np.ndarray, paths: list[str] | None) -> None:
        try:
            logits = np.asarray(self.model.run(images), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own types)
            self.failure = _runtime_failure(self.model, exc)
            return
        if logits.ndim != 2 or logits.shape[0] != len(images):
            self.failure = f"{shown(self.model.path)}: output of shape {list(logits.shape)} is not [N, classes]"
            return
        finite = np.isfinite(logits).all(axis=1)
        if not finite.all():
            if not self.not_finite:
                first = int(np.flatnonzero(~finite)[0])
                self.first_not_finite = shown(paths[first]) if paths else f"image {first}"
            self.not_finite += int((~finite).sum())
        self.preds.append(logits.argmax(1))
        self.targets.append(self.to_label[labels])


def eval_split(data: str | os.PathLike, split: str, log: Callable[[str], object] | None = None):
    """The part of the fixed split an evaluation streams (`datasets.SplitListing`), listed, not
    decoded; `all` on CIFAR-10 batches means their test_batch, said in one note through `log`.
    ValueError, one line, for a folder that is not a data set or holds no images in that part."""
    from toolkit.edge.data.datasets import is_cifar_batches, list_split

    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"{shown(data)}: not a folder")
    part = "test" if split == "all" and is_cifar_batches(data) and (data / "test_batch").is_file() else split
    if part != split and log is not None:
        log(f"note: {shown(data)} holds CIFAR-10 batches: --split all evaluates their test_batch (the "
            f"data_batch_* files are the training images; --split val takes the validation part of those)")
    try:
        listing = list_split(data, part)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    if not len(listing):
        raise ValueError(f"{shown(data)}: no images in the {split} part")
    return listing


def evaluate_stream(models: list[Model], listing, source: str, on_error: OnError,
                    batch_size: int = 256, progress: Callable[[int], None] | None = None,
                    on_model_error: OnError | None = None) -> list[Evaluation]:
    """Evaluate several classifiers on one streamed split (`eval_split`), decoding each chunk once for
    all of them: what `toolkit eval` and `toolkit.evaluate` both run. A model that is not a
    classifier, whose labels do not cover the data's classes, that fails to run or gives
    non-finite scores is reported through `on_model_error` (default `on_error`; one line) and left
    out; an unreadable image is reported once through `on_error` and left out for every model (each
    Evaluation lists them in `errors`)."""
    model_failed = on_model_error or on_error
    skipped: list[str] = []

    def image_failed(message: str) -> None:
        skipped.append(message)
        on_error(message)

    tallies: list[_Tally] = []
    for model in models:
        try:
            require_task(model, "classify")
            tallies.append(_Tally(model, match_labels(model.labels, listing.class_names, source)))
        except (ModelError, ValueError) as exc:
            model_failed(str(exc))
    if not tallies:
        return []
    for chunk in listing.chunks([t.size for t in tallies], chunk=batch_size, on_error=image_failed,
                                progress=progress):
        for tally in tallies:
            if tally.failure is None:
                tally.add(chunk.images[tally.size], chunk.labels, chunk.paths)
    results = []
    for tally in tallies:
        if tally.failure is None and tally.not_finite:
            tally.failure = (f"{shown(tally.model.path)}: the output is not finite (NaN or infinity) for "
                             f"{tally.not_finite} images, first {tally.first_not_finite}; no accuracy reported")
        if tally.failure is not None:
            model_failed(tally.failure)
        elif tally.preds:
            result = _evaluation(tally.model, np.concatenate(tally.preds), np.concatenate(tally.targets),
                                 listing.class_names)
            result.errors = list(skipped)
            results.append(result)
    return results


def compare_to_reference(results: list[Evaluation]) -> None:
    """Fill Δ accuracy and top-1 agreement of each result against the fp32 file of its own model
    (`toolkit.model`): the plain one (no flip averaging, no transform in front) where it was
    evaluated too, else that model's first fp32, else its first result. Rows of different models
    are never compared with each other."""
    from toolkit.edge.contract import ModelFileError, inspect_model

    def identity(result: Evaluation) -> tuple[str, bool]:
        try:
            meta = inspect_model(result.model).metadata
        except ModelFileError:
            meta = {}
        plain = "toolkit.tta" not in meta and "toolkit.preprocess" not in meta
        return meta.get("toolkit.model", result.model), plain

    rows = [(r, *identity(r)) for r in results]
    for r, name, _ in rows:
        own = [(o, plain) for o, other, plain in rows if other == name]
        fp32 = [(o, plain) for o, plain in own if o.precision == "fp32"]
        ref = next((o for o, plain in fp32 if plain), fp32[0][0] if fp32 else own[0][0])
        r.delta_vs_reference = r.accuracy - ref.accuracy
        r.agreement_with_reference = float(np.mean(r.predictions == ref.predictions))


def _cell(text: str) -> str:
    """A file name as a markdown table cell: control characters escaped, pipes too."""
    return shown(text).replace("|", "\\|")


def row_labels(results: list[Evaluation]) -> list[str]:
    """How each result's row names its model: the file name, or the path where two files share a name."""
    names = [Path(r.model).name for r in results]
    return [shown(name if names.count(name) == 1 else r.model) for name, r in zip(names, results)]


def accuracy_markdown(results: list[Evaluation], source: str, path: str | os.PathLike) -> Path:
    """The accuracy table as markdown, written atomically."""
    lines = [f"Top-1 accuracy on {_cell(source)}; Δ and agreement are against the fp32 model.", "",
             "| model | precision | size (MB) | accuracy | Δ vs fp32 | top-1 agreement with fp32 |",
             "|---|---|---:|---:|---:|---:|"]
    for label, r in zip(row_labels(results), results):
        lines.append(f"| {_cell(label)} | {r.precision} | {r.size_mb:.2f} | {r.accuracy:.2%} | "
                     f"{(r.delta_vs_reference or 0.0) * 100:+.2f} pt | {r.agreement_with_reference or 0.0:.2%} |")
    return atomic_write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- generate

def generate_batches(model: Model, n: int, seed: int = 0, batch_size: int = 64) -> Iterator[np.ndarray]:
    """n images from standard-normal latents, yielded batch by batch (uint8 [b, H, W, 3]); the same
    seed gives the same images whatever the batch size (the latents are drawn in order)."""
    require_task(model, "generate")
    declared = model.input.shape[1] if len(model.input.shape) == 2 else None
    latent_dim = int(model.metadata.get("toolkit.latent_dim", declared if isinstance(declared, int) else 0))
    if latent_dim < 1:
        raise ModelError(f"{shown(model.path)}: neither toolkit.latent_dim nor the input's shape gives the latent size")
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        z = rng.standard_normal((min(batch_size, n - start), latent_dim)).astype(np.float32)
        yield model.run(z)


def generate(model: Model, n: int, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """n images (uint8 [n, H, W, 3]) in memory; the CLI streams `generate_batches` instead."""
    return np.concatenate(list(generate_batches(model, n, seed, batch_size)))
