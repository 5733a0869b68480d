"""Build commands (need torch, imported lazily inside each): export, train."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from toolkit.cli.common import _one_line, _progress_factory, app, fail, require_train_extra, train_app


# ----------------------------------------------------------------------------- export

@app.command()
def export(
    model: Optional[str] = typer.Option(None, help="cifar-cnn | dcgan | fft-lowpass | walsh-compress | fft-spectrum."),
    precision: str = typer.Option("fp32", help="fp32 | fp16 | int8 (cifar-cnn, dcgan)."),
    weights: Optional[Path] = typer.Option(None, help="Trained weights (safetensors); default: the shipped ones."),
    out: Optional[Path] = typer.Option(None, help="Output .onnx (default: models/<name>[.precision].onnx)."),
    data: Optional[Path] = typer.Option(None, help="Image tree for parity, calibration and the accuracy guard "
                                                   "(default: data/cifar10-jpeg/train)."),
    preprocess: Optional[str] = typer.Option(None, help="Fuse a transform before the classifier, e.g. fft-lowpass:0.5."),
    calibration_images: int = typer.Option(500, min=1, help="int8: training images used for calibration."),
    calibration_method: str = typer.Option("minmax", help="int8: minmax | entropy | percentile."),
    max_drop: float = typer.Option(0.5, min=0.0, help="int8: largest allowed validation-accuracy drop, in points."),
    dynamic: bool = typer.Option(False, help="int8: dynamic quantization (refused for models with convolutions)."),
    radius: float = typer.Option(0.5, help="fft-lowpass: cut-off radius in (0, 1]."),
    keep: float = typer.Option(0.5, help="walsh-compress: fraction of coefficients kept per side, in (0, 1]."),
    size: Optional[List[int]] = typer.Option(None, help="Transforms: image size H W (repeat: --size 32 --size 32)."),
    form: str = typer.Option("matmul", help="Transforms: dft | matmul."),
    tta: bool = typer.Option(False, "--tta", help="Classifiers: average the logits of each image and its mirror "
                                                   "inside the graph (default out: models/<name>.tta.onnx)."),
    module: Optional[str] = typer.Option(None, help="Your classifier instead of --model: FILE.py:NAME or "
                                                    "package.module:NAME (a class or factory taking no arguments)."),
    input_size: Optional[Tuple[int, int]] = typer.Option(None, help="--module: the net's input H W."),
    labels: Optional[str] = typer.Option(None, help="--module: label file (one per line) or a,b,c."),
    mean: str = typer.Option("0,0,0", help="--module: per-channel mean R,G,B of pixels scaled to [0, 1]."),
    std: str = typer.Option("1,1,1", help="--module: per-channel std R,G,B."),
):
    """Export a model to a self-describing ONNX file, gated on parity with PyTorch."""
    if (model is None) == (module is None):
        fail("give either --model NAME or --module FILE.py:NAME")
    from toolkit.build.export import TRANSFORM_MODELS, export_model
    if model not in TRANSFORM_MODELS:          # transforms are built without torch
        require_train_extra()
    if module is not None:
        _export_module(module, weights, input_size, out, labels, mean, std, data, precision, calibration_images,
                       calibration_method, max_drop)
        return
    try:
        result = export_model(model=model, precision=precision, weights=weights, out=out, data=data,
                              preprocess=preprocess, calibration_images=calibration_images,
                              calibration_method=calibration_method, max_drop=max_drop, dynamic=dynamic,
                              radius=radius, keep=keep, size=size, form=form, tta=tta, log=typer.echo,
                              progress=_progress_factory())
    except Exception as exc:  # every failure here has a one-line message meant for the user
        fail(_one_line(exc))
    typer.echo(result.describe())



def _export_module(module: str, weights: Optional[Path], input_size, out: Optional[Path], labels: Optional[str],
                   mean: str, std: str, data: Optional[Path], precision: str, calibration_images: int,
                   calibration_method: str, max_drop: float) -> None:
    if weights is None or input_size is None or out is None:
        fail("--module needs --weights, --input-size H W and --out")
    from toolkit.build.module_export import export_module
    from toolkit.core.wrap import parse_labels, parse_triple
    options = {} if precision == "fp32" else {"calibration_images": calibration_images,
                                              "calibration_method": calibration_method, "max_drop": max_drop}
    try:
        export_module(module, weights, tuple(input_size), out, parse_labels(labels) if labels else None,
                      parse_triple(mean, "--mean"), parse_triple(std, "--std", positive=True), data,
                      precision=precision, log=typer.echo, **options)
    except Exception as exc:  # every failure here has a one-line message meant for the user
        fail(_one_line(exc))


# ----------------------------------------------------------------------------- train

@train_app.command("cifar-cnn")
def train_cifar_cnn(
    data: Path = typer.Option(..., help="Class-per-folder image tree or cifar-10-batches-py folder."),
    epochs: int = typer.Option(5, min=1, help="Epochs over the training part."),
    batch_size: int = typer.Option(32, min=1, help="Mini-batch size."),
    lr: float = typer.Option(2e-3, help="Peak learning rate of the one-cycle schedule (AdamW)."),
    weight_decay: float = typer.Option(5e-4, help="AdamW weight decay (weights only, not biases)."),
    warmup: float = typer.Option(0.25, help="Fraction of the steps spent warming the learning rate up."),
    label_smoothing: float = typer.Option(0.0, help="Label smoothing of the cross-entropy."),
    flip: bool = typer.Option(True, help="Random horizontal flips."),
    translate: int = typer.Option(0, min=0, help="Random shifts of up to this many pixels."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and augmentation."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: torch's default)."),
    preprocess: str = typer.Option("", help="Train on transformed images, e.g. fft-lowpass:0.5 (to fuse at export)."),
    init: Optional[Path] = typer.Option(None, help="Start from these weights (fine-tuning) instead of a fresh net."),
    out: Path = typer.Option(Path("models/cifar_cnn.safetensors"), help="Final weights (safetensors)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Resumable checkpoint (default: OUT with .ckpt.safetensors)."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint."),
):
    """Train the paper's CIFAR-10 CNN; validation accuracy is reported after every epoch."""
    require_train_extra()
    from toolkit.build.train import ClassifierConfig, Interrupted, train_classifier
    cfg = ClassifierConfig(data=str(data), epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                           warmup=warmup, label_smoothing=label_smoothing, flip=flip, translate=translate,
                           seed=seed, threads=threads, preprocess=preprocess, init=str(init or ""))
    try:
        train_classifier(cfg, out, checkpoint, resume)
    except Interrupted as exc:
        fail(str(exc), 130)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


