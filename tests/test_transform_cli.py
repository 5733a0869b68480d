"""`toolkit transform` end to end on images the tests write: good and bad files, every op,
--compare, option errors, and no torch import once the graphs are built."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toolkit.core import transforms
from toolkit.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def transform_cache(tmp_path_factory, monkeypatch):
    """One cache of built transform graphs for the whole session (shared with test_spectral)."""
    path = tmp_path_factory.getbasetemp() / "transform-cache"
    monkeypatch.setenv("TOOLKIT_CACHE", str(path))
    return path


def write_image(path, size, seed=0):
    image = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return image


def read(path):
    return np.asarray(Image.open(path))


def transform(*args):
    return runner.invoke(app, ["transform", *map(str, args)])


def test_lowpass_on_images_of_any_size(tmp_path):
    a = write_image(tmp_path / "a.png", (32, 32), seed=1)
    b = write_image(tmp_path / "b.png", (20, 30), seed=2)
    result = transform(tmp_path / "a.png", tmp_path / "b.png", "--op", "fft-lowpass", "--radius", 0.5,
                       "--out", tmp_path / "out", "--compare")
    assert result.exit_code == 0, result.stderr
    for name, image in [("a", a), ("b", b)]:
        out = read(tmp_path / "out" / f"{name}.png")
        expected = transforms.reference_lowpass(image[None], 0.5)[0]
        assert out.shape == image.shape and np.abs(out.astype(int) - expected).max() <= 1
        compare = read(tmp_path / "out" / f"{name}.compare.png")
        h, w = image.shape[:2]
        assert compare.shape == (h + 4, 2 * w + 6, 3)                 # before | after, 2-pixel borders
        np.testing.assert_array_equal(compare[2:2 + h, 2:2 + w], image)


def test_matmul_form_and_single_output_file(tmp_path):
    image = write_image(tmp_path / "a.png", (32, 32))
    result = transform(tmp_path / "a.png", "--op", "fft-lowpass", "--form", "matmul", "--out", tmp_path / "f.png")
    assert result.exit_code == 0, result.stderr
    expected = transforms.reference_lowpass(image[None], 0.5)[0]
    assert np.abs(read(tmp_path / "f.png").astype(int) - expected).max() <= 1


def test_bad_files_are_reported_and_the_rest_processed(tmp_path):
    write_image(tmp_path / "good.png", (16, 16))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    result = transform(tmp_path / "bad.jpg", tmp_path / "good.png", tmp_path / "empty.png", tmp_path / "absent.png",
                       "--op", "fft-lowpass", "--out", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "bad.jpg" in lines[0] and "empty.png" in lines[1] and "absent.png" in lines[2]
    assert "Traceback" not in result.stderr + result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


def test_walsh_needs_power_of_two_sizes(tmp_path):
    image = write_image(tmp_path / "square.png", (16, 32))
    write_image(tmp_path / "odd.png", (20, 32))
    result = transform(tmp_path / "odd.png", tmp_path / "square.png", "--op", "walsh-compress", "--keep", 0.25,
                       "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'odd.png'}: walsh-compress needs a power-of-two height and width, got 20×32 "
        "(crop or resize it first)"]
    expected = transforms.reference_walsh_compress(image[None], 0.25)[0]
    assert np.abs(read(tmp_path / "out" / "square.png").astype(int) - expected).max() <= 1


def test_spectrum_is_written_as_a_viewable_picture(tmp_path):
    write_image(tmp_path / "a.png", (24, 40))
    result = transform(tmp_path / "a.png", "--op", "fft-spectrum", "--out", tmp_path / "s.png")
    assert result.exit_code == 0, result.stderr
    picture = read(tmp_path / "s.png")
    assert picture.shape == (24, 40, 3) and picture.dtype == np.uint8
    assert picture.max() == 255 and picture[12, 20].max() == 255          # the DC bin, centred by fftshift
    assert len(np.unique(picture)) > 50


def test_folders_are_expanded_and_names_kept_apart(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        write_image(tmp_path / "in" / sub / "same.png", (16, 16))
    result = transform(tmp_path / "in", "--op", "fft-lowpass", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["same-2.png", "same.png"]


@pytest.mark.parametrize("args,message", [
    (["--op", "blur"], "unknown op"),
    (["--op", "fft-lowpass", "--keep", "0.5"], "--keep does not apply to fft-lowpass"),
    (["--op", "fft-lowpass", "--radius", "0"], "radius must be in (0, 1]"),
    (["--op", "walsh-compress", "--form", "dft"], "only the matmul form"),
    (["--op", "fft-lowpass", "--form", "fast"], "unknown form"),
])
def test_option_errors_are_one_line(tmp_path, args, message):
    write_image(tmp_path / "a.png", (16, 16))
    result = transform(tmp_path / "a.png", *args, "--out", tmp_path / "out")
    assert result.exit_code == 1 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_one_output_file_for_several_inputs_is_refused(tmp_path):
    write_image(tmp_path / "a.png", (16, 16))
    write_image(tmp_path / "b.png", (16, 16))
    result = transform(tmp_path / "a.png", tmp_path / "b.png", "--op", "fft-lowpass", "--out", tmp_path / "one.png")
    assert result.exit_code == 1 and "give a folder" in result.stderr


def test_inference_path_does_not_import_torch(tmp_path, transform_cache):
    write_image(tmp_path / "a.png", (16, 16))
    args = ["transform", str(tmp_path / "a.png"), "--op", "fft-lowpass", "--out", str(tmp_path / "out")]
    assert runner.invoke(app, args).exit_code == 0                          # builds the graph if needed
    code = ("import sys; from typer.testing import CliRunner; from toolkit.cli import app; "
            f"r = CliRunner().invoke(app, {args!r}); "
            "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules, 'torch imported'")
    env = {**os.environ, "TOOLKIT_CACHE": str(transform_cache)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
