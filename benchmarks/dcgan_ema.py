"""Which DCGAN generator to ship: one training run, the generator as trained, with its batch-norm
statistics re-estimated, and one weight average per decay.

    python benchmarks/dcgan_ema.py --data data/anime-faces-64/faces --decays 0.99 0.995 0.998 0.999
    python benchmarks/dcgan_ema.py --decays 0.99 --decay-from 0.5 --out-dir runs/dcgan_b

Runs the training of `toolkit train dcgan` (same task, same loop, same seed: the generator's
trajectory is the one `toolkit train dcgan [--decay-from F] --ema D` follows) and keeps one average
of the generator's weights per decay, updated as the command updates its own (`update_average`).
After the chosen epochs it scores every average (batch-norm statistics re-estimated, as shipped),
the generator as trained, and the same with re-estimated statistics, with the sliced Wasserstein
distance of `benchmarks/dcgan_quality.py`, on
2,000 generated faces against 2,000 *training* faces (the ones just before the held-out ones):
the choice is made without the held-out faces, which stay for the final measure. Writes each
average's final weights to --out-dir/ema<decay>.safetensors and the generator as trained after
each scored epoch to --out-dir/epoch<N>.safetensors (the format `toolkit train` writes; the
constant learning rate makes epoch N of a longer run what `--epochs N` ships), and the scores
to --out-dir/scores.json. `--loss`, `--spectral-norm` and `--lr-d` are the command's.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from dcgan_quality import HOLDOUT, SWD_SETTINGS, load_faces

import toolkit.zoo as zoo
from toolkit.edge import quality
from toolkit.edge.data.datasets import read_flat_folder
from toolkit.edge.data.images import list_images
from toolkit.pytorch.checkpoint import atomic_save_tensors, prefixed
from toolkit.pytorch.loop import run
from toolkit.pytorch.train_classifier import read_images
from toolkit.pytorch.train_gan import (
    GanTask,
    to_uint8,
    update_average,
)
from toolkit.recipes import GanConfig


@torch.no_grad()
def faces_of(generator: torch.nn.Module, n: int, seed: int) -> np.ndarray:
    """n uint8 faces from the latents `toolkit generate --seed` draws (numpy's default_rng, in order)."""
    z = np.random.default_rng(seed).standard_normal((n, zoo.DCGAN.latent_dim)).astype(np.float32)
    generator.eval()
    return np.concatenate([to_uint8(generator(torch.from_numpy(b))) for b in np.array_split(z, max(1, n // 250))])


class Averaged(GanTask):
    """The command's task plus one weight average per decay."""

    def __init__(self, cfg: GanConfig, faces: np.ndarray, decays: list[float]):
        super().__init__(cfg, faces)
        self.decays = decays
        self.averages = {d: copy.deepcopy(self.G).requires_grad_(False) for d in decays}

    def step(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        losses = super().step(epoch, step)
        for decay, average in self.averages.items():
            update_average(average, self.G, decay, epoch * self.steps_per_epoch + step)
        return losses

    def shipped(self, decay: float) -> torch.nn.Module:
        return self.recalibrated(self.averages[decay])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/anime-faces-64/faces")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--decays", type=float, nargs="*", default=[0.99, 0.995, 0.998, 0.999])
    ap.add_argument("--score-epochs", type=int, nargs="+", default=[6, 8, 10])
    ap.add_argument("--decay-from", type=float, default=1.0, help="as `toolkit train dcgan --decay-from`")
    ap.add_argument("--loss", default="bce", help="as `toolkit train dcgan --loss`")
    ap.add_argument("--spectral-norm", action="store_true", help="as `toolkit train dcgan --spectral-norm`")
    ap.add_argument("--lr-d", type=float, default=0.0, help="as `toolkit train dcgan --lr-d`")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default="runs/dcgan_ema")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cfg = GanConfig(data=args.data, epochs=args.epochs, seed=args.seed, threads=args.threads,
                    decay_from=args.decay_from, loss=args.loss, spectral_norm=args.spectral_norm, lr_d=args.lr_d,
                    samples_dir=str(out / "samples"))
    cfg.validate()
    files = list_images(args.data)
    reference = load_faces(files[-2 * HOLDOUT:-HOLDOUT])          # training faces: the choice never sees the held-out
    faces = read_images(read_flat_folder, args.data, zoo.DCGAN.input_size)[:-cfg.holdout]
    task = Averaged(cfg, faces, args.decays)
    scores: list[dict] = []

    def score(position) -> None:
        if position.step != task.steps_per_epoch or position.epoch + 1 not in args.score_epochs:
            return
        candidates = {"as trained": task.G, "as trained, batch norm re-estimated": task.recalibrated(task.G),
                      **{f"ema {d}": task.shipped(d) for d in args.decays}}
        for name, generator in candidates.items():
            swd = quality.sliced_wasserstein(faces_of(generator, HOLDOUT, 0), reference, **SWD_SETTINGS)["mean"]
            scores.append({"epoch": position.epoch + 1, "generator": name, "swd_vs_training_faces": round(swd, 2)})
            print(json.dumps(scores[-1]), flush=True)
        # The generator as trained after this epoch: what `toolkit train dcgan --epochs <epoch>` ships.
        atomic_save_tensors(prefixed("model", task.G.state_dict()), out / f"epoch{position.epoch + 1}.safetensors",
                            {"model": "dcgan", "epochs": position.epoch + 1, "config": asdict(cfg)})
        task.G.train()

    start = time.time()
    pos = run(task, cfg.epochs, out / "ckpt.safetensors", asdict(cfg), False, on_step=score, show_every=5)
    summary = {"model": "dcgan", "epochs": cfg.epochs, "train_seconds": round(pos.elapsed_s, 1),
               "config": asdict(cfg), "torch_version": torch.__version__}
    for decay in args.decays:
        config = {**asdict(cfg), "ema": decay}
        atomic_save_tensors(prefixed("model", task.shipped(decay).state_dict()), out / f"ema{decay}.safetensors",
                            {**summary, "config": config})
    (out / "scores.json").write_text(json.dumps({"seconds": round(time.time() - start), "scores": scores,
                                                 "history": pos.history}, indent=1))


if __name__ == "__main__":
    main()
