"""Image decoding and validation, dataset readers and the fixed validation split.

Everything here returns uint8 RGB arrays in HWC (one image) or NHWC (a batch) layout — the
same layout the ONNX artifacts take — and never imports torch.

Limits, so that one input can neither stall a call nor exhaust memory: only regular files are
read (fsio.read_regular_file), at most MAX_FILE_BYTES each, and an image whose header declares
more than MAX_PIXELS pixels (or a side over MAX_SIDE) is refused before a single pixel is
decoded. Conversions to RGB and the EXIF rotation work on strips and arrays rather than chains of
whole-image copies, so decoding one image peaks at about 8 bytes per pixel (Pillow's buffer plus
the RGB result: ≈ 0.5 GB at the limit); tests/test_properties.py holds it under 16.
The data-set readers (streamed a chunk at a time for evaluation) are in datasets.py.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from struct import error as struct_error  # Pillow's plug-ins raise it on short headers

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from toolkit.edge.data.fsio import InputError, atomic_write, read_regular_file
from toolkit.edge.errors import first_line, shown

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MAX_PIXELS = 64_000_000          # an 8k × 8k photo; a header declaring more is refused, not decoded
MAX_SIDE = 65_535                # JPEG's own limit; a 1 × 4,000,000 strip costs Pillow 8 bytes a row
MAX_FILE_BYTES = 256 * 1024 * 1024

# Pillow would otherwise return a half-grey picture for a truncated file without complaint.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow logs some refusals (e.g. a TIFF's absurd samples per pixel) besides raising; with no
# handler, Python would print them on stderr next to our one-line error.
logging.getLogger("PIL").addHandler(logging.NullHandler())

OnError = Callable[[str], None]


class ImageError(InputError):
    """A file that is not a usable image. The message is one line, fit for the user."""


STRIP_PIXELS = 1 << 16           # conversions run a strip of rows this large at a time

# EXIF orientation → how to make the stored pixels upright (ImageOps.exif_transpose's table, on arrays).
_UPRIGHT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1),
}


def _grey_to_rgb(a: np.ndarray, lo: float, top: float) -> np.ndarray:
    """Grey values in [lo, top] onto 0..255 RGB."""
    block = np.nan_to_num(a.astype(np.float64), nan=lo, posinf=top, neginf=lo)
    scaled = (block - lo) / (top - lo) if top > lo else np.zeros_like(block)
    return np.repeat(np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA over an opaque white background, as a viewer shows transparency: (rgb·a + 255·(255 − a)) / 255."""
    block = rgba.astype(np.uint32)
    alpha = block[..., 3:]
    return ((block[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def _strip_rgb(strip: Image.Image, grey_range: tuple[float, float]) -> np.ndarray:
    if strip.mode == "RGB":
        return np.asarray(strip)
    if strip.mode.startswith("I") or strip.mode == "F":
        return _grey_to_rgb(np.asarray(strip), *grey_range)
    if strip.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (strip.mode == "P" and "transparency" in strip.info):
        return _over_white(np.asarray(strip.convert("RGBA")))
    return np.asarray(strip.convert("RGB"))


def _grey_range(img: Image.Image) -> tuple[float, float]:
    """What 0 and 255 stand for in a 16/32-bit integer or float grey image."""
    if img.mode == "F":
        a = np.asarray(img)
        finite = a[np.isfinite(a)]
        return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if img.mode.startswith("I"):
        # 16-bit (PNG/TIFF) and 32-bit integer grey: the 16-bit range maps onto 8 bits rather than
        # clipping at 255; an "I" image that only holds 0..255 is already 8-bit.
        top = img.getextrema()[1]
        return 0.0, 255.0 if img.mode == "I" and isinstance(top, (int, float)) and top <= 255 else 65535.0
    return 0.0, 255.0


def _rgb_pixels(img: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] of any Pillow mode, converted a strip of rows at a time into one array,
    so the peak is the decoded image plus its RGB copy, not a chain of whole-image copies."""
    w, h = img.size
    out = np.empty((h, w, 3), dtype=np.uint8)
    grey_range = _grey_range(img)
    step = max(1, STRIP_PIXELS // w)
    for r in range(0, h, step):
        out[r:r + step] = _strip_rgb(img.crop((0, r, w, min(h, r + step))), grey_range)
    return out


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
        return int(value) if value in _UPRIGHT else 1
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, IndexError, struct_error):
        # A malformed EXIF block says nothing reliable about orientation; the pixels are still good.
        return 1


def _decode(data: bytes, name: str) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        if w * h > MAX_PIXELS or max(w, h) > MAX_SIDE:
            raise ImageError(f"{name}: image too large ({w}×{h} pixels; limits {MAX_PIXELS:,} pixels, "
                             f"{MAX_SIDE:,} per side)")
        if w == 0 or h == 0:
            raise ImageError(f"{name}: image has zero size")
        try:
            img.load()
            orientation = _orientation(img)
            pixels = _rgb_pixels(img)
        finally:
            img.close()               # frees the decoded buffer before the upright copy below
    # EXIF orientation applied, so a photo stored sideways is classified as it is seen.
    return np.ascontiguousarray(_UPRIGHT[orientation](pixels)) if orientation != 1 else pixels


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes into uint8 [H, W, 3] RGB (EXIF orientation applied), or raise
    ImageError. `name` is used as given in messages: pass it through fsio.shown."""
    if len(data) == 0:
        raise ImageError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            # Pillow warns on stderr about odd EXIF and the like; the user gets one line or none.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _decode(data, name)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: image too large (limit {MAX_PIXELS:,} pixels)") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError,
            struct_error, ZeroDivisionError, OverflowError) as exc:
        # Pillow's format plug-ins raise all of these on malformed headers.
        reason = first_line(exc)
        if "truncated" in reason.lower() or isinstance(exc, EOFError):
            reason = "truncated or corrupt image data"
        raise ImageError(f"{name}: cannot decode image ({reason[:200]})") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read (regular files only, at most MAX_FILE_BYTES) and decode one image into uint8
    [H, W, 3] RGB, or raise ImageError."""
    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except InputError as exc:
        raise ImageError(str(exc)) from None
    return decode_image(data, shown(path))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 HWC RGB to (height, width) with a quality filter; a no-op at the right size."""
    if image.shape[:2] == (height, width):
        return image
    img = Image.fromarray(image, "RGB").resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:               # cannot be looked at: an input of its own, which its reader reports
        return False


def may_be_file(path: Path) -> bool:
    """A regular file, or one that cannot be looked at (a folder we may list but not enter): kept,
    so that its reader reports it as one bad input rather than it vanishing from the call."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:     # gone since the listing, or a dangling link: nothing to read
        return False
    except OSError:
        return True


def expand_inputs(inputs: Sequence[str | os.PathLike], on_error: OnError | None = None) -> list[Path]:
    """Expand folders (recursively, sorted) into image files; plain files are kept as given, so a
    non-image file named explicitly is reported as a bad input rather than skipped. Only regular
    files are taken from folders. Nothing here reads a file, and a path that cannot be looked at
    is kept for its reader to report, so one unreadable input never stops the others. A folder
    that cannot be listed goes to `on_error` (without it, it is kept in the list and its reader
    reports it)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not _is_folder(p):
            out.append(p)
            continue
        found: list[Path] = []
        problems: list[OSError] = []
        for folder, dirs, names in os.walk(p, onerror=problems.append):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(f for f in (Path(folder) / n for n in names) if is_image_name(f) and may_be_file(f))
        for exc in problems:
            where = shown(exc.filename or p)
            if on_error is None:
                out.append(Path(exc.filename or p))
            else:
                on_error(f"{where}: cannot list folder ({exc.strerror or exc})")
        out.extend(sorted(found))
    return out


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files of a flat folder (sorted by name); used for GAN training."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{shown(folder)}: not a folder")
    return sorted(f for f in folder.iterdir() if f.is_file() and is_image_name(f))


# ----------------------------------------------------------------------------- writing images

def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, C] images into one uint8 [rows·(H+pad)+pad, cols·(W+pad)+pad, C] picture."""
    n, h, w, c = images.shape
    grid = empty_grid(n, (h, w, c), ncols, pad, fill)
    for i, img in enumerate(images):
        place(grid, i, img, ncols or grid_columns(n), pad)
    return grid


def grid_columns(n: int) -> int:
    return int(np.ceil(np.sqrt(n)))


def empty_grid(n: int, shape: tuple[int, int, int], ncols: int | None = None, pad: int = 2,
               fill: int = 255) -> np.ndarray:
    """The blank picture `make_grid` fills, so a caller can place images as they are made."""
    h, w, c = shape
    ncols = ncols or grid_columns(n)
    nrows = int(np.ceil(n / ncols))
    return np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, dtype=np.uint8)


def place(grid: np.ndarray, i: int, image: np.ndarray, ncols: int, pad: int = 2) -> None:
    h, w = image.shape[:2]
    r, col = divmod(i, ncols)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = image


def save_image(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write uint8 [H, W, 3] (or [H, W]) atomically; the format follows the suffix (PNG if none known)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    picture = Image.fromarray(np.ascontiguousarray(image))
    return atomic_write(path, lambda tmp: picture.save(tmp, format=fmt))
