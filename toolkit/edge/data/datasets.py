"""Labelled data sets and the fixed validation split: class-per-folder trees, the official CIFAR-10
python batches (through a restricted unpickler), flat folders of unlabelled images.

Evaluation streams: `list_split` names the files (or CIFAR rows) of one part of the split without
decoding anything, and `SplitListing.chunks` decodes CHUNK images at a time, resized to every size
asked for — so memory follows the chunk, not the data set. `read_split` (training, calibration)
collects the chunks into one array. Never imports torch.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.edge.data.fsio import InputError, read_regular_file
from toolkit.edge.data.images import (
    ImageError,
    OnError,
    is_image_name,
    list_images,
    load_image,
    may_be_file,
    resize,
)
from toolkit.edge.errors import shown

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer",
                  "dog", "frog", "horse", "ship", "truck"]
VAL_FRACTION = 0.1               # the last 10% of each class (500 of 5,000 CIFAR images) is validation
CHUNK = 256                      # images decoded at a time when a data set is streamed
MAX_BATCH_FILE_BYTES = 512 * 1024 * 1024   # one CIFAR python batch is 31 MB


# ----------------------------------------------------------------------------- labelled data

class LabelledImages:
    """A labelled dataset held in memory: images uint8 [N, H, W, 3], labels int64 [N]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                 paths: list[str] | None = None):
        self.images, self.labels, self.class_names, self.paths = images, labels, class_names, paths

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> LabelledImages:
        paths = [self.paths[i] for i in index] if self.paths is not None else None
        return LabelledImages(self.images[index], self.labels[index], self.class_names, paths)


def class_folder_files(root: str | os.PathLike, problems: list[str] | None = None
                       ) -> tuple[list[Path], np.ndarray, list[str]]:
    """List a class-per-folder tree: (files sorted per class by name, labels, class names). A class
    folder that cannot be listed is one line in `problems` (without it, InputError) and has no
    files; a file that cannot be looked at is kept, for its reader to report."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{shown(root)}: not a folder")
    try:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise InputError(f"{shown(root)}: cannot list folder ({exc.strerror or exc})") from None
    if not classes:
        raise ValueError(f"{shown(root)}: no class sub-folders found")
    files: list[Path] = []
    labels: list[int] = []
    for idx, name in enumerate(classes):
        try:
            members = sorted(f for f in (root / name).iterdir() if is_image_name(f) and may_be_file(f))
        except OSError as exc:
            message = f"{shown(root / name)}: cannot list folder ({exc.strerror or exc})"
            if problems is None:
                raise InputError(message) from None
            problems.append(message)
            members = []
        files.extend(members)
        labels.extend([idx] * len(members))
    return files, np.asarray(labels, dtype=np.int64), classes


def split_indices(labels: np.ndarray, val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split: within each class, in reading order (sorted by file name), the last
    `val_fraction` is validation. On the CIFAR-10 JPEG tree that is 4500.jpg … 4999.jpg."""
    train, val = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = round(len(members) * val_fraction)
        if len(members) > 1:
            n_val = max(1, n_val)
        train.append(members[: len(members) - n_val])
        val.append(members[len(members) - n_val:])
    return np.concatenate(train), np.concatenate(val)


def read_class_folder(root: str | os.PathLike, size: tuple[int, int] | None = (32, 32),
                      on_error: OnError | None = None, progress=None) -> LabelledImages:
    """Decode every image of a class-per-folder tree. Bad files are reported through
    `on_error(message)` (default: raise) and left out."""
    return read_split(root, "all", size, on_error=on_error, progress=progress)


