"""`toolkit transform` end to end on images the tests write: good and bad files, every op,
--compare, option errors, every input on its own (FIFO, 1×1 first, too large), --out onto an
input, the graph cache (content-hash keys, corrupt files rebuilt, bounded), and no torch import."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.edge.spectral import transforms

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


# A single output file in the matmul form; a 1×10000 line, which the DFT form takes cheaply.
@pytest.mark.parametrize(("size", "form"), [((32, 32), "matmul"), ((1, 10000), "dft")])
def test_single_output_file_matches_the_reference(tmp_path, size, form):
    image = write_image(tmp_path / "a.png", size)
    result = transform(tmp_path / "a.png", "--op", "fft-lowpass", "--form", form, "--out", tmp_path / "f.png")
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
        (f"error: {tmp_path / 'odd.png'}: walsh-compress needs a power-of-two height and width, got 20×32 "
         "(crop or resize it first)")]
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
    (["--op", "blur"], "--op blur is not one of fft-lowpass, fft-spectrum, walsh-compress"),
    (["--op", "fft-lowpass", "--keep", "0.5"], "--keep does not apply to fft-lowpass"),
    (["--op", "fft-lowpass", "--radius", "0"], "radius must be in (0, 1]"),
    (["--op", "walsh-compress", "--form", "dft"], "only the matmul form"),
    (["--op", "fft-lowpass", "--form", "fast"], "--form fast is not one of dft, matmul"),
])
def test_option_errors_are_one_line(tmp_path, args, message):
    write_image(tmp_path / "a.png", (16, 16))
    result = transform(tmp_path / "a.png", *args, "--out", tmp_path / "out")
    assert result.exit_code in (1, 2) and message in result.stderr      # 2: refused while parsing
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_one_output_file_for_several_inputs_is_refused(tmp_path):
    write_image(tmp_path / "a.png", (16, 16))
    write_image(tmp_path / "b.png", (16, 16))
    result = transform(tmp_path / "a.png", tmp_path / "b.png", "--op", "fft-lowpass", "--out", tmp_path / "one.png")
    assert result.exit_code == 1 and "give a folder" in result.stderr


@pytest.mark.slow
def test_building_and_running_graphs_does_not_import_torch(tmp_path):
    write_image(tmp_path / "a.png", (16, 16))
    write_image(tmp_path / "b.png", (8, 8))
    code = ("import sys; from typer.testing import CliRunner; from toolkit.cli import app\n"
            "for op, form in [('fft-lowpass', 'dft'), ('fft-lowpass', 'matmul'), ('fft-spectrum', 'dft'),\n"
            "                 ('fft-spectrum', 'matmul'), ('walsh-compress', 'matmul')]:\n"
            f"    args = ['transform', {str(tmp_path / 'a.png')!r}, {str(tmp_path / 'b.png')!r}, '--op', op,\n"
            f"            '--form', form, '--out', {str(tmp_path / 'out')!r}]\n"
            "    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n"
            "assert not [m for m in sys.modules if m.startswith('toolkit.pytorch')], 'build layer imported'")
    env = {**os.environ, "TOOLKIT_CACHE": str(tmp_path / "fresh-cache")}    # every graph is built here
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ----------------------------------------------------------------------------- every input on its own

def test_a_1x1_image_first_does_not_stop_the_call(tmp_path):
    tiny = write_image(tmp_path / "a_tiny.png", (1, 1))
    big = write_image(tmp_path / "b.png", (12, 10))
    for form in ("dft", "matmul"):
        result = transform(tmp_path / "a_tiny.png", tmp_path / "b.png", "--op", "fft-lowpass", "--radius", 0.3,
                           "--form", form, "--out", tmp_path / form)
        assert result.exit_code == 0, result.stderr
        for name, image in [("a_tiny", tiny), ("b", big)]:
            expected = transforms.reference_lowpass(image[None], 0.3)[0]
            assert np.abs(read(tmp_path / form / f"{name}.png").astype(int) - expected).max() <= 1


def test_fifo_too_large_and_bad_inputs_each_get_one_line(tmp_path):
    write_image(tmp_path / "good.png", (16, 16))
    write_image(tmp_path / "wide.png", (1, 3000))                          # over the matmul limit
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    result = transform(tmp_path / "pipe.png", "/dev/zero", tmp_path / "wide.png", tmp_path / "bad.png",
                       tmp_path / "good.png", "--op", "fft-spectrum", "--form", "matmul", "--out", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines), lines
    assert "pipe.png" in lines[0] and "not a regular file" in lines[0]
    assert "/dev/zero" in lines[1] and "not a regular file" in lines[1]
    assert "wide.png" in lines[2] and "limit of 2048 px per side" in lines[2]
    assert "bad.png" in lines[3]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


@pytest.mark.parametrize("out", ["a.png", ".", "link.png"])
def test_out_onto_an_input_is_refused(tmp_path, monkeypatch, out):
    write_image(tmp_path / "a.png", (16, 16))
    (tmp_path / "link.png").symlink_to(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    monkeypatch.chdir(tmp_path)
    result = transform("a.png", "--op", "fft-lowpass", "--out", out)
    assert result.exit_code == 1 and "would overwrite the input" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "link.png"]


# ----------------------------------------------------------------------------- cache

def cache_files(cache):
    return sorted((cache / "transforms").glob("*.onnx"))


def test_cache_is_content_keyed_rebuilds_corrupt_files_and_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))
    first = transforms.cached_transform("fft-lowpass", {"radius": 0.5}, "matmul", (8, 8))
    assert transforms.cached_transform("fft-lowpass", {"radius": 0.5}, "matmul", (8, 8)) == first
    # A change in the code that builds graphs gives a new key: the old graph is not reused.
    monkeypatch.setattr(transforms, "_builder_digest", lambda: "other code")
    second = transforms.cached_transform("fft-lowpass", {"radius": 0.5}, "matmul", (8, 8))
    assert second != first and second.is_file()
    # A corrupt file (its bytes no longer match the hash in its name) is deleted and rebuilt.
    second.write_bytes(second.read_bytes()[:100])
    rebuilt = transforms.cached_transform("fft-lowpass", {"radius": 0.5}, "matmul", (8, 8))
    assert rebuilt == second and transforms._digest(rebuilt.read_bytes()) == rebuilt.stem.rsplit("_", 1)[-1]
    # Bounded: the least recently used files go first.
    monkeypatch.setattr(transforms, "CACHE_MAX_FILES", 3)
    for side in (2, 4, 16):
        transforms.cached_transform("fft-lowpass", {"radius": 0.5}, "matmul", (side, side))
    names = [p.name for p in cache_files(tmp_path / "cache")]
    assert len(names) == 3 and first.name not in names
    assert not [p for p in (tmp_path / "cache" / "transforms").iterdir() if p.suffix != ".onnx"]
