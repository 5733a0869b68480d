"""Image decoding and validation, dataset readers and the fixed validation split.

Everything here returns uint8 RGB arrays in HWC (one image) or NHWC (a batch) layout — the
same layout the ONNX artifacts take — and never imports torch.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MAX_PIXELS = 64_000_000          # an 8k × 8k photo; anything larger is refused, not decoded
MAX_FILE_BYTES = 256 * 1024 * 1024
VAL_FRACTION = 0.1               # the last 10% of each class (500 of 5,000 CIFAR images) is validation

CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer",
                  "dog", "frog", "horse", "ship", "truck"]

# Pillow would otherwise return a half-grey picture for a truncated file without complaint.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """A file that is not a usable image. The message is one line, fit for the user."""


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        # 16-bit (PNG/TIFF) and 32-bit integer grey: map the 16-bit range onto 8 bits rather
        # than clipping at 255; an "I" image that only holds 0..255 is already 8-bit.
        a = np.asarray(img, dtype=np.float64)
        top = 255.0 if img.mode == "I" and a.max() <= 255 else 65535.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return Image.fromarray((a * 255 + 0.5).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent pixels become white, as an image viewer shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes into uint8 [H, W, 3] RGB, or raise ImageError."""
    if len(data) == 0:
        raise ImageError(f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageError(f"{name}: image too large ({w}×{h} pixels, limit {MAX_PIXELS:,})")
            if w == 0 or h == 0:
                raise ImageError(f"{name}: image has zero size")
            img.load()
            rgb = _to_rgb(img)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = "truncated or corrupt image data"
        raise ImageError(f"{name}: cannot decode image ({reason})") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode one image file into uint8 [H, W, 3] RGB, or raise ImageError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{path}: file too large ({size / 2**20:.0f} MiB)")
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 HWC RGB to (height, width) with a quality filter; a no-op at the right size."""
    if image.shape[:2] == (height, width):
        return image
    img = Image.fromarray(image, "RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def expand_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, sorted) into image files; plain files are kept as given,
    so a non-image file named explicitly is reported as a bad input rather than skipped."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f)))
        else:
            out.append(p)
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of a flat folder (sorted by name); used for GAN training."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    return sorted(f for f in folder.iterdir() if f.is_file() and is_image_name(f))


# ----------------------------------------------------------------------------- labelled data

class LabelledImages:
    """A labelled dataset held in memory: images uint8 [N, H, W, 3], labels int64 [N]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                 paths: list[str] | None = None):
        self.images, self.labels, self.class_names, self.paths = images, labels, class_names, paths

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "LabelledImages":
        paths = [self.paths[i] for i in index] if self.paths is not None else None
        return LabelledImages(self.images[index], self.labels[index], self.class_names, paths)


def class_folder_files(root: str | os.PathLike) -> tuple[list[Path], np.ndarray, list[str]]:
    """List a class-per-folder tree: (files sorted per class by name, labels, class names)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders found")
    files: list[Path] = []
    labels: list[int] = []
    for idx, name in enumerate(classes):
        members = sorted(f for f in (root / name).iterdir() if f.is_file() and is_image_name(f))
        files.extend(members)
        labels.extend([idx] * len(members))
    return files, np.asarray(labels, dtype=np.int64), classes


def split_indices(labels: np.ndarray, val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split: within each class, in reading order (sorted by file name), the last
    `val_fraction` is validation. On the CIFAR-10 JPEG tree that is 4500.jpg … 4999.jpg."""
    train, val = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = int(round(len(members) * val_fraction))
        if len(members) > 1:
            n_val = max(1, n_val)
        train.append(members[: len(members) - n_val])
        val.append(members[len(members) - n_val:])
    return np.concatenate(train), np.concatenate(val)


def read_class_folder(root: str | os.PathLike, size: tuple[int, int] | None = (32, 32),
                      on_error=None, progress=None) -> LabelledImages:
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
    with open(path, "rb") as fh:
        obj = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR batch")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def is_cifar_batches(root: str | os.PathLike) -> bool:
    root = Path(root)
    return (root / "batches.meta").is_file() or (root / "data_batch_1").is_file()