# ----------------------------------------------------------------------------- CIFAR batches

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR-10 python batches are pickles; a pickle can run arbitrary code when loaded.
    This unpickler admits only the few harmless globals a pickled numpy array needs."""

    def find_class(self, module, name):
        allowed = {
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        if module == "_codecs":
            import codecs
            return codecs.encode
        if name in ("ndarray", "dtype"):
            return getattr(np, name)
        core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed numpy.core
        return getattr(core.multiarray, name)


def _load_batch(path: Path) -> dict:
    try:
        raw = read_regular_file(path, MAX_BATCH_FILE_BYTES)
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError:
        raise
    except InputError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001  (a damaged pickle raises many types)
        raise ValueError(f"{shown(path)}: not a CIFAR batch ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{shown(path)}: not a CIFAR batch")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def is_cifar_batches(root: str | os.PathLike) -> bool:
    root = Path(root)
    return (root / "batches.meta").is_file() or (root / "data_batch_1").is_file()


def _cifar_batch_names(root: Path, part: str) -> list[str]:
    names = ["test_batch"] if part == "test" else sorted(p.name for p in root.glob("data_batch_*"))
    if not names or not all((root / n).is_file() for n in names):
        raise FileNotFoundError(f"{shown(root)}: no CIFAR-10 {part} batches found")
    return names


def _cifar_class_names(root: Path) -> list[str]:
    if (root / "batches.meta").is_file():
        meta = _load_batch(root / "batches.meta")
        if "label_names" in meta:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    return CIFAR10_LABELS


def _cifar_labels(root: Path, name: str) -> np.ndarray:
    return np.asarray(_load_batch(root / name).get("labels", []), dtype=np.int64)


def _cifar_rows(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _load_batch(root / name)
    labels = np.asarray(batch.get("labels", []), dtype=np.int64)
    data = np.asarray(batch.get("data"), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{shown(root / name)}: expected data of shape [N, 3072], got {data.shape}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), labels


def read_cifar_batches(root: str | os.PathLike, part: str = "train") -> LabelledImages:
    """Read the official `cifar-10-batches-py` folder: part 'train' (data_batch_1..5) or 'test'."""
    root = Path(root)
    rows = [_cifar_rows(root, n) for n in _cifar_batch_names(root, part)]
    return LabelledImages(np.concatenate([r[0] for r in rows]),
                          np.concatenate([r[1] for r in rows]), _cifar_class_names(root))


def read_labelled(root: str | os.PathLike, size=(32, 32), on_error=None, progress=None,
                  cifar_part: str = "train") -> LabelledImages:
    """A class-per-folder tree or a CIFAR-10 batches folder, whichever `root` is."""
    if is_cifar_batches(root):
        return read_cifar_batches(root, cifar_part)
    return read_class_folder(root, size=size, on_error=on_error, progress=progress)


def read_flat_folder(folder: str | os.PathLike, size: tuple[int, int] = (64, 64),
                     on_error: OnError | None = None, progress=None) -> np.ndarray:
    """Decode every image of a flat folder, resized to `size`: uint8 [N, H, W, 3]."""
    images = []
    for f in list_images(folder):
        try:
            images.append(resize(load_image(f), *size))
        except ImageError as exc:
            if on_error is None:
                raise
            on_error(str(exc))
        if progress is not None:
            progress(1)
    if not images:
        raise ValueError(f"{shown(folder)}: no readable images")
    return np.stack(images)


# ----------------------------------------------------------------------------- streaming a split

Size = tuple[int, int] | None


@dataclass
class Chunk:
    """Up to CHUNK decoded images of a split: one array per requested size (None: as decoded)."""
    images: dict[Size, np.ndarray]
    labels: np.ndarray
    paths: list[str] | None


@dataclass
class SplitListing:
    """A part of the fixed split, listed but not decoded: labels index `class_names`."""
    root: Path
    class_names: list[str]
    labels: np.ndarray
    files: list[Path] | None = None                       # a class-per-folder tree
    batches: list[tuple[str, np.ndarray]] = field(default_factory=list)   # CIFAR: (batch, rows)
    problems: list[str] = field(default_factory=list)     # class folders that could not be listed

    def __len__(self) -> int:
        return len(self.labels)

    def chunks(self, sizes: list[Size], chunk: int = CHUNK, on_error: OnError | None = None,
               progress: Callable[[int], None] | None = None) -> Iterator[Chunk]:
        """Decode `chunk` images at a time, resized to each of `sizes`. Unreadable files go to
        `on_error` (default: raise ImageError) and are left out of the chunk, as do class folders
        that could not be listed (reported first)."""
        sizes = list(dict.fromkeys(sizes))
        for message in self.problems:
            if on_error is None:
                raise ImageError(message)
            on_error(message)
        if self.files is None:
            start = 0
            for name, rows in self.batches:
                data, _ = _cifar_rows(self.root, name)
                for i in range(0, len(rows), chunk):
                    picked = data[rows[i:i + chunk]]
                    labels = self.labels[start + i:start + i + len(picked)]
                    yield Chunk({s: np.stack([resize(im, *s) for im in picked]) if s and s != (32, 32) else picked
                                 for s in sizes}, labels, None)
                    if progress is not None:
                        progress(len(picked))
                start += len(rows)
            return
        for i in range(0, len(self.files), chunk):
            decoded: dict[Size, list[np.ndarray]] = {s: [] for s in sizes}
            kept, paths = [], []
            for j, path in enumerate(self.files[i:i + chunk]):
                try:
                    image = load_image(path)
                except ImageError as exc:
                    if on_error is None:
                        raise
                    on_error(str(exc))
                    continue
                for s in sizes:
                    decoded[s].append(resize(image, *s) if s else image)
                kept.append(i + j)
                paths.append(str(path))
            if progress is not None:
                progress(len(self.files[i:i + chunk]))
            if kept:
                yield Chunk({s: np.stack(v) for s, v in decoded.items()}, self.labels[kept], paths)


def evenly_spaced(index: np.ndarray, limit: int | None) -> np.ndarray:
    """With `limit`, an evenly spaced subset of `index`, so every class is represented."""
    if limit and limit < len(index):
        return index[np.linspace(0, len(index) - 1, limit).astype(int)]
    return index


def list_split(root: str | os.PathLike, part: str = "val", limit: int | None = None) -> SplitListing:
    """List one part ('train' | 'val' | 'all', or 'test' for CIFAR batches' test_batch) of the
    fixed split without decoding it. FileNotFoundError / ValueError for a folder that is not a data set."""
    root = Path(root)
    if part not in ("train", "val", "all", "test"):
        raise ValueError(f"unknown part {part!r} of the split (train, val or all)")
    if is_cifar_batches(root):
        names = _cifar_batch_names(root, "test" if part == "test" else "train")
        per_batch = [_cifar_labels(root, n) for n in names]
        labels = np.concatenate(per_batch)
        train, val = split_indices(labels)
        index = np.sort(evenly_spaced({"train": train, "val": val}.get(part, np.arange(len(labels))), limit))
        batches, offset = [], 0
        for name, lab in zip(names, per_batch):
            rows = index[(index >= offset) & (index < offset + len(lab))] - offset
            batches.append((name, rows))
            offset += len(lab)
        return SplitListing(root, _cifar_class_names(root), labels[index], batches=batches)
    if part == "test":
        raise ValueError(f"{shown(root)}: a 'test' part exists only in CIFAR-10 batches")
    problems: list[str] = []
    files, labels, classes = class_folder_files(root, problems)
    train, val = split_indices(labels)
    index = evenly_spaced({"train": train, "val": val}.get(part, np.arange(len(files))), limit)
    return SplitListing(root, classes, labels[index], files=[files[i] for i in index], problems=problems)


def read_split(root: str | os.PathLike, part: str = "val", size: Size = (32, 32),
               limit: int | None = None, on_error: OnError | None = None, progress=None) -> LabelledImages:
    """Decode one part ('train' | 'val' | 'all') of the fixed split into memory (training and
    calibration need it all; evaluation streams `list_split(...).chunks` instead). With `limit`,
    an evenly spaced subset of that part."""
    listing = list_split(root, part, limit)
    chunks = list(listing.chunks([size], on_error=on_error, progress=progress))
    if not chunks:
        raise ValueError(f"{shown(root)}: no readable images in the {part} part")
    paths = None if listing.files is None else [p for c in chunks for p in (c.paths or [])]
    return LabelledImages(np.concatenate([c.images[size] for c in chunks]),
                          np.concatenate([c.labels for c in chunks]), listing.class_names, paths)
