"""The bad-input catalogue (issue #11), one section per class of broken promise, across every
command that takes the input: infer, eval, generate, info, bench (transform's own cases live in
test_transform_cli.py). Each case checks the exit status, exactly one `error:` line per bad input,
that the good inputs of the same call were processed, and that no file was left behind. The CLI
runs in-process (Typer's CliRunner); a subprocess only where a real process is the point (Ctrl-C).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests import helpers
from tests.helpers import REPO, write_class_tree
from toolkit.cli import app
from toolkit.edge.data import datasets
from toolkit.edge.data import images as data
from toolkit.edge.data.fsio import atomic_write

ROOT_USER = hasattr(os, "geteuid") and os.geteuid() == 0
UNREADABLE = Path("/proc/self/mem")     # a regular file whose read fails, even for root


def run(*args: object) -> tuple[int, list[str], str]:
    """(exit status, stderr lines, stdout) of one in-process call; no traceback may escape."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stderr.splitlines(), result.stdout


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("error:")]


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    """A folder of tiny models and images; the tests run inside it (generate's default grid.png)."""
    monkeypatch.chdir(tmp_path)
    helpers.colour_classifier(tmp_path / "tiny.onnx")
    helpers.colour_classifier(tmp_path / "nan.onnx", nan_when_dark=True)
    helpers.grey_generator(tmp_path / "gen.onnx")
    helpers.image(tmp_path / "red.png", (220, 30, 30))
    helpers.image(tmp_path / "blue.jpg", (30, 30, 220))
    (tmp_path / "junk.onnx").write_bytes(b"this is not a protobuf")
    return tmp_path


def bad_images(folder: Path) -> list[Path]:
    """One of each kind of input that must fail on its own (pipes are added by the callers)."""
    (folder / "text.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "lies.png").write_bytes(helpers.png_claiming(20_000, 20_000))      # 400 Mpx declared
    whole = (folder / "red.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "a\nb.png").write_text("newline in the name")
    tiff = io.BytesIO()
    Image.new("RGB", (4, 4)).save(tiff, "TIFF")
    spp = tiff.getvalue().find(b"\x15\x01\x03\x00\x01\x00\x00\x00") + 8     # SamplesPerPixel, SHORT, 1
    # 5123 samples per pixel: Pillow refuses it and also logs it
    (folder / "spp.tif").write_bytes(tiff.getvalue()[:spp] + b"\x03\x14" + tiff.getvalue()[spp + 2:])
    return [folder / n for n in ("text.png", "empty.jpg", "lies.png", "cut.png", "zero.png", "a\nb.png", "spp.tif",
                                 "missing.png")] + [Path("/dev/zero"), UNREADABLE]


# ----------------------------------------------------------------------------- 1. isolation

def test_infer_processes_every_input_on_its_own(work):
    bad = bad_images(work)
    before = helpers.every_file(work)
    with helpers.fifo(work / "pipe.png") as pipe:
        start = time.perf_counter()
        code, err, out = run("infer", work / "red.png", pipe, *bad, work / "blue.jpg", "--model", work / "tiny.onnx",
                             "--json")
        assert time.perf_counter() - start < 15          # the pipe is refused, not waited on
    assert code == 1
    assert len(errors(err)) == len(bad) + 1 and errors(err) == err           # one line per bad input, nothing else
    assert any("a\\nb.png" in line for line in err)                          # the newline is escaped
    assert [json.loads(line)["path"] for line in out.splitlines()] == [str(work / "red.png"), str(work / "blue.jpg")]
    assert helpers.every_file(work) == before | {"pipe.png"}


def test_infer_refuses_folders_it_cannot_list_and_reads_only_regular_files_in_folders(work):
    tree = work / "photos"
    (tree / "sub").mkdir(parents=True)
    helpers.image(tree / "sub" / "ok.png")
    (tree / "dev.png").symlink_to("/dev/zero")          # not a regular file: never listed
    os.mkfifo(tree / "pipe.jpg")
    code, err, out = run("infer", tree, work / "nowhere", "--model", work / "tiny.onnx", "--json")
    assert code == 1 and len(errors(err)) == 1 and "nowhere" in err[0]
    assert [Path(json.loads(line)["path"]).name for line in out.splitlines()] == ["ok.png"]


def test_eval_one_bad_model_or_image_does_not_stop_the_others(work):
    tree = write_class_tree(work / "tree", per_class=2)
    (tree / "cat" / "9999.jpg").write_bytes(b"broken")
    with helpers.fifo(work / "pipe.onnx") as pipe:
        code, err, out = run("eval", "--model", work / "tiny.onnx", "--model", work / "junk.onnx", "--model", pipe,
                             "--model", work / "gen.onnx", "--model", work / "missing.onnx", "--model",
                             work / "nan.onnx", "--data", tree, "--json")
    assert code == 1
    assert len(errors(err)) == 6 and errors(err) == err      # 4 unusable models, 1 NaN model, 1 bad image
    assert sum("9999.jpg" in line for line in err) == 1      # an image is reported once, not once per model
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["model"]).name for r in rows] == ["tiny.onnx"] and rows[0]["n"] == 20


