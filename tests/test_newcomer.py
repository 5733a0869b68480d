"""What a newcomer trips on: default output names, --module from the console script, one --size
spelling, row labels that tell files apart, and the wording of notes and help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import toolkit.zoo as zoo
from toolkit.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = Path(sys.executable).with_name("toolkit")


# ----------------------------------------------------------------------------- export's default output

def test_preprocess_default_output_never_replaces_the_shipped_lowpass_model():
    from toolkit.pytorch.export import ExportError, default_output
    with pytest.raises(ExportError, match=r"cifar_cnn_lowpass\.safetensors.*--out"):
        default_output(zoo.CIFAR_CNN, preprocess="fft-lowpass:0.5")


def test_export_preprocess_without_out_is_refused_before_any_work():
    pytest.importorskip("torch")
    shipped = zoo.MODELS_DIR / "cifar_cnn.fft_lowpass.onnx"
    before = shipped.stat().st_mtime_ns if shipped.exists() else None
    result = runner.invoke(app, ["export", "--model", "cifar-cnn", "--preprocess", "fft-lowpass:0.5"])
    assert result.exit_code == 1
    assert "--out" in result.output and "cifar_cnn_lowpass.safetensors" in result.output
    assert (shipped.stat().st_mtime_ns if shipped.exists() else None) == before


def test_default_output_is_named_after_the_weights(tmp_path):
    from toolkit.pytorch.export import default_output
    mine = tmp_path / "my_cnn.safetensors"
    assert default_output(zoo.CIFAR_CNN, "fp16", weights=mine) == tmp_path / "my_cnn.fp16.onnx"
    assert default_output(zoo.CIFAR_CNN, preprocess="fft-lowpass:0.5", weights=mine) == \
        tmp_path / "my_cnn.fft_lowpass.onnx"
    assert default_output(zoo.DCGAN, weights=tmp_path / "g.safetensors") == tmp_path / "g.onnx"
    assert default_output(zoo.CIFAR_CNN) == zoo.MODELS_DIR / "cifar_cnn.onnx"


# ----------------------------------------------------------------------------- --module from the console script

NET = """
import torch
from torch import nn


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
"""


@pytest.mark.slow
def test_module_from_a_package_in_the_working_folder_via_the_console_script(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "nets.py").write_text(NET)
    sys.path.insert(0, str(tmp_path))
    try:
        from mypackage.nets import make_net  # type: ignore[import-not-found]
        save_file(make_net().state_dict(), str(tmp_path / "net.safetensors"))
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "mypackage" or n.startswith("mypackage.")]:
            del sys.modules[name]
    assert torch is not None
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(TOOLKIT), "export", "--module", "mypackage.nets:make_net", "--weights",
                           "net.safetensors", "--size", "16", "16", "--labels", "a,b,c", "--out", "mine.onnx",
                           "--data", str(ROOT / "models" / "samples")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mine.onnx").is_file()


# ----------------------------------------------------------------------------- one --size spelling

@pytest.mark.parametrize("args,needle", [
    (["--size", "32", "--size", "32"], "--size H W"),
    (["--input-size", "32", "32"], "--input-size is spelled --size H W"),
    (["--size", "0", "32"], "positive"),
    (["--size", "a", "32"], "two whole numbers"),
])
def test_export_refuses_other_size_spellings_in_one_line(tmp_path, args, needle):
    result = runner.invoke(app, ["export", "--model", "fft-lowpass", *args, "--out", str(tmp_path / "t.onnx")])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert not (tmp_path / "t.onnx").exists()


def test_export_transform_takes_size_h_w(tmp_path):
    import onnx
    out = tmp_path / "t.onnx"
    result = runner.invoke(app, ["export", "--model", "walsh-compress", "--size", "8", "16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:3] == [8, 16]


def test_export_classifier_refuses_size(tmp_path):
    pytest.importorskip("torch")
    result = runner.invoke(app, ["export", "--model", "cifar-cnn", "--size", "64", "64",
                                 "--out", str(tmp_path / "c.onnx")])
    assert result.exit_code == 1 and "--size applies to transforms and --module" in result.output


def test_wrap_refuses_repeated_size(tmp_path):
    result = runner.invoke(app, ["wrap", str(tmp_path / "in.onnx"), "--out", str(tmp_path / "o.onnx"),
                                 "--size", "32", "--size", "32"])
    assert result.exit_code != 0 and "--size H W" in result.output


def test_no_command_reference_spells_size_twice():
    for path in (ROOT / "README.md", ROOT / "Makefile", ROOT / "models" / "README.md", *ROOT.glob("docs/*.md")):
        text = path.read_text()
        assert "--input-size" not in text, path
        assert "--size 32 --size" not in text, path


def test_api_export_module_takes_size():
    import inspect

    from toolkit import api
    assert "size" in inspect.signature(api.export_module).parameters
