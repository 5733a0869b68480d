"""Sample-quality measures for image generators: sliced Wasserstein distance and diversity.

The main measure is the sliced Wasserstein distance (SWD) between local image patches drawn from
a Laplacian pyramid, as proposed by Karras et al. 2018, "Progressive Growing of GANs for Improved
Quality, Stability, and Variation", section 5. Each pyramid level compares the distribution of
7×7 neighbourhoods at one scale, so a generator is penalised both for wrong fine texture (the
64×64 band) and for wrong overall colour and layout (the 16×16 residual). The numbers only mean
something next to references computed the same way, so the benchmark script
(benchmarks/dcgan_quality.py) reports two real sets, blurred real faces and noise alongside the
generator. Against 2,000 held-out anime faces, with the default settings:

    2,000 other real faces ≈ 9 (1,000 vs 1,000 ≈ 14-17: the floor rises as the sets shrink),
    real faces blurred 4× ≈ 330, uniform noise ≈ 650.

`diversity` is a cheap mode-collapse indicator to read next to SWD: a collapsed generator can
produce plausible patches while drawing the same face again and again.

numpy (and Pillow for `blur`) only, so the measure runs wherever the toolkit's runtime does.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# The 5-tap binomial approximation of a Gaussian used by the reference implementation.
_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16


def _as_float_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images [N, H, W, 3], got shape {images.shape}")
    return images.astype(np.float32)


def _filter(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable filter over H and W of an NHWC batch, with mirror (reflect) padding."""
    r = len(taps) // 2
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        out = np.zeros_like(x)
        for i, t in enumerate(taps):
            out += t * np.take(padded, np.arange(i, i + n), axis=axis)
        x = out
    return x


def _pyr_down(x: np.ndarray) -> np.ndarray:
    return _filter(x, _BINOMIAL)[:, ::2, ::2]