def test_bench_one_bad_model_does_not_stop_the_others(work):
    code, err, out = run("bench", "--model", work / "junk.onnx", "--model", work / "tiny.onnx", "--model",
                         work / "missing.onnx", "--batch-size", "1", "--runs", "2", "--warmup", "0", "--no-roof",
                         "--json")
    assert code == 1 and len(errors(err)) == 2
    doc = json.loads(out)
    assert {r["model"] for r in doc["rows"]} == {"tiny-classifier"} and len(doc["errors"]) == 2


@pytest.mark.parametrize("make", ["fifo", "dev_zero", "folder", "empty", "junk", "unreadable", "newline"])
def test_info_and_generate_refuse_a_bad_model_in_one_line(work, make):
    target = {"fifo": work / "pipe.onnx", "dev_zero": Path("/dev/zero"), "folder": work, "empty": work / "e.onnx",
              "junk": work / "junk.onnx", "unreadable": UNREADABLE, "newline": work / "x\ny.onnx"}[make]
    if make == "empty":
        target.write_bytes(b"")
    if make == "newline":
        target.write_bytes(b"\x08\x01")
    with helpers.fifo(target) if make == "fifo" else _nothing():
        for args in (["info", target], ["generate", "--model", target, "--n", "2"]):
            code, err, _ = run(*args)
            assert code == 1 and len(err) == 1 and err[0].startswith("error:"), (args, err)
    assert not (work / "grid.png").exists()


def _nothing():
    import contextlib
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- 2. bounded resources

@pytest.mark.parametrize("args", [
    ["infer", "red.png", "--batch-size", "5000"],
    ["eval", "--model", "tiny.onnx", "--data", ".", "--batch-size", "5000"],
    ["bench", "--model", "tiny.onnx", "--batch-size", "1", "--batch-size", "1000000"],
    ["generate", "--model", "gen.onnx", "--n", "2000"],                       # a grid holds 1,024
    ["generate", "--model", "gen.onnx", "--n", "200000", "--out-dir", "many"],
])
def test_requests_over_a_stated_limit_are_refused_up_front(work, args):
    before = helpers.every_file(work)
    start = time.perf_counter()
    code, err, _ = run(*args)
    assert code == 1 and len(err) == 1 and ("limit" in err[0] or "at most" in err[0]), err
    assert time.perf_counter() - start < 5 and helpers.every_file(work) == before


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(work):
    (work / "huge.png").write_bytes(helpers.png_claiming(9000, 9000))           # 81 Mpx > 64 Mpx
    code, err, out = run("infer", "huge.png", "red.png", "--model", "tiny.onnx", "--json")
    assert code == 1 and len(err) == 1 and "too large" in err[0] and len(out.splitlines()) == 1


