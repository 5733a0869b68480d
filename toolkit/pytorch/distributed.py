"""Data-parallel training over processes that torchrun starts: one process per CPU share or GPU.

    torchrun --nproc-per-node 2 -m toolkit train cifar-cnn --data …     # or: toolkit train … --nproc 2

Every rank holds the whole data set and the same per-epoch plan (order, augmentation), and takes
its contiguous share of every global batch, so the samples of a step and their augmentation are
those of the one-process run with the same `--batch-size`. Each rank's loss is its share's sum
scaled by world size / global batch: DistributedDataParallel's mean of the ranks' gradients is then
the gradient of the global batch's mean loss, whatever the shares' sizes. Batch norm becomes
synchronised batch norm (statistics over the global batch). Rank 0 alone writes checkpoints, logs
and the progress bar; the position in a checkpoint counts global batches, so it resumes on any
number of ranks. Dropout masks are drawn per rank (rank 0 keeps the one-process stream): a net
with dropout matches the one-process run in distribution, not bit for bit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# A rank waits this long in a collective for the others (rank 0 validates and writes checkpoints
# while they wait). A rank that dies is noticed sooner: torchrun stops the job when a process exits.
TIMEOUT = timedelta(minutes=5)
# Test hook: "RANK:STEP" makes that rank exit with status 3 after that many global steps.
EXIT_AT = "TOOLKIT_DDP_EXIT_AT"


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def note(self) -> str:
        """What a start-up line adds about the ranks: nothing for one process."""
        return f", {self.size} processes" if self.size > 1 else ""

    def share(self, start: int, stop: int) -> slice:
        """This rank's contiguous share of the global batch [start, stop): sizes differ by at most one."""
        n = stop - start
        return slice(start + self.rank * n // self.size, start + (self.rank + 1) * n // self.size)

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise ValueError(f"--batch-size {batch_size} is the global batch and must split evenly over "
                             f"{self.size} processes: give a multiple of {self.size}")


_world = World()


def world() -> World:
    return _world


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


@contextmanager
def joined(device: str, threads: int) -> Iterator[World]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA, from `device`); a plain
    run is a world of one. Without --threads, the machine's cores are shared out between the
    local ranks."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1")) if under_torchrun() else 1
    if size == 1:
        yield World()
        return
    local = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local)
    elif not threads:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
    _world = World(dist.get_rank(), dist.get_world_size())
    try:
        yield _world
    finally:
        _world = World()
        dist.destroy_process_group()


def reseed(seed: int, position: int) -> None:
    """Give ranks other than 0 a random stream of their own (dropout); rank 0 keeps the one-process one."""
    if _world.rank:
        torch.manual_seed((seed * 1_000_003 + position) * 1_009 + _world.rank)


def share_loss(per_sample: torch.Tensor, global_count: int) -> torch.Tensor:
    """The loss to back-propagate: the plain mean in one process; this rank's share of the global
    mean, times the world size that DistributedDataParallel's averaging divides by, otherwise."""
    if _world.size == 1:
        return per_sample.mean()
    return per_sample.sum() * (_world.size / global_count)


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (a Ctrl-C seen by one rank stops all at the same step)."""
    if _world.size == 1:
        return flag
    t = torch.tensor([int(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if _world.size > 1:
        dist.barrier()


def lost_peer(exc: BaseException) -> str | None:
    """The one line for a rank whose collective failed because another rank went away (that rank,
    and the launcher, say why), or None for any other error."""
    text = str(exc)
    if under_torchrun() and any(s in text for s in ("closed by peer", "reset by peer", "Broken pipe")):
        return f"rank {os.environ.get('RANK', '?')}: lost contact with the other ranks; stopping"
    return None


def exit_if_asked(global_step: int) -> None:
    spec = os.environ.get(EXIT_AT)
    if spec and _world.size > 1:
        rank, step = (int(v) for v in spec.split(":"))
        if (rank, step) == (_world.rank, global_step):
            os._exit(3)


# ----------------------------------------------------------------------------- the model

class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with its gradient: every rank's output depends on every rank's input."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor) -> torch.Tensor:
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _sum_over_ranks(local: torch.Tensor) -> torch.Tensor:
    return _SumOverRanks.apply(local)


class GlobalBatchNorm(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the global batch, over gloo or NCCL.

    torch's SyncBatchNorm runs on GPUs only; this one works on any device. Mean first, then the
    mean squared deviation (two reductions, not E[x²] − E[x]², for the one-process accuracy)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or _world.size == 1:
            return super().forward(x)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x       # statistics in ≥ fp32
        local = torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([x.numel() / x.shape[1]])])
        total = _sum_over_ranks(local)
        count = total[-1]
        mean = total[:-1] / count
        centred = xf - mean[None, :, None, None]
        var = _sum_over_ranks(centred.square().sum((0, 2, 3))) / count
        tracked = self.num_batches_tracked
        if self.running_mean is not None and self.running_var is not None and tracked is not None:
            with torch.no_grad():
                tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var.detach() * count / (count - 1).clamp(min=1)).to(self.running_var.dtype),
                                      factor)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _global_batch_norm(module: nn.Module) -> nn.Module:
    """The same module with every BatchNorm2d made a GlobalBatchNorm sharing its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            _global_batch_norm(child)
    return module


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` as the training steps call it: itself in one process; with batch norm synchronised
    and gradients averaged over the ranks otherwise. The module keeps its parameters, so the
    optimizer, the weight average and evaluation use it unchanged (evaluation never calls the
    wrapper: its forward would wait for the other ranks)."""
    if _world.size == 1:
        return module
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    else:
        module = _global_batch_norm(module)
    # Synchronised batch norm keeps the buffers equal on every rank: nothing to broadcast per step.
    gpu = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=gpu, forward_sync_buffers=False)


# ----------------------------------------------------------------------------- the launcher

def launch(nproc: int, argv: Sequence[str]) -> str | None:
    """Run `python -m toolkit ARGV` in `nproc` processes through torchrun on this machine.
    Returns None on success, else one line naming the first rank that failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "OMP_NUM_THREADS" not in os.environ:
        # Set here, so that torchrun prints no banner about it; each rank then shares out the cores
        # itself (joined()).
        os.environ["OMP_NUM_THREADS"] = "1"
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--monitor-interval", "0.1",
                       "--module", "toolkit", *argv])
    import logging
    # torchrun's own log repeats what the line below says, in several.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        how = f"signal {failure.signal_name()}" if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        return (f"training stopped: rank {rank} of {nproc} failed ({how}); the other ranks were stopped "
                f"(its own error, if it had one, is above)")
    finally:
        sys.stderr.flush()
    return None
