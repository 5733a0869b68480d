"""Bring-your-own-model commands (runtime layer, no torch): wrap, quantize."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli.common import _one_line, _progress_factory, app, fail
from toolkit.edge.options import CalibrationMethod, Channels, Int8Target, Layout, OutputKind, QuantizedPrecision, Split


@app.command()
def wrap(
    source: Path = typer.Argument(..., metavar="IN.onnx", help="A float image classifier made elsewhere."),
    out: Path = typer.Option(..., help="The contract model to write (uint8 NHWC RGB in, logits out)."),
    layout: Layout | None = typer.Option(None, help="The model's input layout (default: the axis of size 3)."),
    channels: Channels = typer.Option("rgb", help="Channel order the model expects."),
    scale: float = typer.Option(255.0, help="Pixels are divided by this before normalising."),
    mean: str = typer.Option("0,0,0", help="Per-channel mean R,G,B subtracted after scaling."),
    std: str = typer.Option("1,1,1", help="Per-channel std R,G,B divided by after that."),
    labels: str | None = typer.Option(None, help="Label file (one per line) or a,b,c (default: 0…K-1)."),
    size: tuple[int, int] | None = typer.Option(None, help="H W, where the model's spatial size is dynamic."),
    output: str | None = typer.Option(None, help="Which output holds the class scores (several outputs)."),
    outputs: OutputKind = typer.Option("logits", help="What that output is; probabilities become "
                                                               "log-probabilities."),
    name: str | None = typer.Option(None, help="toolkit.model of the result (default: the file stem)."),
    images: Path | None = typer.Option(None, help="Real images for the parity gate (default: models/samples)."),
):
    """Bring a foreign ONNX classifier into the artifact contract, gated on parity with the original."""
    import toolkit.zoo as zoo
    from toolkit.edge.data.fsio import InputError
    from toolkit.edge.wrap.wrapper import WrapError, WrapSpec, parse_labels, parse_triple
    from toolkit.edge.wrap.wrapper import wrap as run_wrap

    try:
        spec = WrapSpec(layout=layout, channels=channels, scale=scale,
                        mean=parse_triple(mean, "--mean"), std=parse_triple(std, "--std", positive=True),
                        labels=parse_labels(labels) if labels is not None else None,
                        size=(size[0], size[1]) if size else None, output=output, outputs=outputs, name=name)
        result = run_wrap(source, out, spec, images or zoo.MODELS_DIR / "samples", log=typer.echo)
    except (WrapError, InputError, OSError) as exc:
        fail(_one_line(exc))
    typer.echo(result.describe())


@app.command()
def quantize(
    source: Path = typer.Argument(..., metavar="IN.onnx", help="An fp32 contract classifier (zoo, wrapped, "
                                                               "or exported with --module)."),
    out: Path = typer.Option(..., help="The variant to write."),
    precision: QuantizedPrecision = typer.Option("int8", help="int8 (static QDQ) or fp16."),
    data: Path = typer.Option(..., help="Class-per-folder tree, CIFAR-10 batches or a flat folder of images: "
                                        "calibration and the guard."),
    split: Split = typer.Option("val", help="Part of the fixed split the guard measures on."),
    calibration_images: int = typer.Option(500, min=1, help="int8: training images used for calibration."),
    calibration_method: CalibrationMethod = typer.Option("minmax", help="int8: how ranges are calibrated."),
    max_drop: float = typer.Option(0.5, min=0.0, help="int8: largest allowed validation-accuracy drop, in points."),
    unlabeled: bool = typer.Option(False, "--unlabeled", help="Ignore labels: guard on top-1 agreement with fp32."),
    min_agreement: float = typer.Option(0.98, min=0.0, max=1.0, help="Unlabelled guard: least top-1 agreement "
                                                                      "with fp32."),
    target: Int8Target = typer.Option("cpu", help="int8 scheme: cpu (uint8 activations, onnxruntime's "
                                                   "layout), openvino (the same, OpenVINO's layout) or tensorrt "
                                                   "(symmetric int8, zero point 0)."),
    guard_images: int | None = typer.Option(None, min=1, help="Measure the guard on this many images of the "
                                                                 "split (default: all)."),
):
    """An fp16 or int8 variant of any contract classifier, with an accuracy guard."""
    from toolkit.edge.data.fsio import InputError
    from toolkit.edge.quantize.classifier import QuantizeError, quantize_classifier
    from toolkit.edge.runtime.ort import ModelError, ProviderError

    try:
        result = quantize_classifier(source, out, precision, data, split, calibration_images,
                                     calibration_method, max_drop, unlabeled, min_agreement, target,
                                     guard_images, log=typer.echo, progress=_progress_factory())
    except (QuantizeError, InputError, ModelError, ProviderError, FileNotFoundError, ValueError, OSError) as exc:
        fail(_one_line(exc))
    typer.echo(result.describe())
