"""The one training loop every trainer shares: epochs of steps, checkpoints, resume, Ctrl-C.

A trainer is a `Task`: it owns its networks, optimizers and random generators and knows how to
take one step; the loop owns the position (epoch, step), the history and the checkpoint file.

Ctrl-C is deferred to the next step boundary: the checkpoint it writes then holds the weights,
the optimizer, every random generator and the step counter of one instant, so `--resume`
continues bit-for-bit as if never stopped. A second Ctrl-C stops at once, keeping the last
checkpoint on disk.

Under torchrun (toolkit/pytorch/distributed.py) a step is one global batch on every rank, so the
position is the same whatever the number of ranks; rank 0 alone validates, writes and shows, and
a stop request seen by any rank stops them all after the same step.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from toolkit.pytorch import distributed
from toolkit.pytorch.checkpoint import atomic_save_tensors, load_tensors
from toolkit.pytorch.heap import retained_heap

console = Console(stderr=True)


class Interrupted(Exception):
    """Training was stopped with Ctrl-C; the message says which checkpoint to resume from."""


class Task(Protocol):
    name: str
    steps_per_epoch: int
    batch_size: int

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (weights, optimizer, generators) and JSON metadata to resume from."""

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None: ...

    def begin_epoch(self, epoch: int) -> None: ...

    def step(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns scalar tensors to show (read only now and then: no sync)."""

    def end_epoch(self, epoch: int, averages: dict[str, float]) -> dict[str, Any]:
        """Evaluate, draw samples…; returns this epoch's history record."""


@dataclass
class Position:
    epoch: int = 0                   # epochs completed
    step: int = 0                    # steps completed in the current epoch
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0           # training time, evaluation included, over every session


@dataclass
class _Stop:
    requested: bool = False


@contextmanager
def deferred_interrupt() -> Iterator[_Stop]:
    """Turn the first Ctrl-C into a request the loop honours at the next step boundary."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        console.print("[yellow]stopping after this step[/] (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _rng_tensors() -> dict[str, torch.Tensor]:
    rng = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["rng.cuda"] = torch.cuda.get_rng_state()
    return rng


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


def save_checkpoint(task: Task, pos: Position, path: Path, config: dict[str, Any]) -> None:
    """Rank 0 writes; the others hold the same weights. The step counts global batches."""
    if not distributed.world().main:
        return
    tensors, meta = task.state()
    atomic_save_tensors({**tensors, **_rng_tensors()}, path, {
        **meta, "model": task.name, "epoch": pos.epoch, "step_in_epoch": pos.step, "history": pos.history,
        "elapsed_s": pos.elapsed_s, "config": config, "world_size": distributed.world().size})


def load_checkpoint(task: Task, path: Path, config: dict[str, Any]) -> Position:
    tensors, meta = load_tensors(path)
    if meta.get("model") != task.name:
        raise ValueError(f"{path}: a checkpoint of {meta.get('model')}, not {task.name}")
    changed = sorted(k for k, v in (meta.get("config") or {}).items() if config.get(k, v) != v)
    if changed:
        # The command line wins (e.g. a lower --lr to settle a run), but say so: the result is
        # then no longer that of an uninterrupted run.
        console.print(f"[yellow]resuming with changed options:[/] {', '.join(changed)}")
    task.restore(tensors, meta)
    _restore_rng(tensors)
    pos = Position(meta["epoch"], meta["step_in_epoch"], meta["history"], meta["elapsed_s"])
    console.print(f"resumed from {path} at epoch {pos.epoch + 1}, step {pos.step}")
    return pos


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=quiet)


def run(task: Task, epochs: int, checkpoint: Path, config: dict[str, Any], resume: bool = False,
        on_step: Callable[[Position], None] | None = None, quiet: bool = False, show_every: int = 10) -> Position:
    """Train `task` for `epochs`, checkpointing at every epoch end and on Ctrl-C; freed host memory
    stays in the process meanwhile (toolkit/pytorch/heap.py).

    `on_step(position)` runs after every completed step; raising KeyboardInterrupt there acts
    like Ctrl-C (tests use it to stop at an exact step).
    """
    main = distributed.world().main
    quiet = quiet or not main
    console.quiet, was_quiet = not main or console.quiet, console.quiet
    try:
        pos = load_checkpoint(task, checkpoint, config) if resume else Position()
        with deferred_interrupt() as stop, _progress(quiet) as progress, retained_heap():
            _epochs(task, pos, epochs, checkpoint, config, stop, progress, on_step, quiet, show_every)
    finally:
        console.quiet = was_quiet
    return pos


def _epochs(task: Task, pos: Position, epochs: int, checkpoint: Path, config: dict[str, Any], stop: _Stop,
            progress: Progress, on_step: Callable[[Position], None] | None, quiet: bool, show_every: int) -> None:
    while pos.epoch < epochs:
        bar = progress.add_task(f"epoch {pos.epoch + 1}/{epochs}", total=task.steps_per_epoch,
                                completed=pos.step, info="")
        task.begin_epoch(pos.epoch)
        t0 = time.perf_counter()
        try:
            averages = _steps(task, pos, stop, progress, bar, on_step, show_every)
        except KeyboardInterrupt:
            pos.elapsed_s += time.perf_counter() - t0
            save_checkpoint(task, pos, checkpoint, config)
            raise Interrupted(f"interrupted at epoch {pos.epoch + 1}, step {pos.step}; resumable checkpoint "
                              f"written to {checkpoint} (use --resume)") from None
        record = task.end_epoch(pos.epoch, averages) if distributed.world().main else {}
        pos.elapsed_s += time.perf_counter() - t0
        pos.history.append({"epoch": pos.epoch + 1, **record, "elapsed_s": round(pos.elapsed_s, 1)})
        progress.update(bar, completed=task.steps_per_epoch)
        text = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
        if not quiet:
            console.print(f"epoch {pos.epoch + 1}: {text}, {pos.elapsed_s:.0f} s")
        pos.epoch, pos.step = pos.epoch + 1, 0
        save_checkpoint(task, pos, checkpoint, config)
        if distributed.any_rank(stop.requested) and pos.epoch < epochs:
            raise Interrupted(f"interrupted after epoch {pos.epoch}; resumable checkpoint written to "
                              f"{checkpoint} (use --resume)")


def _steps(task: Task, pos: Position, stop: _Stop, progress: Progress, bar: Any,
           on_step: Callable[[Position], None] | None, show_every: int) -> dict[str, float]:
    """The rest of the current epoch, from pos.step on; returns the running averages shown."""
    t0, seen = time.perf_counter(), 0
    averages: dict[str, float] = {}
    for step in range(pos.step, task.steps_per_epoch):
        shown = task.step(pos.epoch, step)
        pos.step, seen = step + 1, seen + task.batch_size
        if step % show_every == 0 or pos.step == task.steps_per_epoch:
            # float() waits for the device: only every few steps.
            for k, v in shown.items():
                averages[k] = float(v) if k not in averages else 0.8 * averages[k] + 0.2 * float(v)
            info = "  ".join(f"{k} {v:.3f}" for k, v in averages.items())
            progress.update(bar, completed=pos.step, info=f"{info}  {seen / (time.perf_counter() - t0):,.0f} img/s")
        distributed.exit_if_asked(pos.epoch * task.steps_per_epoch + pos.step)
        if on_step is not None:
            on_step(pos)
        if distributed.any_rank(stop.requested):
            raise KeyboardInterrupt
    return averages
