"""Training loops for the toolkit's networks, with safetensors checkpoints and resume.

    toolkit train cifar-cnn --data data/cifar10-jpeg/train --epochs 5 --out models/cifar_cnn.safetensors
    toolkit train dcgan --data data/anime-faces-64/faces --epochs 10 --out models/dcgan.safetensors

A checkpoint (`--checkpoint`, default next to `--out`) holds the weights, the optimizer state,
the RNG state and the position in the epoch; it is written atomically at every epoch end and
on Ctrl-C, and `--resume` continues from it bit-for-bit on the same machine.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from toolkit import __version__, zoo
from toolkit.core.data import read_flat_folder, read_labelled, split_indices
from toolkit.build.checkpoint import (atomic_save_tensors, load_tensors, load_weights, optimizer_tensors, prefixed,
                                      restore_optimizer, unprefixed)
from toolkit.build.nets.layers import Classifier

console = Console(stderr=True)


# ----------------------------------------------------------------------------- helpers

def lr_one_cycle(step: int, total: int, peak: float, warmup: float = 0.25, final_div: float = 100.0) -> float:
    """Linear warm-up to `peak` over the first `warmup` of the steps, then cosine down to peak/final_div."""
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (0.1 + 0.9 * step / w)
    t = min(1.0, (step - w) / max(1, total - w))
    low = peak / final_div
    return low + (peak - low) * 0.5 * (1 + math.cos(math.pi * t))


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, transient=False)


def augment(images: torch.Tensor, flip: bool, translate: int, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and integer shifts (reflect padding) on a uint8 NHWC batch."""
    n = images.shape[0]
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        images = torch.where(mask.view(n, 1, 1, 1), images.flip(2), images)
    if translate > 0:
        h, w = images.shape[1:3]
        padded = F.pad(images.permute(0, 3, 1, 2).float(), (translate,) * 4, mode="reflect")
        dy = torch.randint(0, 2 * translate + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * translate + 1, (n,), generator=gen)
        out = torch.empty_like(images)
        for sy in range(2 * translate + 1):
            for sx in range(2 * translate + 1):
                sel = torch.nonzero((dy == sy) & (dx == sx)).flatten()
                if len(sel):
                    out[sel] = padded[sel, :, sy:sy + h, sx:sx + w].permute(0, 2, 3, 1).to(images.dtype)
        images = out
    return images


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(torch.from_numpy(images[i:i + batch_size]))
        correct += int((logits.argmax(1).numpy() == labels[i:i + batch_size]).sum())
    return correct / max(1, len(labels))


def _read_images(reader, folder: str, size: tuple[int, int]):
    """Run a data reader with a progress bar; unreadable files are skipped and named (the first five)."""
    errors: list[str] = []
    with _progress() as progress:
        task = progress.add_task("reading images", total=None, info="")
        result = reader(folder, size=size, on_error=errors.append, progress=lambda k: progress.advance(task, k))
        progress.remove_task(task)
    for e in errors[:5]:
        console.print(f"[yellow]skipped[/] {e}")
    if len(errors) > 5:
        console.print(f"[yellow]skipped[/] {len(errors) - 5} more unreadable files")
    return result


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


class Interrupted(Exception):
    """Training was stopped with Ctrl-C; a resumable checkpoint was written."""


# ----------------------------------------------------------------------------- CIFAR CNN

@dataclass
class ClassifierConfig:
    data: str
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup: float = 0.25
    label_smoothing: float = 0.0
    flip: bool = True
    translate: int = 0
    seed: int = 0
    threads: int = 0
    preprocess: str = ""          # e.g. "fft-lowpass:0.5": train on transformed images (fine-tuning for fusion)
    init: str = ""                # start from these weights instead of a fresh initialisation


