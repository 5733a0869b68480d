"""The sample-quality measures on small synthetic image sets the tests make themselves."""

import numpy as np
import pytest
from PIL import Image

from toolkit.edge import quality

# Small settings keep each distance well under a second; the defaults are for the benchmark.
FAST = dict(patches_per_image=16, projections=64, repeats=2)


def smooth_images(n: int, seed: int, size: int = 64) -> np.ndarray:
    """Random 4×4 colour fields upsampled bicubically: face-free but image-like (smooth) pictures."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC))
                     for c in coarse])


def noise_images(n: int, seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_pyramid_levels_and_reconstruction():
    images = smooth_images(4, seed=0)
    pyramid = quality.laplacian_pyramid(images, levels=3)
    assert [p.shape for p in pyramid] == [(4, 64, 64, 3), (4, 32, 32, 3), (4, 16, 16, 3)]
    assert all(p.dtype == np.float32 for p in pyramid)
    # The bands are differences against the upsampled coarser level, so collapsing the pyramid
    # must give back the image exactly (up to float rounding).
    x = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        x = band + quality._pyr_up(x)
    np.testing.assert_allclose(x, images.astype(np.float32), atol=1e-3)


def test_pyramid_of_flat_image_is_flat():
    # The kernel sums to 1 and the padding mirrors, so a flat image has empty bands and a flat
    # residual, with no edge artefacts.
    flat = np.full((2, 64, 64, 3), 100, dtype=np.uint8)
    bands_64, bands_32, residual = quality.laplacian_pyramid(flat)
    assert np.abs(bands_64).max() < 1e-3 and np.abs(bands_32).max() < 1e-3
    np.testing.assert_allclose(residual, 100, atol=1e-3)


def test_pyramid_rejects_bad_input():
    with pytest.raises(ValueError):
        quality.laplacian_pyramid(np.zeros((2, 64, 64), dtype=np.uint8))
    with pytest.raises(ValueError):
        quality.laplacian_pyramid(np.zeros((2, 30, 30, 3), dtype=np.uint8), levels=3)


def test_identical_sets_score_zero():
    images = smooth_images(32, seed=1)
    result = quality.sliced_wasserstein(images, images.copy(), **FAST)
    assert set(result["levels"]) == {"64", "32", "16"}
    assert result["mean"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_noise_is_far_from_smooth_images():
    a, b = smooth_images(64, seed=2), smooth_images(64, seed=3)
    same = quality.sliced_wasserstein(a, b, **FAST)["mean"]
    noise = quality.sliced_wasserstein(noise_images(64, seed=4), b, **FAST)["mean"]
    assert noise > 10 * same
    assert noise > 300            # the scale of the reference measure: real faces vs noise ≈ 650


def test_mean_is_the_average_of_the_levels():
    result = quality.sliced_wasserstein(smooth_images(16, 5), noise_images(16, 6), **FAST)
    assert result["mean"] == pytest.approx(np.mean(list(result["levels"].values())))


@pytest.mark.slow
def test_deterministic_for_a_seed():
    a, b = smooth_images(32, seed=7), smooth_images(32, seed=8)
    first = quality.sliced_wasserstein(a, b, seed=3, **FAST)
    assert quality.sliced_wasserstein(a, b, seed=3, **FAST) == first
    assert quality.sliced_wasserstein(a, b, seed=4, **FAST) != first


def test_sets_of_different_sizes():
    result = quality.sliced_wasserstein(smooth_images(40, 9), smooth_images(24, 10), **FAST)
    assert np.isfinite(result["mean"]) and result["mean"] > 0
    with pytest.raises(ValueError):
        quality.sliced_wasserstein(smooth_images(4, 9), smooth_images(4, 9, size=32), **FAST)


def test_diversity():
    one = smooth_images(1, seed=11)
    assert quality.diversity(np.repeat(one, 50, axis=0)) == pytest.approx(0.0, abs=1e-7)
    varied = smooth_images(50, seed=12)
    assert quality.diversity(varied) > 0.1
    # A "collapsed" set of two faces repeated is less spread out than 50 different ones.
    collapsed = np.repeat(varied[:2], 25, axis=0)
    assert quality.diversity(collapsed) < quality.diversity(varied)
    assert quality.diversity(varied) == quality.diversity(varied)    # fixed pairs: deterministic


def test_blur_keeps_layout_and_removes_detail():
    images = noise_images(4, seed=13)
    blurred = quality.blur(images, factor=4)
    assert blurred.shape == images.shape and blurred.dtype == np.uint8

    def fine(x: np.ndarray) -> float:
        return float(np.abs(quality.laplacian_pyramid(x)[0]).mean())

    assert fine(blurred) < 0.2 * fine(images)
    flat = np.full((1, 64, 64, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(quality.blur(flat), flat)