def test_eval_streams_the_data_set_in_chunks_of_the_batch_size(work, monkeypatch):
    tree = write_class_tree(work / "tree", per_class=3)
    seen: list[int] = []
    chunks = datasets.SplitListing.chunks

    def spy(self, *args, **kwargs):
        for chunk in chunks(self, *args, **kwargs):
            seen.append(len(chunk.labels))
            yield chunk
    monkeypatch.setattr(datasets.SplitListing, "chunks", spy)
    code, _, out = run("eval", "--model", "tiny.onnx", "--data", tree, "--batch-size", "4", "--json")
    assert code == 0 and json.loads(out)["n"] == 30 and max(seen) == 4 and sum(seen) == 30


@pytest.mark.slow
def test_eval_memory_follows_the_batch_not_the_data_set(tmp_path):
    """Python-side peak (numpy arrays included) while evaluating 40 vs 160 images of 96×96."""
    import tracemalloc

    from toolkit.edge.infer import evaluate_stream
    from toolkit.edge.runtime import open_model

    model = open_model(helpers.colour_classifier(tmp_path / "tiny.onnx"))
    peaks = []
    for n in (4, 16):
        tree = write_class_tree(tmp_path / f"t{n}", per_class=n, size=(96, 96))
        listing = datasets.list_split(tree, "all")
        tracemalloc.start()
        results = evaluate_stream([model], listing, "tree", on_error=pytest.fail, batch_size=8)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert results[0].n == 10 * n
    assert peaks[1] < 1.5 * peaks[0] + 2**20, peaks       # 4× the images, not 4× the memory


def test_generate_streams_to_files_and_grid(work):
    code, err, _ = run("generate", "--model", "gen.onnx", "--n", "70", "--out-dir", "faces", "--out", "g.png")
    assert code == 0 and not err
    assert len(list((work / "faces").glob("*.png"))) == 70
    assert Image.open(work / "g.png").size == (9 * 66 + 2, 8 * 66 + 2)       # 9 columns, 8 rows of 64 + 2 px


# ----------------------------------------------------------------------------- 3. nothing half-written

def test_eval_markdown_onto_a_folder_is_refused_before_evaluating(work):
    tree = write_class_tree(work / "tree", per_class=1)
    (work / "report").mkdir()
    before = helpers.every_file(work)
    code, err, out = run("eval", "--model", "junk.onnx", "--data", tree, "--markdown", "report")
    assert code == 1 and len(err) == 1 and "--markdown" in err[0] and not out     # the junk model never opened
    assert helpers.every_file(work) == before


@pytest.mark.parametrize("args", [["--out", "folder"], ["--out-dir", "file.txt"], ["--out", "file.txt/grid.png"]])
def test_generate_destinations_are_checked_before_generating(work, args):
    (work / "folder").mkdir()
    (work / "file.txt").write_text("x")
    before = helpers.every_file(work)
    code, err, _ = run("generate", "--model", "gen.onnx", "--n", "4", *args)
    assert code == 1 and len(err) == 1 and helpers.every_file(work) == before


@pytest.mark.parametrize("failure", [OSError("disk full"), KeyboardInterrupt()])
def test_the_atomic_writer_leaves_nothing_on_any_failure(tmp_path, failure):
    (tmp_path / "grid.png").write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise failure
    with pytest.raises(type(failure)):
        atomic_write(tmp_path / "grid.png", write)
    assert helpers.every_file(tmp_path) == {"grid.png"} and (tmp_path / "grid.png").read_bytes() == b"old"


def test_save_image_that_fails_to_encode_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        data.save_image(np.zeros((4, 4, 4), np.uint8), tmp_path / "x.jpg")       # JPEG has no alpha: fails mid-write
    assert helpers.every_file(tmp_path) == set()


# ----------------------------------------------------------------------------- 5. promises about results