def read_cifar_batches(root: str | os.PathLike, part: str = "train") -> LabelledImages:
    """Read the official `cifar-10-batches-py` folder: part 'train' (data_batch_1..5) or 'test'."""
    root = Path(root)
    names = ["test_batch"] if part == "test" else sorted(p.name for p in root.glob("data_batch_*"))
    if not names or not all((root / n).is_file() for n in names):
        raise FileNotFoundError(f"{root}: no CIFAR-10 {part} batches found")
    class_names = CIFAR10_LABELS
    if (root / "batches.meta").is_file():
        meta = _load_batch(root / "batches.meta")
        if "label_names" in meta:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta["label_names"]]
    images, labels = [], []
    for n in names:
        batch = _load_batch(root / n)
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{root / n}: expected data of shape [N, 3072], got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return LabelledImages(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), class_names)


def read_labelled(root: str | os.PathLike, size=(32, 32), on_error=None, progress=None,
                  cifar_part: str = "train") -> LabelledImages:
    """A class-per-folder tree or a CIFAR-10 batches folder, whichever `root` is."""
    if is_cifar_batches(root):
        return read_cifar_batches(root, cifar_part)
    return read_class_folder(root, size=size, on_error=on_error, progress=progress)


def read_flat_folder(folder: str | os.PathLike, size: tuple[int, int] = (64, 64),
                     on_error=None, progress=None) -> np.ndarray:
    """Decode every image of a flat folder, resized to `size`: uint8 [N, H, W, 3]."""
    images, _ = _decode_files(list_images(folder), size, on_error, progress)
    if not images:
        raise ValueError(f"{folder}: no readable images")
    return np.stack(images)


# ----------------------------------------------------------------------------- writing images

def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, C] images into one uint8 [rows·(H+pad)+pad, cols·(W+pad)+pad, C] picture."""
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return grid


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write uint8 [H, W, 3] (or [H, W]) atomically; the format follows the suffix (PNG if none known)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _decode_files(files: list[Path], size: tuple[int, int] | None, on_error, progress) -> tuple[list, list[int]]:
    """Decode (and resize) files; bad ones go to `on_error` (default: raise). Returns the images
    and the positions in `files` they came from."""
    images, kept = [], []
    for j, f in enumerate(files):
        try:
            img = load_image(f)
            images.append(resize(img, *size) if size else img)
            kept.append(j)
        except ImageError as exc:
            if on_error is None:
                raise
            on_error(str(exc))
        if progress is not None:
            progress(1)
    return images, kept


def read_split(root: str | os.PathLike, part: str = "val", size: tuple[int, int] | None = (32, 32),
               limit: int | None = None, on_error=None, progress=None) -> LabelledImages:
    """Decode only one part ('train' | 'val' | 'all') of the fixed split. With `limit`, take an
    evenly spaced subset of that part so every class is represented."""
    root = Path(root)
    if is_cifar_batches(root):
        data = read_cifar_batches(root, "train")
        train, val = split_indices(data.labels)
        index = {"train": train, "val": val}.get(part, np.arange(len(data)))
        if limit and limit < len(index):
            index = index[np.linspace(0, len(index) - 1, limit).astype(int)]
        return data.subset(index)
    files, labels, classes = class_folder_files(root)
    train, val = split_indices(labels)
    index = {"train": train, "val": val}.get(part, np.arange(len(files)))
    if limit and limit < len(index):
        index = index[np.linspace(0, len(index) - 1, limit).astype(int)]
    images, decoded = _decode_files([files[i] for i in index], size, on_error, progress)
    kept = [int(index[j]) for j in decoded]
    if not images:
        raise ValueError(f"{root}: no readable images in the {part} part")
    return LabelledImages(np.stack(images), labels[kept], classes, [str(files[i]) for i in kept])
