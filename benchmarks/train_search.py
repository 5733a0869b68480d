"""Recipe search for the two CIFAR-10 classifiers, several runs at once on one GPU (or the CPU).

    python benchmarks/train_search.py --data data/cifar10-png/train --out runs/search --device cuda

Every run is `toolkit.pytorch.train_classifier.train_classifier` with one candidate's overrides of
the command's defaults (ResNetConfig / ClassifierConfig), i.e. exactly what `toolkit train` runs.
cifar-resnet: a grid on seed 0, then seeds 1 and 2 of the best candidate. cifar-cnn (5 epochs,
architecture fixed): every candidate on seeds 0, 1, 2. Results go to OUT/search.json as they
arrive (mean ± std per candidate); the seed-0 weights of every cifar-cnn candidate and of the best
cifar-resnet candidate are copied to OUT as they arrive. A deadline stops starting runs so the file
is complete before an outside limit.
Needs torch, numpy, Pillow, safetensors and rich only (what a bare GPU machine has).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Round 1 (lr 0.4/0.8/0.2, 24–60 epochs, widths 256/384, translate 2) topped out at 90.3% and fit the
# training set (99.8%): round 2 (this grid) adds regularisation and a learned stem.
RESNET_GRID: dict[str, dict[str, Any]] = {      # in order of priority: the deadline may cut the tail
    "t4-c12": {"translate": 4, "cutout": 12},
    "conv-t4-c12": {"stem": "conv", "translate": 4, "cutout": 12},
    "eps1e-2-t4-c12": {"whiten_eps": 1e-2, "translate": 4, "cutout": 12},
    "conv-t2": {"stem": "conv"},
    "t4": {"translate": 4},
    "conv-t4-c12-ep60": {"stem": "conv", "translate": 4, "cutout": 12, "epochs": 60},
    "t2-c12": {"cutout": 12},
    "conv-t4-c12-lr1.6": {"stem": "conv", "translate": 4, "cutout": 12, "lr": 1.6},
}
CNN_GRID: dict[str, dict[str, Any]] = {
    "t2-ls-lr7e-4": {"translate": 2, "label_smoothing": 0.1, "lr": 7e-4},
    "t2-ls-lr5e-4": {"translate": 2, "label_smoothing": 0.1, "lr": 5e-4},
    "t1-ls-lr1e-3": {"translate": 1, "label_smoothing": 0.1, "lr": 1e-3},
    "t2-lr1e-3": {"translate": 2, "lr": 1e-3},
}
SEEDS = (0, 1, 2)


def decode_all(root: str, workers: int) -> str:
    """Decode the image tree once (in parallel) into an .npz the runs share."""
    import numpy as np

    from toolkit.edge.data.datasets import class_folder_files
    from toolkit.edge.data.images import load_image
    files, labels, classes = class_folder_files(root)
    with mp.get_context("spawn").Pool(workers) as pool:
        images = pool.map(load_image, files, chunksize=256)
    path = "/tmp/train_search_data.npz"
    np.savez(path, images=np.stack(images), labels=labels, classes=np.array(classes))
    return path


def worker(jobs: Any, results: Any, data_path: str, device: str, run_dir: str, deadline: float, tiny: bool) -> None:
    import numpy as np
    import torch

    from toolkit.edge.data.datasets import LabelledImages
    from toolkit.pytorch.nets import resnet
    from toolkit.pytorch.train_classifier import train_classifier
    from toolkit.recipes import ClassifierConfig, ResNetConfig

    torch.set_num_threads(2)
    npz = np.load(data_path)
    data = LabelledImages(npz["images"], npz["labels"], [str(c) for c in npz["classes"]])
    while True:
        job = jobs.get()
        if job is None or time.time() > deadline:
            results.put(None)
            return
        model, name, overrides, seed = job
        overrides = dict(overrides)
        # The network's shape is not part of the recipe: varied here only to see what it buys.
        net = {"widths": resnet.WIDTHS, "stem": resnet.STEM, "whiten_eps": resnet.WHITEN_EPS}
        net.update({k: overrides.pop(k) for k in list(overrides) if k in net})
        resnet.CifarResNet.__init__.__defaults__ = (10, tuple(net["widths"]), net["stem"], net["whiten_eps"], 8.0)
        cls = ResNetConfig if model == "cifar-resnet" else ClassifierConfig
        cfg = cls(data="-", seed=seed, device=device, **overrides)
        if tiny:
            cfg.epochs = 1
        out = Path(run_dir) / f"{model}.{name}.s{seed}.safetensors"
        t0 = time.time()
        try:
            summary = train_classifier(cfg, out, data=data, quiet=True)
            results.put({"model": model, "candidate": name, "seed": seed, "overrides": job[2],
                         "val_accuracy": summary["val_accuracy"], "history": summary["history"],
                         "train_seconds": summary["train_seconds"], "wall_s": round(time.time() - t0, 1),
                         "weights": str(out)})
        except Exception as exc:  # noqa: BLE001  (a failed candidate is a result too)
            results.put({"model": model, "candidate": name, "seed": seed, "error": repr(exc)})


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for r in results:
        if "val_accuracy" in r:
            table.setdefault(f"{r['model']}/{r['candidate']}", []).append(r["val_accuracy"])
    return {k: {"n": len(v), "mean": round(statistics.mean(v), 4),
                "std": round(statistics.stdev(v), 4) if len(v) > 1 else None, "runs": v}
            for k, v in sorted(table.items())}


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="CIFAR-10 class-per-folder tree")
    ap.add_argument("--out", required=True, help="folder for search.json and the chosen weights")
    ap.add_argument("--device", default="cuda", help="cuda | cpu")
    ap.add_argument("--budget", type=float, default=420, help="seconds after which no run is started")
    ap.add_argument("--cnn-workers", type=int, default=2, help="processes running cifar-cnn candidates")
    ap.add_argument("--resnet-workers", type=int, default=2, help="processes running cifar-resnet candidates")
    ap.add_argument("--tiny", action="store_true", help="1 epoch per run, 2 candidates each: a smoke test")
    args = ap.parse_args()
    t_start = time.time()
    deadline = t_start + args.budget
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = Path("/tmp/train_search_runs")
    run_dir.mkdir(exist_ok=True)
    data_path = decode_all(args.data, os.cpu_count() or 2)
    print(f"decoded in {time.time() - t_start:.0f} s", flush=True)

    import torch
    info = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    resnet_grid = dict(list(RESNET_GRID.items())[:2]) if args.tiny else RESNET_GRID
    cnn_grid = dict(list(CNN_GRID.items())[:2]) if args.tiny else CNN_GRID

    ctx = mp.get_context("spawn")
    results_q = ctx.Queue()
    resnet_q, cnn_q = ctx.Queue(), ctx.Queue()
    for name, overrides in resnet_grid.items():
        resnet_q.put(("cifar-resnet", name, overrides, 0))
    for seed in SEEDS:                    # seed-major: every candidate gets seed 0 before any gets seed 2
        for name, overrides in cnn_grid.items():
            cnn_q.put(("cifar-cnn", name, overrides, seed))
    for _ in range(args.cnn_workers):
        cnn_q.put(None)
    procs = [ctx.Process(target=worker, args=(resnet_q, results_q, data_path, args.device, str(run_dir),
                                              deadline, args.tiny)) for _ in range(args.resnet_workers)]
    procs += [ctx.Process(target=worker, args=(cnn_q, results_q, data_path, args.device, str(run_dir),
                                               deadline, args.tiny)) for _ in range(args.cnn_workers)]
    for p in procs:
        p.start()

    results: list[dict[str, Any]] = []
    resnet_seed0_left, running = len(resnet_grid), len(procs)
    while running:
        r = results_q.get()
        if r is None:
            running -= 1
            continue
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("history", "overrides")}), flush=True)
        if r["seed"] == 0 and "weights" in r:
            # Copied as they come, so that an outside time limit still leaves weights behind:
            # every cnn candidate's seed 0, and the best resnet so far.
            best_so_far = max((x for x in results if x["model"] == r["model"] and x["seed"] == 0
                               and "val_accuracy" in x), key=lambda x: x["val_accuracy"])
            if r["model"] == "cifar-cnn" or best_so_far is r:
                for old in out.glob("cifar-resnet.*.safetensors") if r["model"] == "cifar-resnet" else []:
                    old.unlink()
                shutil.copy(r["weights"], out / Path(r["weights"]).name)
        if r["model"] == "cifar-resnet" and r["seed"] == 0:
            resnet_seed0_left -= 1
            if resnet_seed0_left == 0:
                # The grid is done: the best candidate's other seeds, then the worker stops.
                ok = [x for x in results if x["model"] == "cifar-resnet" and "val_accuracy" in x]
                best = max(ok, key=lambda x: x["val_accuracy"]) if ok else None
                if best:
                    for seed in SEEDS[1:]:
                        resnet_q.put(("cifar-resnet", best["candidate"], best["overrides"], seed))
                for _ in range(args.resnet_workers):
                    resnet_q.put(None)
        write_json(out / "search.json", {**info, "elapsed_s": round(time.time() - t_start, 1),
                                         "summary": summarise(results), "results": results})
    for p in procs:
        p.join()

    summary = summarise(results)
    write_json(out / "search.json", {**info, "elapsed_s": round(time.time() - t_start, 1),
                                     "summary": summary, "results": results})
    print(json.dumps(summary, indent=1))
    print(f"total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
