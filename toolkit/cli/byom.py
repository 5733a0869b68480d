"""Bring-your-own-model commands (runtime layer, no torch): wrap, quantize."""

from __future__ import annotations

from pathlib import Path

import typer

from toolkit.cli.common import _progress_factory, app, fail, quantize_option, say
from toolkit.cli.size import parse_size, size_option
from toolkit.edge.errors import first_line
from toolkit.edge.options import CalibrationMethod, Channels, Int8Target, Layout, OutputKind, QuantizedPrecision, Split


@app.command()
def wrap(
    source: Path = typer.Argument(..., metavar="IN.onnx", help="A float image classifier made elsewhere."),
    out: Path = typer.Option(..., help="The contract model to write (uint8 NHWC RGB in, logits out)."),
    layout: Layout | None = typer.Option(None, help="The model's input layout (default: the axis of size 3)."),
    channels: Channels = typer.Option("rgb", help="Channel order the model expects."),
    scale: float = typer.Option(255.0, help="Pixels are divided by this before normalising."),
    mean: str = typer.Option("0,0,0", help="Per-channel mean subtracted after scaling, R,G,B whatever "
                                           "--channels says."),
    std: str = typer.Option("1,1,1", help="Per-channel std divided by after that, R,G,B whatever "
                                          "--channels says."),
    labels: str | None = typer.Option(None, help="Label file (one per line) or a,b,c (default: 0…K-1)."),
    size: tuple[str, str] | None = size_option("H W, where the model's spatial size is dynamic."),
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
                        size=parse_size(size), output=output, outputs=outputs, name=name)
        result = run_wrap(source, out, spec, images or zoo.MODELS_DIR / "samples", log=say)
    except (WrapError, InputError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(result.describe())


@app.command()
def quantize(
    source: Path = typer.Argument(..., metavar="IN.onnx", help="An fp32 contract classifier (zoo, wrapped, "
                                                               "or exported with --module)."),
    out: Path = typer.Option(..., help="The variant to write."),
    precision: QuantizedPrecision = quantize_option("precision"),
    data: Path = typer.Option(..., help="Class-per-folder tree, CIFAR-10 batches or a flat folder of images: "
                                        "calibration and the guard."),
    split: Split = quantize_option("split"),
    calibration_images: int = quantize_option("calibration_images"),
    calibration_method: CalibrationMethod = quantize_option("calibration_method"),
    max_drop: float = quantize_option("max_drop"),
    unlabeled: bool = quantize_option("unlabeled", "--unlabeled"),
    min_agreement: float = quantize_option("min_agreement"),
    target: Int8Target = quantize_option("target"),
    guard_images: int | None = quantize_option("guard_images"),
):
    """An fp16 or int8 variant of any contract classifier, with an accuracy guard."""
    from toolkit.edge.data.fsio import InputError
    from toolkit.edge.quantize.classifier import QuantizeError, quantize_classifier
    from toolkit.edge.quantize.config import QuantizeOptions
    from toolkit.edge.runtime import ModelError, ProviderError

    options = QuantizeOptions(precision=precision, split=split, calibration_images=calibration_images,
                              calibration_method=calibration_method, max_drop=max_drop, unlabeled=unlabeled,
                              min_agreement=min_agreement, target=target, guard_images=guard_images)
    try:
        result = quantize_classifier(source, out, data, options, log=say, progress=_progress_factory())
    except (QuantizeError, InputError, ModelError, ProviderError, FileNotFoundError, ValueError, OSError) as exc:
        fail(first_line(exc))
    typer.echo(result.describe())
