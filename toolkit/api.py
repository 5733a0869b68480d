"""The Python API: the same steps the CLI runs, as functions. `import toolkit` stays light; each
function imports what it needs when called, and only `export_module` needs torch.

    from toolkit import wrap, quantize, open_model, classify

    wrap("theirs.onnx", "mine.onnx", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
         labels="labels.txt")
    quantize("mine.onnx", "mine.int8.onnx", data="photos/")
    print(classify(open_model("mine.int8.onnx"), ["cat.jpg"]))

Errors are exceptions whose message is one line (WrapError, QuantizeError, ModuleExportError,
ModelError, ProviderError). Messages that the CLI prints go to `log` (default: nowhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from toolkit.edge.infer import Evaluation, Prediction
    from toolkit.edge.quantize.classifier import QuantizeResult
    from toolkit.edge.runtime.ort import Model
    from toolkit.edge.wrap.wrapper import WrapResult

__all__ = ["bench", "classify", "evaluate", "export_module", "open_model", "quantize", "wrap"]

PathLike = str | os.PathLike


def _quiet(*_: object) -> None:
    return None


def wrap(source: PathLike, out: PathLike, *, layout: str | None = None, channels: str = "rgb",
         scale: float = 255.0, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
         labels: Sequence[str] | str | None = None, size: tuple[int, int] | None = None,
         output: str | None = None, outputs: str = "logits", name: str | None = None,
         images: PathLike | np.ndarray | None = None, log: Callable[[str], Any] = _quiet) -> WrapResult:
    """Bring a foreign ONNX classifier into the contract (see `toolkit wrap --help`). `labels` is
    a list, a label file or "a,b,c"; `images` (real images for the parity gate) defaults to the
    shipped sample images."""
    import toolkit.zoo as zoo
    from toolkit.edge.wrap.wrapper import WrapSpec, parse_labels
    from toolkit.edge.wrap.wrapper import wrap as run_wrap

    if isinstance(labels, str):
        labels = parse_labels(labels)
    spec = WrapSpec(layout=layout, channels=channels, scale=float(scale), mean=_triple(mean), std=_triple(std),
                    labels=list(labels) if labels is not None else None, size=size, output=output,
                    outputs=outputs, name=name)
    return run_wrap(source, out, spec, images if images is not None else zoo.MODELS_DIR / "samples", log=log)


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def quantize(source: PathLike, out: PathLike, precision: str = "int8", *, data: PathLike,
             split: str = "val", calibration_images: int = 500, calibration_method: str = "minmax",
             max_drop: float = 0.5, unlabeled: bool = False, min_agreement: float = 0.98, target: str = "cpu",
             guard_images: int | None = None, log: Callable[[str], Any] = _quiet) -> QuantizeResult:
    """An fp16 or int8 variant of any fp32 contract classifier (see `toolkit quantize --help`)."""
    from toolkit.edge.quantize.classifier import quantize_classifier

    return quantize_classifier(source, out, precision, data, split, calibration_images, calibration_method,
                               max_drop, unlabeled, min_agreement, target, guard_images, log=log)


def export_module(module: str, weights: PathLike, input_size: tuple[int, int], out: PathLike, *,
                  labels: Sequence[str] | str | None = None, mean: Sequence[float] = (0.0, 0.0, 0.0),
                  std: Sequence[float] = (1.0, 1.0, 1.0), data: PathLike | None = None, name: str | None = None,
                  precision: str = "fp32", log: Callable[[str], Any] = _quiet, **quantize_options: Any) -> dict:
    """Export your `nn.Module` ("file.py:Net" or "package.module:make_net") as a contract
    classifier (needs torch; see `toolkit export --help`)."""
    from toolkit.edge.wrap.wrapper import parse_labels
    from toolkit.pytorch.module_export import export_module as run_export

    if isinstance(labels, str):
        labels = parse_labels(labels)
    return run_export(module, weights, input_size, out, list(labels) if labels is not None else None,
                      _triple(mean), _triple(std), data, name, precision, log=log, **quantize_options)


def open_model(path: PathLike, provider: str = "cpu", threads: int | None = None, schedule: str = "1") -> Model:
    """A session on `provider` (no silent fallback) with the model's metadata. `schedule`
    (cpu, openvino): `2x32` runs each batch as micro-batches of 32 on 2 streams (streams.py);
    a schedule that cannot be read is a ValueError."""
    from toolkit.edge.runtime.ort import open_model as run_open
    from toolkit.edge.runtime.streams import Schedule

    return run_open(path, provider, threads=threads, schedule=Schedule.parse(schedule))


def _model(model: Model | PathLike) -> Model:
    from toolkit.edge.runtime.ort import Model
    return model if isinstance(model, Model) else open_model(model)


def classify(model: Model | PathLike, images: Sequence[PathLike] | PathLike, k: int = 3) -> list[Prediction]:
    """Top-k labels for image files or folders, resized to the model's input size. An unreadable
    file gives a Prediction with `error` set rather than an exception."""
    from toolkit.edge.data.images import expand_inputs
    from toolkit.edge.infer import classify_files

    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    return list(classify_files(_model(model), expand_inputs(paths), k=k))


def evaluate(model: Model | PathLike, data: PathLike, split: str = "val") -> Evaluation:
    """Top-1 accuracy on a class-per-folder tree or CIFAR-10 batches (`split`: val | train | all)."""
    from toolkit.edge.data.datasets import read_split
    from toolkit.edge.infer import evaluate as run_eval

    session = _model(model)
    labelled = read_split(data, split, session.input_hw or (32, 32))
    return run_eval(session, labelled.images, labelled.labels, labelled.class_names, str(data))


def bench(models: Sequence[PathLike] | PathLike, providers: Sequence[str] = ("cpu",),
          batch_sizes: Sequence[int] = (1, 64), **options: Any) -> dict:
    """Latency and throughput rows (the document `toolkit bench --json` prints). `options` are
    the remaining BenchConfig fields (warmup, runs, seconds, threads, data, …); `schedules` may be
    given as specs such as ["1", "2x32"]."""
    from toolkit.edge import bench as bench_lib
    from toolkit.edge.runtime.streams import Schedule

    if "schedules" in options:
        options["schedules"] = [s if isinstance(s, Schedule) else Schedule.parse(s) for s in options["schedules"]]
    paths = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    cfg = bench_lib.BenchConfig(models=[Path(p) for p in paths], providers=list(providers),
                                batch_sizes=list(batch_sizes), **options)
    return bench_lib.run_benchmark(cfg)