def test_non_finite_scores_are_a_per_input_error_and_json_stays_json(work):
    helpers.image(work / "dark.png", (10, 10, 10))
    code, err, out = run("infer", "red.png", "dark.png", "--model", "nan.onnx", "--json")
    assert code == 1 and len(err) == 1 and "dark.png" in err[0] and "not finite" in err[0]
    (row,) = [json.loads(line, parse_constant=pytest.fail) for line in out.splitlines()]
    assert row["path"] == "red.png" and all(np.isfinite(t["prob"]) for t in row["top"])


def test_top_k_is_clamped_to_the_number_of_labels(work):
    code, _, out = run("infer", "red.png", "--model", "tiny.onnx", "--top-k", "50", "--json")
    assert code == 0 and len(json.loads(out)["top"]) == 10
    code, _, table = run("infer", "red.png", "--model", "tiny.onnx", "--top-k", "50")
    assert code == 0 and "#10" in table and "#11" not in table


def test_names_are_text_not_markup_in_tables(work):
    helpers.image(work / "[bold]x.png")
    code, _, table = run("infer", "[bold]x.png", "--model", "tiny.onnx")
    assert code == 0 and "[bold]x.png" in table


def test_exif_orientation_is_applied_when_decoding(tmp_path):
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, :20] = (250, 0, 0)                       # red left half, blue right half
    upright[:, 20:] = (0, 0, 250)
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)   # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6                                    # "rotate 90° clockwise to view"
    stored.save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    got = data.load_image(tmp_path / "sideways.jpg")
    assert got.shape == upright.shape and np.abs(got.astype(int) - upright).mean() < 8


@pytest.mark.skipif(not (REPO / "models" / "cifar_cnn.onnx").is_file(), reason="needs `make models`")
def test_exif_rotated_photo_gets_the_same_answer_as_upright(tmp_path):
    sample = data.load_image(REPO / "models" / "samples" / "dog.jpg")
    Image.fromarray(sample).save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(sample).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "sideways.png", exif=exif)
    code, _, out = run("infer", tmp_path / "upright.png", tmp_path / "sideways.png", "--json")
    first, second = (json.loads(line)["top"] for line in out.splitlines())
    assert code == 0 and first == second


@pytest.mark.slow
def test_ctrl_c_says_interrupted_and_exits_130(tmp_path):
    """A real SIGINT in the middle of a command, through the `toolkit` entry point."""
    script = (
        "import os, signal, sys, time\n"
        # A shell starts background jobs with SIGINT ignored, and Python then installs no handler;
        # a terminal's foreground command has Python's usual one.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "import toolkit.edge.infer as infer\n"
        "def stall(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "    yield\n"
        "infer.classify_files = stall\n"
        "from toolkit.cli import main\n"
        f"sys.argv = ['toolkit', 'infer', {str(REPO / 'models' / 'samples')!r},\n"
        f"            '--model', {str(tmp_path / 'm.onnx')!r}]\n"
        "main()\n")
    helpers.colour_classifier(tmp_path / "m.onnx")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", done.stderr[-500:]


# ----------------------------------------------------------------------------- 7. validation before work

def test_bench_compare_file_is_read_before_measuring(work):
    (work / "old.json").write_text("{not json")
    code, err, out = run("bench", "--model", "tiny.onnx", "--compare", "old.json", "--runs", "2", "--no-roof")
    assert code == 1 and errors(err) == err and len(err) == 1 and "old.json" in err[0] and not out


@pytest.mark.parametrize("args", [["--out", "red.png"], ["--data", "nowhere"]])
def test_bench_destinations_and_data_are_checked_before_measuring(work, args):
    before = helpers.every_file(work)
    code, err, out = run("bench", "--model", "tiny.onnx", "--runs", "2", "--no-roof", *args)
    assert code == 1 and len(err) == 1 and not out and helpers.every_file(work) == before


def test_eval_without_data_fails_before_opening_models(work):
    code, err, _ = run("eval", "--model", "junk.onnx", "--data", "nowhere")
    assert code == 1 and len(err) == 1 and "nowhere" in err[0]