def _pyr_up(x: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    up = np.zeros((n, 2 * h, 2 * w, c), dtype=x.dtype)
    up[:, ::2, ::2] = x
    # Zero insertion leaves a quarter of the samples, so the 2-D kernel is scaled by 4 (2 per axis).
    return _filter(up, 2 * _BINOMIAL)


def laplacian_pyramid(images: np.ndarray, levels: int = 3) -> list[np.ndarray]:
    """Laplacian pyramid of a batch: float32 arrays [N, H/2^k, W/2^k, 3], finest first.

    All levels but the last are band-pass (the image minus its blurred-downsampled-upsampled
    self); the last is the Gaussian residual. For 64×64 inputs and 3 levels: 64, 32, 16.
    Pixel values keep the input's scale (uint8 input becomes 0..255 floats).
    """
    x = _as_float_batch(images)
    if levels < 1:
        raise ValueError("levels must be at least 1")
    if x.shape[1] % 2 ** (levels - 1) or x.shape[2] % 2 ** (levels - 1):
        raise ValueError(f"image size {x.shape[1]}×{x.shape[2]} is not divisible by 2^{levels - 1}")
    pyramid = [x]
    for _ in range(levels - 1):
        coarse = _pyr_down(pyramid[-1])
        pyramid[-1] = pyramid[-1] - _pyr_up(coarse)
        pyramid.append(coarse)
    return pyramid


def _patches(level: np.ndarray, image_index: np.ndarray, rng: np.random.Generator,
             patch_size: int) -> np.ndarray:
    """One patch per entry of `image_index`, at a random position fully inside the image:
    float32 [len(image_index), patch_size·patch_size·3]."""
    _, h, w, _ = level.shape
    if h < patch_size or w < patch_size:
        raise ValueError(f"a {h}×{w} pyramid level is smaller than a {patch_size}×{patch_size} patch")
    m = len(image_index)
    top = rng.integers(0, h - patch_size + 1, size=m)
    left = rng.integers(0, w - patch_size + 1, size=m)
    offsets = np.arange(patch_size)
    rows = (top[:, None] + offsets)[:, :, None]        # [m, p, 1]
    cols = (left[:, None] + offsets)[:, None, :]       # [m, 1, p]
    return level[image_index[:, None, None], rows, cols].reshape(m, -1)


def _sliced_distance(a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                     projections: int, repeats: int) -> float:
    """Mean over `repeats` of the mean |sorted(a·d) − sorted(b·d)| over `projections` random
    unit directions d: the 1-D Wasserstein-1 distance along each direction, averaged."""
    total = 0.0
    for _ in range(repeats):
        dirs = rng.standard_normal((projections, a.shape[1])).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        # [projections, patches] so each direction's values are contiguous: sorting along the
        # last axis is several times faster than along the first.
        pa = dirs @ a.T
        pb = dirs @ b.T
        pa.sort(axis=1)
        pb.sort(axis=1)
        total += float(np.mean(np.abs(pa - pb)))
    return total / repeats


def sliced_wasserstein(images_a: np.ndarray, images_b: np.ndarray, patches_per_image: int = 64,
                       patch_size: int = 7, levels: int = 3, projections: int = 256,
                       repeats: int = 4, seed: int = 0) -> dict:
    """Sliced Wasserstein distance between two image sets, on Laplacian-pyramid patches, ×1000.

    Both sets are [N, H, W, 3] (uint8, or floats on the same scale as each other). At each
    pyramid level, `patches_per_image` random `patch_size`² patches are taken from every image;
    the two patch sets are normalised per dimension by the mean and std of both sets together
    (so a difference in contrast or colour still counts, while the levels become comparable);
    then the distance is estimated with `projections` random directions, `repeats` times.

    If the sets differ in size the larger one is subsampled (seeded) to the smaller, so that both
    give the same number of patches. Patch positions are drawn once and shared by both sets:
    identical sets score exactly 0, and the comparison carries no extra position noise.

    Returns {"levels": {"64": d64, "32": d32, "16": d16}, "mean": mean of the levels} (keys are
    each level's height, as strings so that the dict round-trips through JSON unchanged).
    """
    a, b = np.asarray(images_a), np.asarray(images_b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"image sets differ in shape: {a.shape[1:]} vs {b.shape[1:]}")
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("both image sets must be non-empty")
    if len(a) > n:
        a = a[np.sort(rng.choice(len(a), n, replace=False))]
    if len(b) > n:
        b = b[np.sort(rng.choice(len(b), n, replace=False))]

    image_index = np.repeat(np.arange(n), patches_per_image)
    per_level = {}
    for level_a, level_b in zip(laplacian_pyramid(a, levels), laplacian_pyramid(b, levels)):
        position_seed = int(rng.integers(2**63))
        pa = _patches(level_a, image_index, np.random.default_rng(position_seed), patch_size)
        pb = _patches(level_b, image_index, np.random.default_rng(position_seed), patch_size)
        both = np.concatenate([pa, pb])
        mean, std = both.mean(axis=0), both.std(axis=0)
        std[std == 0] = 1.0      # a constant dimension (e.g. flat images) carries no signal
        pa = (pa - mean) / std
        pb = (pb - mean) / std
        per_level[str(level_a.shape[1])] = 1000.0 * _sliced_distance(pa, pb, rng, projections, repeats)
    return {"levels": per_level, "mean": float(np.mean(list(per_level.values())))}


def diversity(images: np.ndarray, size: int = 16, pairs: int = 10_000, seed: int = 0) -> float:
    """Mean distance between random pairs of images, downsampled to `size`×`size`.

    A mode-collapse indicator: compare a generator's value with real images' as a ratio (≈ 1:
    as spread out as the real set; ≪ 1: the generator repeats itself). Downsampling makes it
    about faces, hair and colours rather than pixel noise. The distance is the RMS difference
    per pixel on a 0..1 scale (uint8 input is divided by 255), over a fixed seeded set of
    distinct-index pairs, so the same images always give the same value.
    """
    x = _as_float_batch(images)
    if np.asarray(images).dtype == np.uint8:
        x /= 255.0
    n, h, w, c = x.shape
    if n < 2:
        raise ValueError("diversity needs at least 2 images")
    if h % size or w % size:
        raise ValueError(f"image size {h}×{w} is not a multiple of {size}")
    small = x.reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4)).reshape(n, -1)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n        # never equal to i
    return float(np.mean(np.sqrt(np.mean((small[i] - small[j]) ** 2, axis=1))))


def blur(images: np.ndarray, factor: int = 4) -> np.ndarray:
    """Downsample uint8 [N, H, W, 3] images by `factor` (area average) and upsample them back
    (bicubic): the "blurred faces" reference, a set with the right layout but no detail.

    Bicubic rather than bilinear upsampling: with it, 4× blurred faces score ≈ 330 against real
    ones; bilinear gives ≈ 400, adding its own smoothing to the detail the downsampling removed."""
    images = np.asarray(images, dtype=np.uint8)
    _, h, w, _ = images.shape
    out = np.empty_like(images)
    for k, image in enumerate(images):
        small = Image.fromarray(image, "RGB").resize((w // factor, h // factor), Image.Resampling.BOX)
        out[k] = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))
    return out
