"""The Python API: the same steps the CLI runs, as functions. `import toolkit` stays light; each
function imports what it needs when called, and only `export_module` needs torch.

    from toolkit import wrap, quantize, open_model, classify

    wrap("theirs.onnx", "mine.onnx", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
         labels="labels.txt")
    quantize("mine.onnx", "mine.int8.onnx", data="photos/")
    print(classify(open_model("mine.int8.onnx"), ["cat.jpg"]))

Errors are exceptions whose message is one line (WrapError, QuantizeError, OptimizeError, ExportError,
ModelError, ProviderError). Messages that the CLI prints go to `log` (default: nowhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.edge.quantize.config import DEFAULTS as _Q  # the quantize options' defaults, declared once

if TYPE_CHECKING:
    import numpy as np

    from toolkit.edge.infer import Evaluation, Prediction
    from toolkit.edge.quantize.classifier import QuantizeResult
    from toolkit.edge.runtime import Model, Schedule
    from toolkit.edge.wrap.wrapper import WrapResult

__all__ = ["bench", "classify", "evaluate", "export_module", "open_model", "optimize", "quantize", "wrap"]

PathLike = str | os.PathLike


def _quiet(*_: object) -> None:
    return None


def wrap(source: PathLike, out: PathLike, *, layout: str | None = None, channels: str = "rgb",
         scale: float = 255.0, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
         labels: Sequence[str] | str | None = None, size: tuple[int, int] | None = None,
         output: str | None = None, outputs: str = "logits", name: str | None = None,
         images: PathLike | np.ndarray | None = None, log: Callable[[str], Any] = _quiet) -> WrapResult:
    """Bring a foreign ONNX classifier into the contract (see `toolkit wrap --help`). `mean` and
    `std` are R,G,B whatever `channels` says; `labels` is a list, a label file or "a,b,c";
    `images` (real images for the parity gate) defaults to the shipped sample images."""
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


def quantize(source: PathLike, out: PathLike, precision: str = _Q.precision, *, data: PathLike,
             split: str = _Q.split, calibration_images: int = _Q.calibration_images,
             calibration_method: str = _Q.calibration_method, max_drop: float = _Q.max_drop,
             unlabeled: bool = _Q.unlabeled, min_agreement: float = _Q.min_agreement, target: str = _Q.target,
             guard_images: int | None = _Q.guard_images, log: Callable[[str], Any] = _quiet) -> QuantizeResult:
    """An fp16 or int8 variant of any fp32 contract classifier (see `toolkit quantize --help`; the
    options, their defaults and meaning are toolkit.edge.quantize.config.QuantizeOptions')."""
    from toolkit.edge.quantize.classifier import quantize_classifier
    from toolkit.edge.quantize.config import QuantizeOptions

    options = QuantizeOptions(precision=precision, split=split, calibration_images=calibration_images,
                              calibration_method=calibration_method, max_drop=max_drop, unlabeled=unlabeled,
                              min_agreement=min_agreement, target=target, guard_images=guard_images)
    return quantize_classifier(source, out, data, options, log=log)


def export_module(module: str, weights: PathLike, size: tuple[int, int], out: PathLike, *,
                  labels: Sequence[str] | str | None = None, mean: Sequence[float] = (0.0, 0.0, 0.0),
                  std: Sequence[float] = (1.0, 1.0, 1.0), data: PathLike | None = None, name: str | None = None,
                  precision: str = "fp32", log: Callable[[str], Any] = _quiet, **quantize_options: Any) -> dict:
    """Export your `nn.Module` ("file.py:Net" or "package.module:make_net") as a contract
    classifier (needs torch; see `toolkit export --help`). `quantize_options`, for fp16 and int8:
    fields of toolkit.edge.quantize.config.QuantizeOptions (calibration_images, max_drop, …)."""
    from toolkit.edge.quantize.config import QuantizeOptions
    from toolkit.edge.wrap.wrapper import parse_labels
    from toolkit.pytorch.module_export import export_module as run_export

    if isinstance(labels, str):
        labels = parse_labels(labels)
    return run_export(module, weights, size, out, list(labels) if labels is not None else None,
                      _triple(mean), _triple(std), data, name, precision, QuantizeOptions(**quantize_options),
                      log=log)


def open_model(path: PathLike, provider: str | None = None, threads: int | None = None,
               schedule: str | Schedule | None = None, precision_hint: str | None = None,
               shapes: dict[str, Sequence[int]] | None = None, cache_dir: PathLike | None = None) -> Model:
    """`path` opened on `provider` (no silent fallback), with every option the CLI's infer, eval
    and bench take. What is left as None comes from the deployment `toolkit optimize` wrote into
    the file, if it has one (explicit arguments win), else cpu, the runtime's threads, one call.
    `threads`: intra-op threads (default: the runtime's). `schedule` (cpu,
    openvino): `2x32` runs each batch as micro-batches of 32 on 2 streams (streams.py); one that
    cannot be read is a ValueError. `precision_hint` (openvino: f32 | bf16): the compute precision
    of float models. `shapes` (tensorrt): input name → shape to build the engine for. `cache_dir`:
    where compiled engines are kept. An option that does not apply to the provider is a
    ProviderError; a file that is not a usable model a ModelError."""
    from toolkit.edge.runtime import Schedule
    from toolkit.edge.runtime import open_model as run_open

    plan = schedule if isinstance(schedule, Schedule) or schedule is None else Schedule.parse(schedule)
    dims = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()} if shapes is not None else None
    return run_open(path, provider, threads=threads, schedule=plan, precision_hint=precision_hint, shapes=dims,
                    cache_dir=Path(cache_dir) if cache_dir is not None else None)


