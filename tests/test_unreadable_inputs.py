"""An input that exists but cannot be read is one bad input like any other: one `error:` line, the
other inputs processed, exit status 1 — in infer, transform and eval, whether the file itself
cannot be opened, its folder cannot be listed, or its folder cannot be entered.

Each case runs twice: with real file modes (skipped as root, where modes are not enforced) and
with the refusal injected at the system calls the toolkit and its parser make (os.access, os.open,
os.stat, os.listdir, os.scandir), which runs anywhere, root included.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import image, tiny_classifier
from toolkit.cli import app

runner = CliRunner()
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class Refusals:
    """Make paths unreadable for this process, by file mode or by injected EACCES."""

    def __init__(self, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.how, self.restore = how, []
        self.files: set[str] = set()        # cannot be opened
        self.unlisted: set[str] = set()     # folders that cannot be listed
        self.closed: set[str] = set()       # folders that can be listed but not entered
        if how == "injected":
            self._inject(monkeypatch)

    def file(self, path: Path) -> None:
        self._refuse(path, 0o000, self.files)

    def unlistable(self, folder: Path) -> None:
        self._refuse(folder, 0o000, self.unlisted)

    def unenterable(self, folder: Path) -> None:
        self._refuse(folder, 0o644, self.closed)

    def _refuse(self, path: Path, mode: int, names: set[str]) -> None:
        if self.how == "mode":
            self.restore.append((path, stat.S_IMODE(path.stat().st_mode)))
            path.chmod(mode)
        else:
            names.add(os.path.abspath(path))

    def _denied(self, path, names: set[str]) -> bool:
        return not isinstance(path, int) and os.path.abspath(os.fsdecode(path)) in names

    def _inside_closed(self, path) -> bool:
        return not isinstance(path, int) and os.path.dirname(os.path.abspath(os.fsdecode(path))) in self.closed

    def _inject(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = {name: getattr(os, name) for name in ("access", "open", "stat", "listdir", "scandir")}

        def refuse(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

        def access(path, mode, *args, **kwargs):
            if self._inside_closed(path) or (mode & os.R_OK and self._denied(path, self.files | self.unlisted)):
                return False
            return real["access"](path, mode, *args, **kwargs)

        def open_(path, flags, *args, **kwargs):
            if self._denied(path, self.files | self.unlisted) or self._inside_closed(path):
                refuse(path)
            return real["open"](path, flags, *args, **kwargs)

        def stat_(path, *args, **kwargs):
            if self._inside_closed(path):
                refuse(path)
            return real["stat"](path, *args, **kwargs)

        def lister(name):
            def listing(path=".", *args, **kwargs):
                if self._denied(path, self.unlisted):
                    refuse(path)
                return real[name](path, *args, **kwargs)
            return listing

        for name, fake in (("access", access), ("open", open_), ("stat", stat_), ("listdir", lister("listdir")),
                           ("scandir", lister("scandir"))):
            monkeypatch.setattr(os, name, fake)

    def undo(self) -> None:
        for path, mode in reversed(self.restore):
            path.chmod(mode)


@pytest.fixture(params=["mode", "injected"])
def refusals(request, monkeypatch):
    if request.param == "mode" and ROOT:
        pytest.skip("root reads files whatever their mode; the injected variant covers this case")
    made = Refusals(request.param, monkeypatch)
    yield made
    made.undo()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path / "cache"))


def images(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [image(folder / name, colour=(40 * i, 200, 90)) for i, name in enumerate(names)]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def infer(model: Path, *inputs: Path):
    return runner.invoke(app, ["infer", *map(str, inputs), "--model", str(model), "--json"])


def classified(result) -> list[str]:
    return [Path(json.loads(line)["path"]).name for line in result.stdout.splitlines() if line.startswith("{")]


def transform(out: Path, *inputs: Path):
    return runner.invoke(app, ["transform", *map(str, inputs), "--op", "fft-lowpass", "--out", str(out)])


# ----------------------------------------------------------------------------- a file named on the command line

def test_infer_reports_an_unreadable_file_and_classifies_the_others(tmp_path, refusals):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    first, locked, last = images(tmp_path / "in", "a.png", "locked.png", "c.png")
    refusals.file(locked)
    result = infer(model, first, locked, last)
    assert result.exit_code == 1, result.output
    assert classified(result) == ["a.png", "c.png"]
    (line,) = error_lines(result)
    assert line.startswith("error: ") and "locked.png" in line and "ermission denied" in line


def test_transform_reports_an_unreadable_file_and_writes_the_others(tmp_path, refusals):
    first, locked, last = images(tmp_path / "in", "a.png", "locked.png", "c.png")
    refusals.file(locked)
    result = transform(tmp_path / "out", first, locked, last)
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "c.png"]
    (line,) = error_lines(result)
    assert line.startswith("error: ") and "locked.png" in line and "ermission denied" in line


# ----------------------------------------------------------------------------- inside a folder

def folder_with_refusals(tmp_path: Path, refusals: Refusals) -> Path:
    """in/a.png, in/locked.png (cannot be opened), in/hidden/b.png (folder cannot be listed),
    in/shut/c.png (folder listed but not entered), in/z.png."""
    root = tmp_path / "in"
    images(root, "a.png", "locked.png", "z.png")
    images(root / "hidden", "b.png")
    images(root / "shut", "c.png")
    refusals.file(root / "locked.png")
    refusals.unlistable(root / "hidden")
    refusals.unenterable(root / "shut")
    return root


def check_folder_errors(result) -> None:
    lines = error_lines(result)
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), lines
    assert any("locked.png" in line for line in lines)
    assert any("hidden" in line and "cannot list folder" in line for line in lines)
    assert any("c.png" in line for line in lines)


def test_infer_over_a_folder_reports_each_unreadable_part_once(tmp_path, refusals):
    model = tiny_classifier(tmp_path / "tiny.onnx")
    root = folder_with_refusals(tmp_path, refusals)
    result = infer(model, root)
    assert result.exit_code == 1, result.output
    assert classified(result) == ["a.png", "z.png"]
    check_folder_errors(result)


def test_transform_over_a_folder_reports_each_unreadable_part_once(tmp_path, refusals):
    root = folder_with_refusals(tmp_path, refusals)
    result = transform(tmp_path / "out", root)
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "z.png"]
    check_folder_errors(result)


# ----------------------------------------------------------------------------- eval

def test_eval_reports_unreadable_models_files_and_class_folders(tmp_path, refusals):
    model = tiny_classifier(tmp_path / "tiny.onnx", labels=["cat", "dog", "emu"])
    locked_model = tiny_classifier(tmp_path / "locked.onnx", labels=["cat", "dog", "emu"])
    data = tmp_path / "data"
    images(data / "cat", "0.png", "1.png")
    images(data / "dog", "0.png", "1.png")
    images(data / "emu", "0.png")
    refusals.file(data / "dog" / "1.png")
    refusals.unlistable(data / "emu")
    refusals.file(locked_model)
    result = runner.invoke(app, ["eval", "--model", str(model), "--model", str(locked_model), "--data", str(data),
                                 "--json"])
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), lines
    assert any("locked.onnx" in line for line in lines)
    assert any("1.png" in line and "dog" in line for line in lines)
    assert any("emu" in line and "cannot list folder" in line for line in lines)
    (report,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert report["n"] == 3
