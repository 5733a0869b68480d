"""Commands that take many inputs cost O(n) path look-ups, counted rather than timed: `toolkit
transform FOLDER --out DIR` checks that no output overwrites an input by resolving each path once
(a set of resolved paths for symlinks, of device and inode for hard links), not once per pair.
The overwrite protection itself still holds: onto an input directly, through a symlink, through a
hard link.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from toolkit.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path_factory.getbasetemp() / "many-inputs-cache"))


def folder_of_images(root: Path, n: int) -> Path:
    """n tiny PNGs spread over a few sub-folders, several sharing a file name."""
    rng = np.random.default_rng(n)
    for i in range(n):
        folder = root / f"part{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i // 4 % 5}-{i}.png")
    return root


def counted(monkeypatch) -> Counter:
    """Count every path resolution: os.path.realpath, os.stat and Path.resolve (which may call the others)."""
    calls: Counter = Counter()
    for owner, name in ((os.path, "realpath"), (os, "stat"), (Path, "resolve")):
        real = getattr(owner, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)
        monkeypatch.setattr(owner, name, wrapper)
    return calls


def transform_calls(tmp_path: Path, monkeypatch, n: int, compare: bool) -> int:
    root = folder_of_images(tmp_path / f"in{n}", n)
    out = tmp_path / f"out{n}"
    with monkeypatch.context() as patch:
        calls = counted(patch)
        result = runner.invoke(app, ["transform", str(root), "--op", "fft-lowpass", "--out", str(out),
                                     *(["--compare"] if compare else [])])
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.png"))) == n * (2 if compare else 1)
    return sum(calls.values())


@pytest.mark.slow
@pytest.mark.parametrize("compare", [False, True])
def test_transform_path_lookups_grow_linearly(tmp_path, monkeypatch, compare):
    transform_calls(tmp_path, monkeypatch, 2, compare)        # graph built and cached outside the count
    small, large = (transform_calls(tmp_path, monkeypatch, n, compare) for n in (24, 96))
    # Linear: a·n + c, so four times the inputs cost at most four times the calls. One look-up per
    # pair would cost 16 times as many (2·n² realpath calls: 1,152 at 24 inputs, 18,432 at 96).
    assert large <= 4 * small, (small, large)


# ----------------------------------------------------------------------------- protection still in place

def picture(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(path)
    return path


@pytest.mark.parametrize("link", ["symlink", "hardlink", "same-folder"])
def test_an_output_onto_an_input_is_refused(tmp_path, link):
    source = picture(tmp_path / "in" / "a.png")
    picture(tmp_path / "in" / "b.png")
    out = tmp_path / "in" if link == "same-folder" else tmp_path / "out"
    if link == "symlink":
        out.mkdir()
        (out / "a.png").symlink_to(source)
    elif link == "hardlink":
        out.mkdir()
        os.link(source, out / "a.png")
    before = source.read_bytes()
    result = runner.invoke(app, ["transform", str(tmp_path / "in"), "--op", "fft-lowpass", "--out", str(out)])
    assert result.exit_code == 1 and "would overwrite the input" in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert source.read_bytes() == before
    assert not (out / "b.png").exists() or out == tmp_path / "in"


def test_an_input_reached_through_a_symlinked_folder_is_protected(tmp_path):
    source = picture(tmp_path / "real" / "a.png")
    before = source.read_bytes()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    result = runner.invoke(app, ["transform", str(tmp_path / "alias" / "a.png"), "--op", "fft-lowpass",
                                 "--out", str(tmp_path / "real")])
    assert result.exit_code == 1 and "would overwrite the input" in result.stderr, result.output
    assert source.read_bytes() == before


def test_compare_pictures_cannot_overwrite_an_input_either(tmp_path):
    picture(tmp_path / "in" / "a.png")
    other = picture(tmp_path / "in" / "z.png")
    (tmp_path / "out").mkdir()
    os.link(other, tmp_path / "out" / "a.compare.png")    # where a.png's before|after picture would go
    args = ["transform", str(tmp_path / "in"), "--op", "fft-lowpass", "--out", str(tmp_path / "out")]
    refused = runner.invoke(app, [*args, "--compare"])
    assert refused.exit_code == 1 and "would overwrite the input" in refused.stderr, refused.output
    assert "z.png" in refused.stderr
    assert runner.invoke(app, args).exit_code == 0