def _model(model: Model | PathLike) -> Model:
    from toolkit.edge.runtime import Model
    return model if isinstance(model, Model) else open_model(model)


def classify(model: Model | PathLike, images: Sequence[PathLike] | PathLike, k: int = 3) -> list[Prediction]:
    """Top-k labels for image files or folders, resized to the model's input size. An unreadable
    file gives a Prediction with `error` set rather than an exception."""
    from toolkit.edge.data.images import expand_inputs
    from toolkit.edge.infer import classify_files

    paths = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    return list(classify_files(_model(model), expand_inputs(paths), k=k))


def evaluate(model: Model | PathLike, data: PathLike, split: str = "val", *, batch_size: int = 256,
             on_error: Callable[[str], Any] = _quiet) -> Evaluation:
    """Top-1 accuracy on a class-per-folder tree or CIFAR-10 batches (`split`: val | train | all;
    all on CIFAR batches means their test_batch), streamed `batch_size` images at a time through
    the same function as `toolkit eval`. An image that cannot be read is left out: one line in
    `Evaluation.errors` and to `on_error`. A model that is not a classifier of these classes, fails
    to run or scores an image with NaN or infinity gets no accuracy: ModelError, with the line
    `toolkit eval` prints. A folder that is not a data set: ValueError."""
    from toolkit.edge.errors import shown
    from toolkit.edge.infer import eval_split, evaluate_stream
    from toolkit.edge.runtime import ModelError

    listing = eval_split(data, split)
    failures: list[str] = []
    results = evaluate_stream([_model(model)], listing, shown(data), on_error, batch_size,
                              on_model_error=failures.append)
    if failures:
        raise ModelError(failures[0])
    return results[0]


def optimize(model: PathLike, out: PathLike, *, data: PathLike | None = None, unlabeled: PathLike | None = None,
             log: Callable[[str], Any] = _quiet, **options: Any) -> dict:
    """The fastest deployment of a contract classifier (a zoo name or a file) on this machine within
    an accuracy budget, written to `out` (see `toolkit optimize --help`): returns report.json's
    document. `options` are fields of toolkit.edge.optimize.OptimizeOptions (max_drop,
    min_agreement, objective, batch_size, providers, time_budget, rounds, seed, …). A request that
    cannot be met is an OptimizeError, one line, and nothing is written."""
    from toolkit.edge.optimize import OptimizeOptions
    from toolkit.edge.optimize import optimize as run_optimize

    if "providers" in options and options["providers"] is not None:
        options["providers"] = tuple(options["providers"])
    return run_optimize(model, out, data=data, unlabeled=unlabeled, options=OptimizeOptions(**options), log=log)


def bench(models: Sequence[PathLike] | PathLike, providers: Sequence[str] = ("cpu",),
          batch_sizes: Sequence[int] = (1, 64), **options: Any) -> dict:
    """Latency and throughput rows (the document `toolkit bench --json` prints). `options` are
    the remaining BenchConfig fields (warmup, runs, seconds, threads, data, …); `schedules` may be
    given as specs such as ["1", "2x32"]."""
    from toolkit.edge import bench as bench_lib
    from toolkit.edge.runtime import Schedule

    if "schedules" in options:
        options["schedules"] = [s if isinstance(s, Schedule) else Schedule.parse(s) for s in options["schedules"]]
    paths = [models] if isinstance(models, (str, os.PathLike)) else list(models)
    cfg = bench_lib.BenchConfig(models=[Path(p) for p in paths], providers=list(providers),
                                batch_sizes=list(batch_sizes), **options)
    return bench_lib.run_benchmark(cfg)
