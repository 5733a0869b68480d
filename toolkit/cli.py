"""The `toolkit` command: a thin Typer shell. Each command parses, calls one function, prints.

Heavy imports (torch, onnxruntime) happen inside the commands, so `toolkit --help` is instant
and the inference commands never import torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, export, quantize, run and benchmark small image models with ONNX.")
train_app = typer.Typer(no_args_is_help=True, help="Train a model of the zoo.")
app.add_typer(train_app, name="train")


class UserError(Exception):
    """An error whose message is for the user: printed on one line, exit status 1."""


def fail(message: str, code: int = 1):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


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
    out: Path = typer.Option(Path("models/cifar_cnn.safetensors"), help="Final weights (safetensors)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Resumable checkpoint (default: OUT with .ckpt.safetensors)."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint."),
):
    """Train the paper's CIFAR-10 CNN; validation accuracy is reported after every epoch."""
    from toolkit.train import ClassifierConfig, Interrupted, train_classifier
    cfg = ClassifierConfig(data=str(data), epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                           warmup=warmup, label_smoothing=label_smoothing, flip=flip, translate=translate,
                           seed=seed, threads=threads)
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
    ema: float = typer.Option(0.999, min=0.0, max=0.99999, help="Decay of the shipped generator-weight average (0: off)."),
    holdout: int = typer.Option(2000, min=0, help="Last N images (by name) kept out of training for the quality measure."),
    seed: int = typer.Option(0, help="Seed for initialisation, shuffling and latents."),
    threads: int = typer.Option(0, min=0, help="Torch threads (0: torch's default)."),
    samples_dir: Path = typer.Option(Path("runs/dcgan"), help="Where the per-epoch sample grids go."),
    out: Path = typer.Option(Path("models/dcgan.safetensors"), help="Final generator weights (safetensors)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Resumable checkpoint (default: OUT with .ckpt.safetensors)."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint."),
):
    """Train the DCGAN generator and discriminator; a sample grid is written every epoch."""
    from toolkit.train import GanConfig, Interrupted, train_gan
    cfg = GanConfig(data=str(data), epochs=epochs, batch_size=batch_size, lr=lr, beta1=beta1, ema=ema,
                    holdout=holdout, seed=seed, threads=threads, samples_dir=str(samples_dir))
    try:
        train_gan(cfg, out, checkpoint, resume)
    except Interrupted as exc:
        fail(str(exc), 130)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
