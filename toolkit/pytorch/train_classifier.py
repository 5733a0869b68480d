"""Classifier training: the paper's CNN (`cifar-cnn`) and the residual net (`cifar-resnet`).

    toolkit train cifar-cnn --data data/cifar10-png/train
    toolkit train cifar-resnet --data data/cifar10-png/train [--device cuda]

One recipe skeleton for both, set by the config (toolkit/recipes.py): AdamW or SGD-Nesterov,
warm-up then cosine or linear decay, label smoothing, flip + translate augmentation, optional
weight averaging. The training images live as one uint8 NHWC tensor on the training device and
are augmented there, batch by batch, from random numbers drawn on the CPU once per epoch — the
same numbers on every device. Under torchrun each rank takes its contiguous share of every
global batch of that plan (toolkit/pytorch/distributed.py).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import toolkit.zoo as zoo
from toolkit._version import __version__
from toolkit.edge.data.datasets import (
    LabelledImages,
    is_cifar_batches,
    read_labelled,
    split_indices,
)
from toolkit.pytorch import distributed
from toolkit.pytorch.checkpoint import (
    atomic_save_tensors,
    load_weights,
    optimizer_tensors,
    prefixed,
    restore_optimizer,
    unprefixed,
)
from toolkit.pytorch.loop import Position, console, run
from toolkit.pytorch.nets.layers import Classifier
from toolkit.recipes import ClassifierConfig, check_outputs


def lr_schedule(step: int, total: int, peak: float, warmup: float = 0.25, shape: str = "cosine",
                final_div: float = 100.0) -> float:
    """Linear warm-up from peak/10 over the first `warmup` of the steps, then a cosine or linear
    decay to peak/final_div."""
    w = max(1, int(total * warmup))
    if step < w:
        return peak * (0.1 + 0.9 * step / w)
    t = min(1.0, (step - w) / max(1, total - w))
    low = peak / final_div
    fraction = 0.5 * (1 + math.cos(math.pi * t)) if shape == "cosine" else 1.0 - t
    return low + (peak - low) * fraction


@torch.no_grad()
def ema_step(average: list[torch.Tensor], current: list[torch.Tensor], decay: float, step: int) -> None:
    """One step of an exponential moving average of `current` into `average`, with the usual warm-up
    of the decay, min(decay, (1 + step) / (10 + step)): early on the average follows the weights
    closely instead of keeping its random start."""
    torch._foreach_lerp_(average, current, 1.0 - min(decay, (1 + step) / (10 + step)))


def epoch_plan(n: int, seed: int, epoch: int, translate: int, cutout: int = 0,
               size: tuple[int, int] = (32, 32), alternate_flip: bool = False) -> dict[str, torch.Tensor]:
    """The random choices of one epoch, drawn up front from (seed, epoch): the order of the images,
    a flip bit, a shift and a cutout centre per position. Nothing random is left to draw mid-epoch,
    so a resumed epoch replays exactly, and no step waits for the host to send random numbers.
    With `alternate_flip` each image is flipped in every other epoch: a fair coin per image drawn
    once from the seed decides the first epoch, and odd epochs invert it."""
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    plan = {"order": torch.randperm(n, generator=gen), "flip": torch.rand(n, generator=gen) < 0.5,
            "shift": torch.randint(0, 2 * translate + 1, (2, n), generator=gen)}
    if alternate_flip:
        first = torch.rand(n, generator=torch.Generator().manual_seed(seed * 1000 - 1)) < 0.5
        plan["flip"] = first[plan["order"]] ^ bool(epoch % 2)
    if cutout:
        plan["centre"] = torch.stack([torch.randint(0, size[0], (n,), generator=gen),
                                      torch.randint(0, size[1], (n,), generator=gen)])
    return plan


def cut_out(images: torch.Tensor, centre: torch.Tensor, size: int, fill: torch.Tensor) -> torch.Tensor:
    """Paint a size×size square (clipped at the borders) centred at `centre` [2, N] with `fill` [3]."""
    h, w = images.shape[1:3]
    ys = torch.arange(h, device=images.device)[None, :] - centre[0][:, None] + size // 2     # n, h
    xs = torch.arange(w, device=images.device)[None, :] - centre[1][:, None] + size // 2     # n, w
    inside = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]
    return torch.where(inside[..., None], fill, images)


def augment(images: torch.Tensor, flip: torch.Tensor | None, shift: torch.Tensor | None,
            translate: int) -> torch.Tensor:
    """Horizontal flips where `flip` [N] is set, and shifts by `shift` [2, N] − translate pixels
    (reflect padding), of a uint8 NHWC batch on any device."""
    n, h, w, _ = images.shape
    device = images.device
    if flip is not None:
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(2), images)
    if shift is not None and translate > 0:
        padded = F.pad(images.permute(0, 3, 1, 2).float(), (translate,) * 4, mode="reflect")
        rows = shift[0][:, None] + torch.arange(h, device=device)                # n, h
        cols = shift[1][:, None] + torch.arange(w, device=device)                # n, w
        batch = torch.arange(n, device=device)[:, None, None]
        # Advanced indices around a slice: the result is n, h, w, C — NHWC again.
        images = padded[batch, :, rows[:, :, None], cols[:, None, :]].to(torch.uint8)
    return images


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in fp32 (what the exported model computes), batch norm in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        logits = model(images[i:i + batch_size])
        correct += int((logits.argmax(1) == labels[i:i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(labels))


def read_images(reader: Callable[..., Any], folder: str, size: tuple[int, int]) -> Any:
    """Run a data reader with a progress bar; unreadable files are skipped and named (the first five)."""
    from rich.progress import Progress
    errors: list[str] = []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("reading images", total=None)
        result = reader(folder, size=size, on_error=errors.append, progress=lambda k: progress.advance(bar, k))
    for e in errors[:5]:
        console.print(f"[yellow]skipped[/] {e}")
    if len(errors) > 5:
        console.print(f"[yellow]skipped[/] {len(errors) - 5} more unreadable files")
    return result


class ClassifierTask:
    """One classifier, its optimizer, its weight average and its generators, as the loop needs them."""

    def __init__(self, cfg: ClassifierConfig, data: LabelledImages):
        self.cfg, self.name = cfg, cfg.model
        spec = zoo.get(cfg.model)
        self.device = torch.device(cfg.device)
        train_idx, val_idx = split_indices(data.labels)
        self.x_train = torch.from_numpy(data.images[train_idx]).to(self.device)
        self.y_train = torch.from_numpy(data.labels[train_idx]).to(self.device)
        self.x_val = torch.from_numpy(data.images[val_idx]).to(self.device)
        self.y_val = torch.from_numpy(data.labels[val_idx]).to(self.device)
        self.batch_size = cfg.batch_size
        # A last batch of one image would break batch norm: drop it.
        n = len(train_idx)
        self.steps_per_epoch = n // cfg.batch_size + (n % cfg.batch_size > 1)
        self.total_steps = self.steps_per_epoch * cfg.epochs

        torch.manual_seed(cfg.seed)
        net = spec.build()
        self.model = Classifier(net, spec.mean, spec.std)
        if getattr(net, "stem_kind", "") == "whiten":
            from toolkit.pytorch.nets.resnet import init_whitening
            first = self.x_train[:5000].cpu()
            init_whitening(net, self.model.pre(first))
        if cfg.init:
            load_weights(net, cfg.init)
        self.model.to(self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.forward: torch.nn.Module = self.model
        if cfg.preprocess:
            from toolkit.edge.spectral.ops import parse_preprocess
            from toolkit.pytorch.nets.spectral import transform_module
            op, params = parse_preprocess(cfg.preprocess)
            self.forward = torch.nn.Sequential(transform_module(op, params, "matmul", spec.input_size),
                                               self.model).to(self.device)
        self.opt = make_optimizer(self.model.net, cfg)
        self.average = (copy.deepcopy(self.model.net).requires_grad_(False) if cfg.ema or cfg.lookahead
                        else None)
        self.plan: dict[str, torch.Tensor] = {}
        # Cutout paints the mean colour: zero after normalisation.
        self.fill = torch.tensor([round(255 * m) for m in spec.mean], dtype=torch.uint8, device=self.device)
        self.train_forward = distributed.data_parallel(self.forward, self.device)

    # ------------------------------------------------------------------ loop interface
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        opt_tensors, groups = optimizer_tensors("opt", self.opt)
        tensors = {**prefixed("model", self.model.net.state_dict()), **opt_tensors}
        if self.average is not None:
            tensors.update(prefixed("average", self.average.state_dict()))
        return tensors, {"param_groups": groups}

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model.net.load_state_dict(unprefixed("model", tensors))
        restore_optimizer("opt", self.opt, tensors, meta["param_groups"])
        if self.average is not None:
            self.average.load_state_dict(unprefixed("average", tensors))

    def begin_epoch(self, epoch: int) -> None:
        plan = epoch_plan(len(self.y_train), self.cfg.seed, epoch, self.cfg.translate, self.cfg.cutout,
                          (self.x_train.shape[1], self.x_train.shape[2]), self.cfg.alternate_flip)
        self.plan = {k: v.to(self.device) for k, v in plan.items()}
        distributed.reseed(self.cfg.seed, epoch)
        self.model.train()

    def step(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        first, end = step * cfg.batch_size, min((step + 1) * cfg.batch_size, len(self.y_train))
        batch = distributed.world().share(first, end)
        idx = self.plan["order"][batch]
        images = augment(self.x_train[idx], self.plan["flip"][batch] if cfg.flip else None,
                         self.plan["shift"][:, batch], cfg.translate)
        if cfg.cutout:
            images = cut_out(images, self.plan["centre"][:, batch], cfg.cutout, self.fill)
        lr = lr_schedule(epoch * self.steps_per_epoch + step, self.total_steps, cfg.lr, cfg.warmup, cfg.schedule,
                         1 / cfg.lr_end)
        for group in self.opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = self.train_forward(images)
        labels = self.y_train[idx]
        if distributed.world().size == 1:
            loss = shown = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        else:
            per_sample = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing, reduction="none")
            loss, shown = distributed.share_loss(per_sample, end - first), per_sample.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.average is not None:
            self._update_average(epoch * self.steps_per_epoch + step)
        return {"loss": shown.detach()}

    def end_epoch(self, epoch: int, averages: dict[str, float]) -> dict[str, Any]:
        record: dict[str, Any] = {"loss": round(averages.get("loss", float("nan")), 4)}
        if (epoch + 1) % self.cfg.val_every and epoch + 1 < self.cfg.epochs:
            return record
        if self.cfg.lookahead:          # the weights were just pulled to the average: validate that once
            record["val_accuracy"] = round(evaluate(self._averaged_forward(), self.x_val, self.y_val), 4)
            return record
        record["val_accuracy"] = round(evaluate(self.forward, self.x_val, self.y_val), 4)
        if self.average is not None:
            record["val_accuracy_raw"] = record["val_accuracy"]
            record["val_accuracy"] = round(evaluate(self._averaged_forward(), self.x_val, self.y_val), 4)
        return record

    # ------------------------------------------------------------------ weight average
    @torch.no_grad()
    def _update_average(self, step: int) -> None:
        assert self.average is not None
        avg = [t for t in self.average.state_dict().values() if t.is_floating_point()]
        cur = [t for t in self.model.net.state_dict().values() if t.is_floating_point()]
        if self.cfg.lookahead:
            # airbench's Lookahead: every 5 steps the average takes a step towards the weights and the
            # weights jump back to it; the decay grows as the cube of the progress, to 0.95⁵.
            if (step + 1) % 5 == 0 or step + 1 == self.total_steps:
                torch._foreach_lerp_(avg, cur, 1.0 - 0.95 ** 5 * ((step + 1) / self.total_steps) ** 3)
                torch._foreach_copy_(cur, avg)
            return
        ema_step(avg, cur, self.cfg.ema, step)

    def _averaged_forward(self) -> torch.nn.Module:
        assert self.average is not None
        model = Classifier(self.average, zoo.get(self.name).mean, zoo.get(self.name).std).to(self.device)
        if isinstance(self.forward, torch.nn.Sequential):     # the --preprocess transform goes first
            return torch.nn.Sequential(self.forward[0], model)
        return model

    def final_net(self) -> torch.nn.Module:
        return self.average if self.average is not None else self.model.net


def make_optimizer(net: torch.nn.Module, cfg: ClassifierConfig) -> torch.optim.Optimizer:
    """SGD-Nesterov or AdamW over three groups: conv/linear weights (weight decay), batch-norm
    biases (learning rate × norm_bias_lr, decay ÷ it) and the other 1-D parameters (no decay).
    Each group's `lr_scale` multiplies the scheduled learning rate."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if cfg.freeze_norm_scale:          # a fresh net's scales are 1; fine-tuned weights keep theirs
        for m in norms:
            if m.weight is not None:
                m.weight.requires_grad_(False)
    norm_biases = {id(m.bias) for m in norms if m.bias is not None}
    trainable = [p for p in net.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": [p for p in trainable if id(p) in norm_biases], "lr_scale": cfg.norm_bias_lr,
               "weight_decay": cfg.weight_decay / cfg.norm_bias_lr if cfg.norm_bias_lr != 1 else 0.0},
              {"params": [p for p in trainable if p.ndim <= 1 and id(p) not in norm_biases], "weight_decay": 0.0,
               "lr_scale": 1.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def train_classifier(cfg: ClassifierConfig, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                     resume: bool = False, *, data: LabelledImages | None = None,
                     on_step: Callable[[Position], None] | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train `cfg.model` on the fixed training part of `cfg.data`, validating every epoch; write the
    final weights to `out` (safetensors, with the summary as metadata) and return the summary.
    Under torchrun, rank 0 writes and returns the summary; the other ranks return {}."""
    if data is None:
        cfg.validate()
    out_path, ckpt = check_outputs(out, checkpoint, resume)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available to torch")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    with distributed.joined(cfg.device, cfg.threads) as world:
        world.check_batch(cfg.batch_size)
        console.quiet = console.quiet or not world.main       # a torchrun worker: rank 0 speaks for all
        data = data if data is not None else _read_training_data(cfg)
        if data.class_names != zoo.get(cfg.model).labels:
            raise ValueError(f"{cfg.data}: classes {data.class_names} do not match the model's labels "
                             f"{zoo.get(cfg.model).labels}")
        task = ClassifierTask(cfg, data)
        if task.steps_per_epoch < 1:
            raise ValueError(f"{cfg.data}: {len(task.y_train)} training images, fewer than one batch of "
                             f"{cfg.batch_size}")
        if not quiet and world.main:
            console.print(f"{cfg.model}: {len(task.y_train):,} training, {len(task.y_val):,} validation images; "
                          f"{cfg.device}, {torch.get_num_threads()} threads{world.note}, "
                          f"bf16 {'on' if cfg.bf16 else 'off'}")
        pos = run(task, cfg.epochs, ckpt, asdict(cfg), resume, on_step=on_step, quiet=quiet)
        if not world.main:
            return {}
    summary = {"model": cfg.model, "val_accuracy": pos.history[-1]["val_accuracy"], "epochs": cfg.epochs,
               "train_seconds": round(pos.elapsed_s, 1), "history": pos.history, "config": asdict(cfg),
               "processes": world.size,
               "device": str(torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu"),
               "toolkit_version": __version__, "torch_version": torch.__version__}
    atomic_save_tensors(prefixed("model", task.final_net().state_dict()), out_path, summary)
    if not quiet:
        console.print(f"wrote {out_path} (validation accuracy {summary['val_accuracy']:.2%})")
    return summary


def _read_training_data(cfg: ClassifierConfig) -> LabelledImages:
    spec = zoo.get(cfg.model)
    if not is_cifar_batches(cfg.data):       # the class folders are checked before decoding anything
        classes = sorted(p.name for p in Path(cfg.data).iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes != sorted(spec.labels):
            raise ValueError(f"{cfg.data}: class folders {classes} do not match the model's labels {spec.labels}")
    if cfg.bf16 and cfg.device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        console.print("[yellow]this CPU has no native bfloat16: --no-bf16 is likely faster[/]")
    return read_images(read_labelled, cfg.data, spec.input_size)