@train_app.command("dcgan")
def train_dcgan(
    data: Path = typer.Option(..., help="Flat folder of images (any size; resized to 64×64)."),
    epochs: int = typer.Option(10, min=1, help="Epochs over the training faces."),
    batch_size: int = typer.Option(64, min=2, help="Mini-batch size."),
    lr: float = typer.Option(2e-4, help="Adam learning rate (both networks)."),
    beta1: float = typer.Option(0.5, help="Adam β1."),
    ema: float = typer.Option(0.0, min=0.0, max=0.99999, help="Ship an average of the generator's weights with this "
                                                                "decay instead of the generator as trained (0: off)."),
    holdout: int = typer.Option(2000, min=0, help="Last N images (by name) kept out of training for the quality measure."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and latents."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: torch's default)."),
    samples_dir: Path = typer.Option(Path("runs/dcgan"), help="Where the per-epoch sample grids go."),
    out: Path = typer.Option(Path("models/dcgan.safetensors"), help="Final generator weights (safetensors)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Resumable checkpoint (default: OUT with .ckpt.safetensors)."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint."),
):
    """Train the DCGAN generator and discriminator; a sample grid is written every epoch."""
    require_train_extra()
    from toolkit.build.train import GanConfig, Interrupted, train_gan
    cfg = GanConfig(data=str(data), epochs=epochs, batch_size=batch_size, lr=lr, beta1=beta1, ema=ema,
                    holdout=holdout, seed=seed, threads=threads, samples_dir=str(samples_dir))
    try:
        train_gan(cfg, out, checkpoint, resume)
    except Interrupted as exc:
        fail(str(exc), 130)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


