"""The two disjoint parts of the validation images: *selection* (candidates are accepted or
rejected on it) and *report* (the winner's drop and its interval are measured there, once, after
the choice). Both are SplitListings, streamed by the one evaluate path (infer.evaluate_stream).

How: within each class (unlabelled data: one class), the validation images are shuffled by the
seed; the classes' shuffled lists are joined in class order and dealt alternately, the first to
selection. Disjoint by construction, balanced per class to within one image, and the same seed
gives the same parts on every run. Calibration and the int8 guard use the training part of the
fixed split, so the report part is touched by nothing before the winner is chosen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from toolkit.edge.data.datasets import SplitListing, is_cifar_batches, list_split, split_indices
from toolkit.edge.data.images import list_images
from toolkit.edge.errors import shown
from toolkit.edge.optimize.config import OptimizeError


@dataclass
class Parts:
    selection: SplitListing
    report: SplitListing
    labelled: bool


def deal(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection, report) positions into `labels`: disjoint, per-class balanced, each sorted."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
                           or [np.zeros(0, np.int64)])
    return np.sort(order[0::2]), np.sort(order[1::2])


def subset(listing: SplitListing, index: np.ndarray) -> SplitListing:
    """The listing's entries at sorted positions `index`, in reading order."""
    if listing.files is not None:
        return replace(listing, labels=listing.labels[index], files=[listing.files[i] for i in index])
    batches, offset = [], 0
    for name, rows in listing.batches:
        mine = index[(index >= offset) & (index < offset + len(rows))] - offset
        batches.append((name, rows[mine]))
        offset += len(rows)
    return replace(listing, labels=listing.labels[index], batches=batches, problems=[])


def _unlabelled(root: Path, class_name: str) -> SplitListing:
    """The validation part of any image folder, its labels ignored: one class, named after one of
    the model's labels so that the evaluate path accepts it (only agreement with fp32 is read)."""
    if is_cifar_batches(root) or any(d.is_dir() for d in root.iterdir()):
        listing = list_split(root, "val")
        return replace(listing, class_names=[class_name], labels=np.zeros(len(listing), np.int64))
    files = list_images(root)
    _, val = split_indices(np.zeros(len(files), np.int64))
    return SplitListing(root, [class_name], np.zeros(len(val), np.int64), files=[files[i] for i in val])


def split_parts(data: str | os.PathLike, labelled: bool, model_labels: list[str], seed: int) -> Parts:
    """Selection and report parts of `data`'s validation images; OptimizeError (one line) for a
    folder that is not a data set or has too few validation images to split."""
    root = Path(data)
    if not root.is_dir():
        raise OptimizeError(f"{shown(root)}: not a folder")
    try:
        listing = list_split(root, "val") if labelled else _unlabelled(root, model_labels[0] if model_labels else "?")
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise OptimizeError(f"{shown(root)}: {exc}") from None
    if labelled:
        unknown = [c for c in listing.class_names if c not in model_labels]
        if unknown:
            raise OptimizeError(f"{shown(root)}: class folders {unknown[:3]} are not labels of the model; pass "
                                "--unlabeled DIR to compare with fp32 instead")
    selection, report = deal(listing.labels, seed)
    if len(selection) < 1 or len(report) < 1:
        raise OptimizeError(f"{shown(root)}: {len(listing)} validation images; at least 2 are needed "
                            "(one for selection, one for the report)")
    return Parts(subset(listing, selection), subset(listing, report), labelled)
