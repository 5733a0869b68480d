"""Wording a newcomer reads: counts, notes on stderr, `--help` without type noise on flags or
placeholders in braces, the CIFAR batches' default split said aloud, and the README's names."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import LABELS, SAMPLES, stamped_classifier, tiny_classifier
from toolkit.cli import app
from toolkit.edge.words import counted

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_counted_says_one_image_and_many_images():
    assert counted(1, "image") == "1 image"
    assert counted(0, "image") == "0 images"
    assert counted(1234, "image") == "1,234 images"
    assert counted(2, "latent", "latents") == "2 latents"


def test_quantize_on_a_flat_folder_reads_right(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    from toolkit._version import __version__
    model = tiny_classifier(tmp_path / "tiny.onnx")
    proto = onnx.load(str(model))
    proto.metadata_props.add(key="toolkit.version", value=__version__)
    onnx.save(proto, str(model))
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(flat / f"{i:02d}.png")
    result = runner.invoke(app, ["quantize", str(model), "--out", str(tmp_path / "q.onnx"), "--data", str(flat),
                                 "--unlabeled", "--calibration-images", "4", "--guard-images", "1"])
    assert result.exit_code == 0, result.output
    assert "vs fp32 100.00%" not in result.output            # agreement with fp32 is not compared with fp32
    assert "1 images" not in result.output and "gate on 1 image:" in result.stdout
    assert "note:" not in result.stdout and "flat folder" in result.stderr


def test_wrap_note_goes_to_stderr(tmp_path):
    source = stamped_classifier(tmp_path / "theirs.onnx", 8, 13)
    result = runner.invoke(app, ["wrap", str(source), "--out", str(tmp_path / "mine.onnx"), "--images", str(SAMPLES)])
    assert result.exit_code == 0, result.output
    assert "no --labels" in result.stderr and "note:" not in result.stdout
    assert "wrote" in result.stdout


def _commands(group, prefix=()):
    import typer.main
    click_group = typer.main.get_command(group) if not hasattr(group, "commands") else group
    for name, command in sorted(click_group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


@pytest.mark.parametrize("command", [" ".join(c) for c in _commands(app)])
def test_help_shows_no_bool_metavar_and_no_brace_placeholder(command):
    result = runner.invoke(app, [*command.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert not re.search(r"[{}]", usage), usage


@pytest.mark.parametrize("args", [[], ["train"]])
def test_group_help_shows_no_bool_metavar(args):
    result = runner.invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0 and "<bool>" not in result.output


def write_cifar_batches(root: Path) -> Path:
    root.mkdir(parents=True)
    images = np.random.default_rng(0).integers(0, 256, (6, 3072), dtype=np.uint8)
    for name in ("data_batch_1", "test_batch"):
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": images, b"labels": [i % 2 for i in range(6)]}, fh, protocol=2)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [label.encode() for label in LABELS]}, fh, protocol=2)
    return root


def test_eval_on_cifar_batches_says_the_default_split_is_test_batch(tmp_path):
    data = write_cifar_batches(tmp_path / "cifar-10-batches-py")
    model = tiny_classifier(tmp_path / "tiny.onnx")
    result = runner.invoke(app, ["eval", "--model", str(model), "--data", str(data)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "test_batch" in notes[0] and "--split all" in notes[0]
    result = runner.invoke(app, ["eval", "--model", str(model), "--data", str(data), "--split", "val"])
    assert "note:" not in result.output


def test_readme_contract_names_the_transform_output_as_the_graph_does(tmp_path):
    out = tmp_path / "t.onnx"
    result = runner.invoke(app, ["export", "--model", "fft-lowpass", "--size", "8", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    output = onnx.load(str(out)).graph.output[0].name
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("- transform:"))
    assert f"→ `{output}`" in line, line
