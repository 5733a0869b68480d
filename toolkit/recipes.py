"""Training configurations: every option's default and help text, declared once.

The `toolkit train` commands are generated from these dataclasses (toolkit/cli/build.py), so a
default lives here and nowhere else. No torch here: the CLI imports this module at start-up.
`validate()` checks every value before any data is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolkit.edge.options import option


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class ClassifierConfig:
    """The paper's CNN (`cifar-cnn`) and its shipped recipe: AdamW, batch 32, 5 epochs (the best of 14
    candidates, models/README.md)."""

    data: str = option("", "Class-per-folder image tree or cifar-10-batches-py folder.")
    epochs: int = option(5, "Epochs over the training part.")
    batch_size: int = option(32, "Mini-batch size.")
    optimizer: str = option("adamw", "adamw | sgd (Nesterov, with --momentum).")
    lr: float = option(1e-3, "Peak learning rate.")
    momentum: float = option(0.9, "SGD momentum (sgd only).")
    weight_decay: float = option(5e-4, "Weight decay (conv and linear weights only, not biases or norms).")
    warmup: float = option(0.25, "Fraction of the steps spent warming the learning rate up.")
    schedule: str = option("cosine", "Decay after the warm-up: cosine | linear.")
    label_smoothing: float = option(0.1, "Label smoothing of the cross-entropy.")
    flip: bool = option(True, "Random horizontal flips.")
    translate: int = option(1, "Random shifts of up to this many pixels (reflect padding).")
    cutout: int = option(0, "Paint a random square of this side with the mean colour (0: off).")
    ema: float = option(0.0, "Evaluate and ship an exponential moving average of the weights with this "
                             "decay per step (0: off).")
    lookahead: bool = option(False, "Lookahead averaging (airbench): every 5 steps the weights are pulled to "
                                    "their running average, whose decay grows as the cube of the progress; "
                                    "the average is evaluated and shipped.")
    alternate_flip: bool = option(False, "Flip each image in every other epoch (at random in the first) "
                                         "instead of at random each time.")
    norm_bias_lr: float = option(1.0, "Learning-rate multiplier of the batch-norm biases (their weight decay "
                                      "is divided by it, so they decay as fast as the rest).")
    freeze_norm_scale: bool = option(False, "Do not train the batch-norm scales (a fresh net's are 1): only "
                                            "their biases learn.")
    lr_end: float = option(0.01, "Learning rate at the last step, as a fraction of the peak.")
    val_every: int = option(1, "Validate after every N-th epoch (and always after the last).")
    seed: int = option(0, "Seed for initialisation, shuffling and augmentation.")
    device: str = option("cpu", "cpu | cuda (data and augmentation then live on the GPU).")
    bf16: bool = option(False, "bfloat16 autocast for the training steps (validation stays fp32).")
    threads: int = option(0, "Torch CPU threads (0: torch's default).")
    preprocess: str = option("", "Train on transformed images, e.g. fft-lowpass:0.5 (to fuse at export).")
    init: str = option("", "Start from these weights (fine-tuning) instead of a fresh net.")

    model = "cifar-cnn"               # class attribute, not a field: the command names the model

    def validate(self) -> None:
        _check(bool(self.data), "--data is required")
        _check(Path(self.data).is_dir(), f"{self.data}: not a folder")
        _check(self.epochs >= 1, f"--epochs must be ≥ 1, got {self.epochs}")
        _check(self.batch_size >= 2, f"--batch-size must be ≥ 2, got {self.batch_size}")
        _check(self.optimizer in ("adamw", "sgd"), f"--optimizer must be adamw or sgd, got {self.optimizer}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"--weight-decay must be ≥ 0, got {self.weight_decay}")
        _check(0 <= self.warmup < 1, f"--warmup must be in [0, 1), got {self.warmup}")
        _check(self.schedule in ("cosine", "linear"), f"--schedule must be cosine or linear, got {self.schedule}")
        _check(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(0 <= self.translate <= 8, f"--translate must be in 0..8, got {self.translate}")
        _check(0 <= self.cutout <= 32, f"--cutout must be in 0..32, got {self.cutout}")
        _check(0 <= self.ema < 1, f"--ema must be in [0, 1), got {self.ema}")
        _check(not (self.ema and self.lookahead), "--ema and --lookahead are two weight averages: choose one")
        _check(self.val_every >= 1, f"--val-every must be ≥ 1, got {self.val_every}")
        _check(self.norm_bias_lr > 0, f"--norm-bias-lr must be > 0, got {self.norm_bias_lr}")
        _check(0 < self.lr_end <= 1, f"--lr-end must be in (0, 1], got {self.lr_end}")
        _check(self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device}")
        _check(self.threads >= 0, f"--threads must be ≥ 0, got {self.threads}")
        _check(not self.init or Path(self.init).is_file(), f"{self.init}: weights not found")


@dataclass
class ResNetConfig(ClassifierConfig):
    """cifar-resnet: airbench's optimiser on a residual net (models/README.md) — SGD-Nesterov at
    batch 1,024, batch-norm biases at 64× the learning rate, Lookahead averaging, label smoothing,
    alternating flips and translations, bf16 autocast."""

    epochs: int = 18
    batch_size: int = 1024
    optimizer: str = "sgd"
    lr: float = 1.5
    momentum: float = 0.85
    weight_decay: float = 1.33e-3
    warmup: float = 0.23
    schedule: str = "linear"
    lr_end: float = 0.07
    label_smoothing: float = 0.2
    translate: int = 2
    cutout: int = 0
    lookahead: bool = True
    alternate_flip: bool = True
    norm_bias_lr: float = 64.0
    freeze_norm_scale: bool = True
    val_every: int = 3
    bf16: bool = True

    model = "cifar-resnet"


@dataclass
class GanConfig:
    data: str = option("", "Flat folder of images (any size; resized to 64×64).")
    epochs: int = option(10, "Epochs over the training faces.")
    batch_size: int = option(64, "Mini-batch size.")
    lr: float = option(2e-4, "Adam learning rate of the generator (and of the discriminator unless --lr-d).")
    beta1: float = option(0.5, "Adam β1.")
    lr_d: float = option(0.0, "The discriminator's Adam learning rate (0: --lr).")
    loss: str = option("bce", "Adversarial loss: bce (the paper's, non-saturating for the generator) | hinge.")
    spectral_norm: bool = option(False, "Spectral normalisation of the discriminator's convolutions, in place of "
                                        "its batch norm (Miyato et al. 2018).")
    decay_from: float = option(1.0, "Fraction of the steps after which both learning rates fall linearly "
                                    "to zero (1: constant).")
    # Averages with decays 0.99–0.999 scored far worse on the quality measure here (models/README.md).
    ema: float = option(0.0, "Ship an average of the generator's weights with this decay instead of the "
                             "generator as trained (0: off).")
    bn_batches: int = option(50, "Batches of 128 fresh latents that re-estimate the shipped generator's batch-norm "
                                 "statistics (0: keep the running averages of training; not with --ema).")
    holdout: int = option(2000, "Last N images (by name) kept out of training for the quality measure.")
    seed: int = option(0, "Seed for initialisation, shuffling and latents.")
    threads: int = option(0, "Torch CPU threads (0: torch's default).")
    samples_dir: str = option("runs/dcgan", "Where the per-epoch sample grids go.")

    model = "dcgan"

    def validate(self) -> None:
        _check(bool(self.data), "--data is required")
        _check(Path(self.data).is_dir(), f"{self.data}: not a folder")
        _check(self.epochs >= 1, f"--epochs must be ≥ 1, got {self.epochs}")
        _check(self.batch_size >= 2, f"--batch-size must be ≥ 2, got {self.batch_size}")
        _check(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        _check(0 <= self.beta1 < 1, f"--beta1 must be in [0, 1), got {self.beta1}")
        _check(self.lr_d >= 0, f"--lr-d must be ≥ 0, got {self.lr_d}")
        _check(self.loss in ("bce", "hinge"), f"--loss must be bce or hinge, got {self.loss!r}")
        _check(0 <= self.decay_from <= 1, f"--decay-from must be in [0, 1], got {self.decay_from}")
        _check(0 <= self.ema < 1, f"--ema must be in [0, 1), got {self.ema}")
        _check(self.bn_batches >= 0, f"--bn-batches must be ≥ 0, got {self.bn_batches}")
        _check(self.bn_batches >= 1 or not self.ema, "--ema needs --bn-batches ≥ 1: an average of weights has no "
                                                     "batch-norm statistics of its own")
        _check(self.holdout >= 0, f"--holdout must be ≥ 0, got {self.holdout}")
        _check(self.threads >= 0, f"--threads must be ≥ 0, got {self.threads}")
        _check(not Path(self.samples_dir).is_file(), f"{self.samples_dir}: is a file, not a folder")


def check_outputs(out: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None,
                  resume: bool) -> tuple[Path, Path]:
    """The output and checkpoint paths, refused before any work if they cannot be written."""
    out = Path(out)
    ckpt = Path(checkpoint) if checkpoint else out.with_suffix(".ckpt.safetensors")
    for path, what in ((out, "--out"), (ckpt, "--checkpoint")):
        _check(not path.is_dir(), f"{what} {path}: is a folder; give a file name")
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        _check(parent is not None and parent.is_dir(), f"{what} {path}: its folder cannot be created")
    _check(out.absolute() != ckpt.absolute(), "--checkpoint must differ from --out")
    _check(not resume or ckpt.is_file(), f"{ckpt}: no checkpoint to resume from")
    return out, ckpt
