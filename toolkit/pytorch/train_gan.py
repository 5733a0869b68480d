"""DCGAN training on a flat folder of images, on the shared loop (toolkit/pytorch/loop.py).

    toolkit train dcgan --data data/anime-faces-64/faces --epochs 10

Writes a sample grid per epoch (`--samples-dir`) and the generator's weights to `--out`. Under
torchrun each rank takes its share of every global batch of faces and of its latents, drawn in
full by every rank from the same generator (toolkit/pytorch/distributed.py).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import toolkit.zoo as zoo
from toolkit._version import __version__
from toolkit.edge.data.datasets import read_flat_folder
from toolkit.edge.data.images import list_images, make_grid, save_image
from toolkit.pytorch import distributed
from toolkit.pytorch.checkpoint import (
    atomic_save_tensors,
    optimizer_tensors,
    prefixed,
    restore_optimizer,
    unprefixed,
)
from toolkit.pytorch.loop import Position, console, run
from toolkit.pytorch.train_classifier import ema_step, read_images
from toolkit.recipes import GanConfig, check_outputs


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


def gan_lr(cfg: GanConfig, step: int, total: int) -> float:
    """The learning rate of both networks: constant, then falling linearly to zero over the steps
    after `decay_from` of the run."""
    start = cfg.decay_from * total
    return cfg.lr if step < start else cfg.lr * (total - step) / max(1.0, total - start)


def update_average(average: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """One step of the generator's weight average (its parameters; batch-norm statistics are
    re-estimated when it is shipped), with the classifier's warm-up of the decay (`ema_step`)."""
    ema_step(list(average.parameters()), list(model.parameters()), decay, step)


def _training_faces(cfg: GanConfig, n: int) -> int:
    """How many of `n` faces are trained on: the last `holdout` are kept out when there are enough."""
    return n - cfg.holdout if cfg.holdout and n > 2 * cfg.holdout else n


