"""The runtime package on its own: a wheel built from this checkout, installed into a fresh venv that
has no torch, runs `toolkit infer models/samples` and `toolkit generate --n 4 --out x.png` from
another directory, with the models the wheel carries.

Fast and offline (~10 s): the wheel is built without build isolation (the dev venv's setuptools), from
a temp copy of the sources so the checkout gets no build/ or egg-info; the fresh venv has no pip; its
dependencies are the dev venv's installed runtime packages, exposed by a .pth file that links only the
wheel's runtime dependency closure. `pip install --no-index` then proves the wheel needs nothing else:
it fails on any requirement it cannot see — torch included.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from toolkit.edge.data.datasets import CIFAR10_LABELS

REPO = Path(__file__).resolve().parent.parent
SHIPPED = [REPO / "models" / "cifar_cnn.onnx", REPO / "models" / "dcgan.onnx"]
TRAIN_EXTRA = {"torch", "onnxscript", "safetensors"}

# Every test here builds the wheel and installs it into a fresh venv (a minute or more on 2 cores).
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not all(p.is_file() for p in SHIPPED), reason="models not built (make models)")]


def run(args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if check:
        assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


def source_copy(dest: Path) -> Path:
    """What a wheel is built from: the package, the packaging files and the built models."""
    shutil.copytree(REPO / "toolkit", dest / "toolkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    (dest / "models").mkdir()
    for model in (REPO / "models").glob("*.onnx"):
        shutil.copy2(model, dest / "models" / model.name)
    shutil.copytree(REPO / "models" / "samples", dest / "models" / "samples")
    return dest


def runtime_extra() -> str:
    """The runtime extra whose onnxruntime build the dev venv has (`cpu` or `gpu`)."""
    try:
        importlib.metadata.distribution("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return "cpu"
    return "gpu"


def runtime_closure(wheel: Path) -> list[importlib.metadata.Distribution]:
    """The installed distributions the wheel's runtime requirements need, transitively, with the
    runtime extra of the build installed here (the runtime is an extra: `cpu` or `gpu`)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    todo = [(Requirement(line.split(":", 1)[1]), runtime_extra()) for line in meta.splitlines()
            if line.startswith("Requires-Dist:")]
    found: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = req.name.lower().replace("_", "-")
        if key not in found:
            found[key] = importlib.metadata.distribution(req.name)
            todo += [(Requirement(r), "") for r in found[key].requires or []]
    return list(found.values())


def link_packages(dists, folder: Path) -> None:
    """Symlink each distribution's top-level files (packages, modules, .libs, dist-info) into `folder`."""
    folder.mkdir()
    for dist in dists:
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (no torch) with the wheel installed; returns its bin/ folder."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = source_copy(tmp / "src")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", tmp / "dist", src], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("toolkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {f"toolkit/{p.relative_to(REPO / 'toolkit').as_posix()}" for p in (REPO / "toolkit").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert packaged <= names, f"missing from the wheel: {sorted(packaged - names)}"
    assert {"toolkit/models/cifar_cnn.onnx", "toolkit/models/dcgan.onnx", "toolkit/models/samples/cat.jpg"} <= names
    assert not any(n.endswith(".safetensors") for n in names)

    dists = runtime_closure(wheel)
    assert not TRAIN_EXTRA & {d.metadata["Name"].lower() for d in dists}
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    link_packages(dists, tmp / "runtime-deps")
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "runtime-deps.pth").write_text(f"{tmp / 'runtime-deps'}\n")
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-index", "--no-build-isolation",
         wheel], cwd=tmp)
    code = f"import importlib.util as u; print([m for m in {sorted(TRAIN_EXTRA)} if u.find_spec(m)])"
    probe = run([python, "-c", code], cwd=tmp)
    assert probe.stdout.strip() == "[]"
    return venv / "bin"


@pytest.fixture()
def elsewhere(tmp_path) -> tuple[Path, dict]:
    """Another working directory holding a copy of the sample images, and an environment that does
    not point at the checkout."""
    shutil.copytree(REPO / "models" / "samples", tmp_path / "models" / "samples")
    env = {k: v for k, v in os.environ.items() if k not in ("TOOLKIT_MODELS", "PYTHONPATH", "VIRTUAL_ENV")}
    return tmp_path, env


def test_wheel_without_torch_classifies_from_another_directory(installed, elsewhere):
    cwd, env = elsewhere
    result = run([installed / "toolkit", "infer", "models/samples", "--json", "--top-k", "1"], cwd, env)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 10 and all(r["top"][0]["label"] in CIFAR10_LABELS for r in rows)
    where = run([installed / "python", "-c", "from toolkit import zoo; print(zoo.MODELS_DIR)"], cwd, env)
    assert "site-packages" in where.stdout and str(REPO) not in where.stdout


def test_wheel_without_torch_generates_from_another_directory(installed, elsewhere):
    cwd, env = elsewhere
    run([installed / "toolkit", "generate", "--n", "4", "--out", "x.png"], cwd, env)
    with Image.open(cwd / "x.png") as grid:
        assert grid.mode == "RGB" and grid.width > 64


def test_build_commands_without_torch_name_the_extra(installed, elsewhere):
    cwd, env = elsewhere
    for args in (["export", "--model", "cifar-cnn"], ["train", "cifar-cnn", "--data", "models/samples"]):
        result = run([installed / "toolkit", *args], cwd, env, check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]        # one line
        assert "pip install 'toolkit[train]'" in result.stderr