def train_classifier(cfg: ClassifierConfig, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                     resume: bool = False) -> dict:
    """Train the paper's CNN on the fixed training part of `cfg.data`, validating every epoch."""
    spec = zoo.CIFAR_CNN
    out = Path(out)
    checkpoint = Path(checkpoint) if checkpoint else out.with_suffix(".ckpt.safetensors")
    _set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    data = _read_images(read_labelled, cfg.data, size=spec.input_size)
    if data.class_names != spec.labels:
        raise ValueError(f"{cfg.data}: classes {data.class_names} do not match the model's labels {spec.labels}")
    train_idx, val_idx = split_indices(data.labels)
    x_train, y_train = torch.from_numpy(data.images[train_idx]), torch.from_numpy(data.labels[train_idx])
    x_val, y_val = data.images[val_idx], data.labels[val_idx]
    console.print(f"cifar-cnn: {len(train_idx):,} training, {len(val_idx):,} validation images; "
                  f"{torch.get_num_threads()} threads")

    model = Classifier(spec.build(), spec.mean, spec.std)
    if cfg.init:
        load_weights(model.net, cfg.init)
    forward = model
    if cfg.preprocess:
        from toolkit.build.nets.spectral import transform_module
        from toolkit.core.ops import parse_preprocess
        op, params = parse_preprocess(cfg.preprocess)
        forward = torch.nn.Sequential(transform_module(op, params, "matmul", spec.input_size), model)
    decay = [p for n, p in model.net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.net.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = math.ceil(len(y_train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)

    epoch, step_in_epoch, history, elapsed = 0, 0, [], 0.0
    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: no checkpoint to resume from")
        tensors, meta = load_tensors(checkpoint)
        model.net.load_state_dict(unprefixed("model", tensors))
        restore_optimizer("opt", opt, tensors, meta["param_groups"])
        aug_gen.set_state(tensors["rng.augment"])
        torch.set_rng_state(tensors["rng.torch"])
        epoch, step_in_epoch, history, elapsed = meta["epoch"], meta["step_in_epoch"], meta["history"], meta["elapsed_s"]
        console.print(f"resumed from {checkpoint} at epoch {epoch + 1}, step {step_in_epoch}")

    def save_ckpt(ep: int, step: int) -> None:
        opt_tensors, groups = optimizer_tensors("opt", opt)
        tensors = {**prefixed("model", model.net.state_dict()), **opt_tensors,
                   "rng.augment": aug_gen.get_state(), "rng.torch": torch.get_rng_state()}
        atomic_save_tensors(tensors, checkpoint, {
            "model": spec.name, "epoch": ep, "step_in_epoch": step, "history": history,
            "elapsed_s": elapsed, "param_groups": groups, "config": asdict(cfg)})

    with _progress() as progress:
        while epoch < cfg.epochs:
            order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                     completed=step_in_epoch, info="")
            model.train()
            t0, seen, loss_avg = time.perf_counter(), 0, None
            try:
                for step in range(step_in_epoch, steps_per_epoch):
                    idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                    xb = augment(x_train[idx], cfg.flip, cfg.translate, aug_gen)
                    lr = lr_one_cycle(epoch * steps_per_epoch + step, total_steps, cfg.lr, cfg.warmup)
                    for g in opt.param_groups:
                        g["lr"] = lr
                    loss = F.cross_entropy(forward(xb), y_train[idx], label_smoothing=cfg.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    seen += len(idx)
                    loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
                    if step % 10 == 0:
                        rate = seen / (time.perf_counter() - t0)
                        progress.update(task, completed=step + 1, info=f"loss {loss_avg:.3f}  {rate:,.0f} img/s  lr {lr:.2e}")
                    step_in_epoch = step + 1
            except KeyboardInterrupt:
                elapsed += time.perf_counter() - t0
                save_ckpt(epoch, step_in_epoch)
                raise Interrupted(f"interrupted; resumable checkpoint written to {checkpoint} (use --resume)") from None
            elapsed += time.perf_counter() - t0
            progress.update(task, completed=steps_per_epoch)
            acc = evaluate_classifier(forward, x_val, y_val)
            history.append({"epoch": epoch + 1, "loss": round(loss_avg or 0.0, 4), "val_accuracy": round(acc, 4),
                            "elapsed_s": round(elapsed, 1)})
            console.print(f"epoch {epoch + 1}: loss {loss_avg:.3f}, validation accuracy {acc:.2%}, {elapsed:.0f} s")
            epoch, step_in_epoch = epoch + 1, 0
            save_ckpt(epoch, 0)

    summary = {"model": spec.name, "val_accuracy": history[-1]["val_accuracy"], "epochs": cfg.epochs,
               "train_seconds": round(elapsed, 1), "history": history, "config": asdict(cfg),
               "toolkit_version": __version__, "torch_version": torch.__version__}
    atomic_save_tensors(prefixed("model", model.net.state_dict()), out, summary)
    console.print(f"wrote {out} (validation accuracy {summary['val_accuracy']:.2%})")
    return summary


# ----------------------------------------------------------------------------- DCGAN

@dataclass
class GanConfig:
    data: str
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    ema: float = 0.0              # ship a weight average with this decay instead of the raw generator (0: off);
                                  # 0.999 scored far worse on the quality measure here (models/README.md)
    bn_batches: int = 50          # batches of 128 latents that re-estimate the average's batch-norm statistics
    holdout: int = 2000           # the last N faces (by file name) are kept out for the quality measure
    seed: int = 0
    threads: int = 0
    samples_dir: str = "runs/dcgan"


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [-1, 1], the generator's output range."""
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator output in [-1, 1], NCHW → uint8 NHWC (the same arithmetic as the ONNX graph)."""
    x = ((images + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


@torch.no_grad()
def recalibrate_batchnorm(generator: torch.nn.Module, latent_dim: int, batches: int = 50, batch_size: int = 128,
                          seed: int = 0) -> None:
    """Averaged weights need batch-norm statistics of their own: re-estimate them from fresh latents."""
    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None           # cumulative average over the recalibration batches
    generator.train()
    for _ in range(batches):
        generator(torch.randn(batch_size, latent_dim, generator=gen))
    for m in bns:
        m.momentum = 0.1
    generator.eval()


def train_gan(cfg: GanConfig, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
              resume: bool = False) -> dict:
    """Train the DCGAN on a flat folder of images (any size, resized to 64×64)."""
    import copy

    from toolkit.core.data import make_grid, save_image
    from toolkit.build.nets.dcgan import Discriminator

    spec = zoo.DCGAN
    out = Path(out)
    checkpoint = Path(checkpoint) if checkpoint else out.with_suffix(".ckpt.safetensors")
    samples_dir = Path(cfg.samples_dir)
    _set_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    faces = _read_images(read_flat_folder, cfg.data, size=spec.input_size)
    if cfg.holdout and len(faces) > 2 * cfg.holdout:
        faces = faces[:-cfg.holdout]
    faces_t = torch.from_numpy(faces)
    console.print(f"dcgan: {len(faces):,} training images (last {cfg.holdout:,} held out); {torch.get_num_threads()} threads")

    G, D = spec.build(), Discriminator()
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    fixed_z = torch.randn(64, spec.latent_dim, generator=torch.Generator().manual_seed(1234))
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    steps_per_epoch = len(faces) // cfg.batch_size          # drop the last partial batch: batch norm
    epoch, step_in_epoch, history, elapsed = 0, 0, [], 0.0

    if resume:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: no checkpoint to resume from")
        tensors, meta = load_tensors(checkpoint)
        G.load_state_dict(unprefixed("generator", tensors))
        D.load_state_dict(unprefixed("discriminator", tensors))
        G_ema.load_state_dict(unprefixed("generator_ema", tensors))
        restore_optimizer("g", opt_g, tensors, meta["param_groups_g"])
        restore_optimizer("d", opt_d, tensors, meta["param_groups_d"])
        for group in opt_g.param_groups + opt_d.param_groups:
            # The command line wins over the checkpoint: resuming with a lower --lr is how a
            # run that oscillates is settled.
            group["lr"], group["betas"] = cfg.lr, (cfg.beta1, group["betas"][1])
        noise_gen.set_state(tensors["rng.noise"])
        torch.set_rng_state(tensors["rng.torch"])
        epoch, step_in_epoch, history, elapsed = meta["epoch"], meta["step_in_epoch"], meta["history"], meta["elapsed_s"]
        console.print(f"resumed from {checkpoint} at epoch {epoch + 1}, step {step_in_epoch}")

    def save_ckpt(ep: int, step: int) -> None:
        tg, groups_g = optimizer_tensors("g", opt_g)
        td, groups_d = optimizer_tensors("d", opt_d)
        tensors = {**prefixed("generator", G.state_dict()), **prefixed("discriminator", D.state_dict()),
                   **prefixed("generator_ema", G_ema.state_dict()), **tg, **td,
                   "rng.noise": noise_gen.get_state(), "rng.torch": torch.get_rng_state()}
        atomic_save_tensors(tensors, checkpoint, {
            "model": spec.name, "epoch": ep, "step_in_epoch": step, "history": history, "elapsed_s": elapsed,
            "param_groups_g": groups_g, "param_groups_d": groups_d, "config": asdict(cfg)})

    def shipped_generator() -> torch.nn.Module:
        if not cfg.ema:
            G.eval()
            return G
        final = copy.deepcopy(G_ema)
        recalibrate_batchnorm(final, spec.latent_dim, batches=cfg.bn_batches, seed=cfg.seed)
        return final

    ones = torch.ones(cfg.batch_size)
    zeros = torch.zeros(cfg.batch_size)
    with _progress() as progress:
        while epoch < cfg.epochs:
            order = torch.randperm(len(faces), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            task = progress.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=steps_per_epoch,
                                     completed=step_in_epoch, info="")
            G.train()
            D.train()
            t0, seen, loss_d_avg, loss_g_avg = time.perf_counter(), 0, 0.0, 0.0
            try:
                for step in range(step_in_epoch, steps_per_epoch):
                    real = to_model_range(faces_t[order[step * cfg.batch_size:(step + 1) * cfg.batch_size]])
                    z = torch.randn(cfg.batch_size, spec.latent_dim, generator=noise_gen)
                    fake = G(z)
                    # Discriminator: real → 1, fake → 0.
                    loss_d = (F.binary_cross_entropy_with_logits(D(real), ones)
                              + F.binary_cross_entropy_with_logits(D(fake.detach()), zeros))
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    # Generator: the non-saturating loss of Goodfellow et al.
                    loss_g = F.binary_cross_entropy_with_logits(D(fake), ones)
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward()
                    opt_g.step()
                    if cfg.ema:
                        with torch.no_grad():
                            for pe, p in zip(G_ema.parameters(), G.parameters()):
                                pe.lerp_(p, 1.0 - cfg.ema)
                    seen += cfg.batch_size
                    loss_d_avg = 0.95 * loss_d_avg + 0.05 * loss_d.item() if step else loss_d.item()
                    loss_g_avg = 0.95 * loss_g_avg + 0.05 * loss_g.item() if step else loss_g.item()
                    if step % 5 == 0:
                        rate = seen / (time.perf_counter() - t0)
                        progress.update(task, completed=step + 1,
                                        info=f"D {loss_d_avg:.3f}  G {loss_g_avg:.3f}  {rate:,.0f} img/s")
                    step_in_epoch = step + 1
            except KeyboardInterrupt:
                elapsed += time.perf_counter() - t0
                save_ckpt(epoch, step_in_epoch)
                raise Interrupted(f"interrupted; resumable checkpoint written to {checkpoint} (use --resume)") from None
            elapsed += time.perf_counter() - t0
            progress.update(task, completed=steps_per_epoch)
            history.append({"epoch": epoch + 1, "loss_d": round(loss_d_avg, 4), "loss_g": round(loss_g_avg, 4),
                            "elapsed_s": round(elapsed, 1)})
            # Two grids: the generator as trained, and the weight average that is shipped (it needs
            # ~3,000 steps before it stops looking like its random start).
            G.eval()
            with torch.no_grad():
                sample_path = save_image(make_grid(to_uint8(G(fixed_z)), ncols=8),
                                         samples_dir / f"epoch_{epoch + 1:03d}.png")
                if cfg.ema:
                    save_image(make_grid(to_uint8(shipped_generator()(fixed_z)), ncols=8),
                               samples_dir / f"epoch_{epoch + 1:03d}_ema.png")
            console.print(f"epoch {epoch + 1}: D {loss_d_avg:.3f}, G {loss_g_avg:.3f}, {elapsed:.0f} s; samples {sample_path}")
            epoch, step_in_epoch = epoch + 1, 0
            save_ckpt(epoch, 0)

    final = shipped_generator()
    summary = {"model": spec.name, "epochs": epoch + step_in_epoch / steps_per_epoch,
               "images_seen": (epoch * steps_per_epoch + step_in_epoch) * cfg.batch_size,
               "train_seconds": round(elapsed, 1), "history": history, "config": asdict(cfg),
               "toolkit_version": __version__, "torch_version": torch.__version__}
    atomic_save_tensors(prefixed("model", final.state_dict()), out, summary)
    console.print(f"wrote {out}")
    return summary