class GanTask:
    name = "dcgan"

    def __init__(self, cfg: GanConfig, faces: np.ndarray):
        from toolkit.pytorch.nets.dcgan import Discriminator
        self.cfg, self.batch_size = cfg, cfg.batch_size
        self.spec = zoo.DCGAN
        self.faces = torch.from_numpy(faces)
        self.steps_per_epoch = len(faces) // cfg.batch_size          # drop the last partial batch: batch norm
        torch.manual_seed(cfg.seed)
        self.G, self.D = self.spec.build(), Discriminator(spectral_norm=cfg.spectral_norm)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d or cfg.lr, betas=(cfg.beta1, 0.999))
        self.fixed_z = torch.randn(64, self.spec.latent_dim, generator=torch.Generator().manual_seed(1234))
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        share = cfg.batch_size // distributed.world().size
        self.ones, self.zeros = torch.ones(share), torch.zeros(share)
        self.order = torch.empty(0, dtype=torch.long)
        cpu = torch.device("cpu")
        self.G_train, self.D_train = distributed.data_parallel(self.G, cpu), distributed.data_parallel(self.D, cpu)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tg, groups_g = optimizer_tensors("g", self.opt_g)
        td, groups_d = optimizer_tensors("d", self.opt_d)
        tensors = {**prefixed("generator", self.G.state_dict()), **prefixed("discriminator", self.D.state_dict()),
                   **prefixed("generator_ema", self.G_ema.state_dict()), **tg, **td,
                   "rng.noise": self.noise_gen.get_state()}
        return tensors, {"param_groups_g": groups_g, "param_groups_d": groups_d}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.G.load_state_dict(unprefixed("generator", tensors))
        self.D.load_state_dict(unprefixed("discriminator", tensors))
        self.G_ema.load_state_dict(unprefixed("generator_ema", tensors))
        restore_optimizer("g", self.opt_g, tensors, meta["param_groups_g"])
        restore_optimizer("d", self.opt_d, tensors, meta["param_groups_d"])
        for group in self.opt_g.param_groups + self.opt_d.param_groups:
            # The command line wins over the checkpoint: resuming with a lower --lr is how a
            # run that oscillates is settled.
            group["lr"], group["betas"] = self.cfg.lr, (self.cfg.beta1, group["betas"][1])
        self.noise_gen.set_state(tensors["rng.noise"])

    def begin_epoch(self, epoch: int) -> None:
        shuffle = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        self.order = torch.randperm(len(self.faces), generator=shuffle)
        self.G.train()
        self.D.train()

    def step(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        cfg, G, D = self.cfg, self.G_train, self.D_train
        first = step * cfg.batch_size
        share = distributed.world().share(first, first + cfg.batch_size)
        real = to_model_range(self.faces[self.order[share]])
        z = torch.randn(cfg.batch_size, self.spec.latent_dim, generator=self.noise_gen)
        fake = G(z[share.start - first:share.stop - first])
        lr = gan_lr(cfg, epoch * self.steps_per_epoch + step, cfg.epochs * self.steps_per_epoch)
        for group in self.opt_g.param_groups:
            group["lr"] = lr
        for group in self.opt_d.param_groups:
            group["lr"] = lr * (cfg.lr_d or cfg.lr) / cfg.lr
        loss_d = self._loss_d(D(real), D(fake.detach()))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        loss_g = self._loss_g(D(fake))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        if cfg.ema:
            update_average(self.G_ema, self.G, cfg.ema, epoch * self.steps_per_epoch + step)
        return {"D": loss_d.detach(), "G": loss_g.detach()}

    def _loss_d(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Real → 1 and fake → 0 (bce), or real ≥ 1 and fake ≤ −1 (hinge)."""
        if self.cfg.loss == "hinge":
            return self._mean(F.relu(1.0 - real)) + self._mean(F.relu(1.0 + fake))
        return self._mean(F.binary_cross_entropy_with_logits(real, self.ones, reduction="none")) + \
            self._mean(F.binary_cross_entropy_with_logits(fake, self.zeros, reduction="none"))

    def _loss_g(self, fake: torch.Tensor) -> torch.Tensor:
        """The non-saturating loss of Goodfellow et al. (bce), or the fake's negated score (hinge)."""
        if self.cfg.loss == "hinge":
            return self._mean(-fake)
        return self._mean(F.binary_cross_entropy_with_logits(fake, self.ones, reduction="none"))

    def _mean(self, per_sample: torch.Tensor) -> torch.Tensor:
        return distributed.share_loss(per_sample, self.cfg.batch_size)

    def end_epoch(self, epoch: int, averages: dict[str, float]) -> dict[str, Any]:
        # Two grids: the generator as trained, and the weight average that is shipped (it needs
        # ~3,000 steps before it stops looking like its random start).
        samples_dir = Path(self.cfg.samples_dir)
        self.G.eval()
        with torch.no_grad():
            path = save_image(make_grid(to_uint8(self.G(self.fixed_z)), ncols=8),
                              samples_dir / f"epoch_{epoch + 1:03d}.png")
            if self.cfg.ema:
                save_image(make_grid(to_uint8(self.shipped_generator()(self.fixed_z)), ncols=8),
                           samples_dir / f"epoch_{epoch + 1:03d}_ema.png")
        return {"loss_d": round(averages.get("D", float("nan")), 4),
                "loss_g": round(averages.get("G", float("nan")), 4), "samples": str(path)}

    def shipped_generator(self) -> torch.nn.Module:
        """The generator as trained, or its weight average (--ema), with batch-norm statistics
        re-estimated for its final weights (--bn-batches; 0 keeps the running averages of training,
        which lag weights that move fast: up to twice as far from real faces on the quality measure)."""
        generator = self.G_ema if self.cfg.ema else self.G
        if not self.cfg.bn_batches:
            generator.eval()
            return generator
        return self.recalibrated(generator)

    def recalibrated(self, generator: torch.nn.Module) -> torch.nn.Module:
        """A copy of `generator` with batch-norm statistics re-estimated as the shipped average's are."""
        final = copy.deepcopy(generator)
        recalibrate_batchnorm(final, self.spec.latent_dim, batches=self.cfg.bn_batches, seed=self.cfg.seed)
        return final


def train_gan(cfg: GanConfig, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
              resume: bool = False, *, on_step: Callable[[Position], None] | None = None,
              quiet: bool = False) -> dict[str, Any]:
    """Train the DCGAN on a flat folder of images (any size, resized to 64×64). Under torchrun,
    rank 0 writes and returns the summary; the other ranks return {}."""
    cfg.validate()
    out_path, ckpt = check_outputs(out, checkpoint, resume)
    # Counted before decoding anything: a folder with fewer faces than one batch is refused at once.
    listed = _training_faces(cfg, len(list_images(cfg.data)))
    if listed < cfg.batch_size:
        raise ValueError(f"{cfg.data}: {listed} training images, fewer than one batch of {cfg.batch_size}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with distributed.joined("cpu", cfg.threads) as world:
        world.check_batch(cfg.batch_size)
        console.quiet = console.quiet or not world.main       # a torchrun worker: rank 0 speaks for all
        faces = read_images(read_flat_folder, cfg.data, zoo.DCGAN.input_size)
        faces = faces[:_training_faces(cfg, len(faces))]
        if len(faces) < cfg.batch_size:
            raise ValueError(f"{cfg.data}: {len(faces)} readable training images, fewer than one batch of "
                             f"{cfg.batch_size}")
        if not quiet and world.main:
            console.print(f"dcgan: {len(faces):,} training images (last {cfg.holdout:,} held out); "
                          f"{torch.get_num_threads()} threads{world.note}")
        task = GanTask(cfg, faces)
        pos = run(task, cfg.epochs, ckpt, asdict(cfg), resume, on_step=on_step, quiet=quiet, show_every=5)
        if not world.main:
            return {}
    final = task.shipped_generator()
    summary = {"model": task.name, "epochs": cfg.epochs,
               "images_seen": pos.epoch * task.steps_per_epoch * cfg.batch_size,
               "train_seconds": round(pos.elapsed_s, 1), "history": pos.history, "config": asdict(cfg),
               "processes": world.size, "toolkit_version": __version__, "torch_version": torch.__version__}
    atomic_save_tensors(prefixed("model", final.state_dict()), out_path, summary)
    if not quiet:
        console.print(f"wrote {out_path}")
    return summary
