"""Data-parallel training under torchrun, 2 CPU processes over gloo: the same weights as one process
with the same global batch, resume across world sizes, a dying rank ends the job in one line.

The runs use the cifar-cnn on a tiny class tree, flip and shift augmentation on (its plan is per
global sample, so it is the same in both runs) and dropout off: its masks are drawn per rank, so
with it the runs agree in distribution only. Every run uses one thread per process, so the only
difference left is the order in which the ranks' gradients are summed. The images are uniform noise
(no clipped, flat regions): a net with max-pooling on images with flat regions meets near-ties, where
a float-rounding difference picks another maximum and the runs part (one process on 1 thread and
on 2 threads part there just the same). 12 images per class: a global batch of 16 makes 7 steps an epoch."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.edge.data.datasets import CIFAR10_LABELS
from toolkit.pytorch.checkpoint import load_tensors
from toolkit.pytorch.distributed import EXIT_AT, World

runner = CliRunner(env={"COLUMNS": "200"})

DRIVER = '''
import sys
import torch
from toolkit.pytorch.loop import Interrupted
from toolkit.pytorch.train_classifier import train_classifier
from toolkit.recipes import ClassifierConfig

torch.nn.Dropout.forward = lambda self, x: x
data, out, stop, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume"
cfg = ClassifierConfig(data=data, epochs=3, batch_size=16, threads=1)

def on_step(pos):
    if pos.epoch * 7 + pos.step == stop:
        raise KeyboardInterrupt

try:
    train_classifier(cfg, out, resume=resume, on_step=on_step, quiet=True)
except Interrupted:
    pass
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    rng = np.random.default_rng(0)
    for name in CIFAR10_LABELS:
        (root / "tree" / name).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(20, 236, (32, 32, 3), dtype=np.uint8)).save(root / "tree" / name / f"{i}.png")
    return root / "tree", driver


def _train(setup, nproc: int, out: Path, stop: int, resume: bool = False) -> Path:
    """Train until global step `stop` (the checkpoint holds that step) in `nproc` processes."""
    tree, driver = setup
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc-per-node", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, str(driver), str(tree), str(out), str(stop), "resume" if resume else "new"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return out.with_suffix(".ckpt.safetensors")


def _close(a: Path, b: Path, rtol: float = 1e-5) -> None:
    ta, meta_a = load_tensors(a)
    tb, meta_b = load_tensors(b)
    assert (meta_a["epoch"], meta_a["step_in_epoch"]) == (meta_b["epoch"], meta_b["step_in_epoch"])
    weights = [k for k in ta if k.startswith("model.")]
    assert weights and sorted(weights) == sorted(k for k in tb if k.startswith("model."))
    for k in weights:
        assert (ta[k] - tb[k]).norm() <= rtol * ta[k].norm(), k


@pytest.fixture(scope="module")
def one_process(setup, tmp_path_factory):
    return _train(setup, 1, tmp_path_factory.mktemp("one") / "w.safetensors", 20)


@pytest.mark.slow
def test_two_ranks_match_one_process_after_20_steps(setup, one_process, tmp_path):
    two = _train(setup, 2, tmp_path / "w.safetensors", 20)
    _, meta = load_tensors(two)
    assert (meta["epoch"], meta["step_in_epoch"], meta["world_size"]) == (2, 6, 2)
    _close(one_process, two)


@pytest.mark.slow
@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)], ids=["2-to-1", "1-to-2"])
def test_resume_on_another_number_of_ranks(setup, one_process, tmp_path, first, then):
    ckpt = _train(setup, first, tmp_path / "a.safetensors", 10)                 # mid-epoch 2
    ckpt.rename(tmp_path / "b.ckpt.safetensors")
    _close(one_process, _train(setup, then, tmp_path / "b.safetensors", 20, resume=True))


@pytest.mark.slow
def test_a_rank_that_dies_ends_the_job_in_one_line(setup, tmp_path):
    tree, _ = setup
    env = {**os.environ, EXIT_AT: "1:3", "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "toolkit", "train", "cifar-cnn", "--data", str(tree), "--epochs", "3",
                           "--batch-size", "16", "--nproc", "2", "--out", str(tmp_path / "w.safetensors")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert time.monotonic() - t0 < 60
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: training stopped: rank 1 of 2 failed (exit status 3); the other ranks were stopped "
        "(its own error, if it had one, is above)")
    assert not (tmp_path / "w.safetensors").exists()


def test_a_batch_that_does_not_split_over_the_ranks_is_refused_before_any_work(setup, tmp_path):
    tree, _ = setup
    result = runner.invoke(app, ["train", "cifar-cnn", "--data", str(tree), "--batch-size", "15", "--nproc", "2",
                                 "--out", str(tmp_path / "w.safetensors")])
    assert result.exit_code == 1
    assert "--batch-size 15 is the global batch and must split evenly over 2 processes" in result.output


def test_shares_are_contiguous_and_cover_the_batch():
    for size in (1, 2, 3, 4):
        for n in (0, 1, 5, 16):
            shares = [World(r, size).share(32, 32 + n) for r in range(size)]
            assert [i for s in shares for i in range(s.start, s.stop)] == list(range(32, 32 + n))
            assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1


BATCH_NORM_DRIVER = '''
import torch
import torch.distributed as dist
from toolkit.pytorch import distributed

with distributed.joined("cpu", 1) as world:
    torch.manual_seed(0)
    x, w = torch.randn(7, 3, 4, 5, dtype=torch.float64), torch.randn(7, 3, 4, 5, dtype=torch.float64)
    plain = torch.nn.BatchNorm2d(3).double()
    synced = distributed._global_batch_norm(torch.nn.Sequential(torch.nn.BatchNorm2d(3).double()))
    assert isinstance(synced[0], distributed.GlobalBatchNorm)
    full = x.clone().requires_grad_()
    expected = plain(full)
    (expected * w).sum().backward()
    share = world.share(0, 7)
    part = x[share].clone().requires_grad_()
    y = synced(part)
    (y * w[share]).sum().backward()
    for p in synced.parameters():
        dist.all_reduce(p.grad)
    assert torch.allclose(y, expected[share], atol=1e-12)
    assert torch.allclose(part.grad, full.grad[share], atol=1e-12)
    assert torch.allclose(synced[0].weight.grad, plain.weight.grad, atol=1e-12)
    assert torch.allclose(synced[0].running_var, plain.running_var, atol=1e-12)
    assert torch.allclose(synced[0].running_mean, plain.running_mean, atol=1e-12)
'''


@pytest.mark.slow
def test_global_batch_norm_over_two_ranks_is_batch_norm_of_the_global_batch(tmp_path):
    driver = tmp_path / "bn.py"
    driver.write_text(BATCH_NORM_DRIVER)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(driver)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_dcgan_trains_on_two_ranks(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    done = subprocess.run([sys.executable, "-m", "toolkit", "train", "dcgan", "--data", str(faces), "--epochs", "1",
                           "--batch-size", "4", "--holdout", "0", "--samples-dir", str(tmp_path / "s"), "--nproc", "2",
                           "--out", str(tmp_path / "g.safetensors")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    _, meta = load_tensors(tmp_path / "g.ckpt.safetensors")
    assert (meta["epoch"], meta["world_size"]) == (1, 2)
    assert (tmp_path / "g.safetensors").is_file() and (tmp_path / "s" / "epoch_001.png").is_file()
