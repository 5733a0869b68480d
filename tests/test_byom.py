"""`toolkit export --module` (a user's nn.Module) and the Python API, including the README's example."""

import json
import re
import textwrap

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from tests.helpers import REPO, foreign_classifier, write_class_tree
from toolkit.cli import app

runner = CliRunner(env={"COLUMNS": "200"})

USER_NET = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            return self.head(self.features(x))


    class NeedsArguments(nn.Module):
        def __init__(self, width):
            super().__init__()


    def make_net():
        return Net()
''')
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


class Payload:
    """A pickle that creates a file when unpickled in full."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def user_net(tmp_path_factory):
    """The module file, its weights in three forms, and a tree of images."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("user")
    (folder / "net.py").write_text(USER_NET)
    namespace: dict = {}
    exec(compile(USER_NET, str(folder / "net.py"), "exec"), namespace)
    torch.manual_seed(0)
    net = namespace["Net"]()
    with torch.no_grad():     # running statistics that differ from the initial ones, so BN matters
        net.features[1].running_mean.uniform_(-0.2, 0.2)
        net.features[1].running_var.uniform_(0.5, 2.0)
    state = net.state_dict()
    save_file(state, str(folder / "net.safetensors"))
    torch.save(state, folder / "net.pt")
    torch.save({"state_dict": state, "epoch": 3}, folder / "checkpoint.pth")
    write_class_tree(folder / "tree", per_class=3, size=(40, 48), classes=["a", "b", "c", "d"])
    return folder, net.eval()


def export(folder, weights, out, *extra):
    return runner.invoke(app, ["export", "--module", f"{folder / 'net.py'}:Net", "--weights", str(folder / weights),
                               "--size", "40", "48", "--labels", "a,b,c,d", "--mean", ",".join(map(str, MEAN)),
                               "--std", ",".join(map(str, STD)), "--data", str(folder / "tree"), "--out", str(out),
                               *extra])


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["net.safetensors", "net.pt", "checkpoint.pth"])
def test_export_module_meets_the_contract_and_matches_torch(tmp_path, user_net, weights):
    import torch

    from toolkit.edge.runtime import open_model

    folder, net = user_net
    out = tmp_path / "user.onnx"
    result = export(folder, weights, out)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["toolkit.task"] == "classify" and meta["toolkit.model"] == "user"
    assert json.loads(meta["toolkit.labels"]) == ["a", "b", "c", "d"]
    assert json.loads(meta["toolkit.source"])["module"] == "net.py:Net"       # no folder names leak
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [40, 48, 3]
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}   # folded by the exporter
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 48, 3), dtype=np.uint8)
    x = (images / 255.0 - np.asarray(MEAN)) / np.asarray(STD)
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    assert np.abs(open_model(out).run(images) - expected).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user.onnx"]


def test_a_pickle_that_needs_full_unpickling_is_refused_unrun(tmp_path, user_net):
    import torch

    folder, _ = user_net
    marker = tmp_path / "created_by_the_pickle"
    torch.save({"weight": Payload(marker)}, tmp_path / "evil.pt")
    result = runner.invoke(app, ["export", "--module", f"{folder / 'net.py'}:Net", "--weights",
                                 str(tmp_path / "evil.pt"), "--size", "40", "48",
                                 "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "refused" in result.output and "full unpickling" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "x.onnx").exists()


def test_weights_that_do_not_fit_are_listed(tmp_path, user_net):
    import torch

    folder, net = user_net
    state = dict(net.state_dict())
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "partial.pt")
    result = runner.invoke(app, ["export", "--module", f"{folder / 'net.py'}:Net", "--weights",
                                 str(tmp_path / "partial.pt"), "--size", "40", "48",
                                 "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1
    assert "missing head.bias" in result.output and "unexpected extra.weight" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("target, message", [
    ("nowhere.py:Net", "no such file"),
    ("{folder}/net.py:Missing", "has no 'Missing'"),
    ("{folder}/net.py:NeedsArguments", "must take no arguments"),
    ("just_a_name", "FILE.py:NAME"),
    ("no_such_package.nets:Net", "cannot import"),
])
def test_bad_module_specs_fail_in_one_line(tmp_path, user_net, target, message):
    folder, _ = user_net
    result = runner.invoke(app, ["export", "--module", target.format(folder=folder), "--weights",
                                 str(folder / "net.safetensors"), "--size", "40", "48",
                                 "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_factory_in_a_package_and_fp16(tmp_path, user_net):
    import importlib
    import sys

    folder, _ = user_net
    package = tmp_path / "pkgroot" / "usernets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(USER_NET)
    out = tmp_path / "user.fp16.onnx"
    # Not monkeypatch.syspath_prepend: restoring all of sys.path would also drop the entry that
    # onnxruntime.transformers appends on import (and relies on afterwards).
    sys.path.insert(0, str(tmp_path / "pkgroot"))
    importlib.invalidate_caches()
    try:
        result = runner.invoke(app, ["export", "--module", "usernets.models:make_net", "--weights",
                                     str(folder / "net.safetensors"), "--size", "40", "48", "--labels",
                                     "a,b,c,d", "--data", str(folder / "tree"), "--precision", "fp16",
                                     "--out", str(out)])
    finally:
        sys.path.remove(str(tmp_path / "pkgroot"))
        for name in [m for m in sys.modules if m == "usernets" or m.startswith("usernets.")]:
            del sys.modules[name]
    assert result.exit_code == 0, result.output
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["toolkit.precision"] == "fp16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkgroot", "user.fp16.onnx"]


def test_model_or_module_not_both(tmp_path):
    result = runner.invoke(app, ["export", "--model", "cifar-cnn", "--module", "x.py:Net"])
    assert result.exit_code == 1 and "either --model" in result.output
    result = runner.invoke(app, ["export", "--module", "x.py:Net", "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "--size H W" in result.output


# ----------------------------------------------------------------------------- the Python API

def test_import_toolkit_stays_light():
    import subprocess
    import sys

    code = ("import sys, toolkit; from toolkit import wrap, quantize, export_module, open_model, classify, bench; "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["False", "False"]


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Bring your own model"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    """The README's Python example, run as written in a folder holding the files it names."""
    foreign_classifier(tmp_path / "theirs.onnx", classes=3)
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    tree = write_class_tree(tmp_path / "tree", per_class=20, classes=["red", "green", "blue"])
    (tmp_path / "photos").mkdir()
    for i, f in enumerate(sorted(tree.rglob("*.jpg"))):
        f.rename(tmp_path / "photos" / f"{i:03d}.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert (tmp_path / "mine.onnx").is_file() and (tmp_path / "mine.int8.onnx").is_file()
    assert len(printed) == 60 and all(line.split()[-1] in ("red", "green", "blue") for line in printed)
