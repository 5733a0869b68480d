"""Closed option sets (toolkit/edge/options.py): one declaration each, rejected while parsing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import toolkit.zoo as zoo
from toolkit.cli import app
from toolkit.edge import options

runner = CliRunner()

# (command line without the bad option, option, its closed set)
CHOICE_OPTIONS = [
    (["export", "--model", "cifar-cnn"], "--precision", options.PRECISIONS),
    (["export", "--model", "fft-lowpass"], "--form", options.FORMS),
    (["export", "--model", "cifar-cnn"], "--calibration-method", options.CALIBRATION_METHODS),
    (["infer", "x.jpg"], "--provider", options.PROVIDERS),
    (["infer", "x.jpg"], "--precision-hint", options.PRECISION_HINTS),
    (["eval", "--model", "m.onnx", "--data", "d"], "--split", options.SPLITS),
    (["generate"], "--provider", options.PROVIDERS),
    (["bench", "--provider", "cpu"], "--provider", options.PROVIDERS),
    (["bench"], "--precision-hint", options.PRECISION_HINTS),
    (["transform", "x.jpg", "--out", "y.png"], "--op", options.SPECTRAL_OPS),
    (["transform", "x.jpg", "--op", "fft-lowpass", "--out", "y.png"], "--form", options.FORMS),
    (["transform", "x.jpg", "--op", "fft-lowpass", "--out", "y.png"], "--provider", options.PROVIDERS),
    (["quantize", "m.onnx", "--out", "q.onnx", "--data", "d"], "--precision", options.QUANTIZED_PRECISIONS),
    (["quantize", "m.onnx", "--out", "q.onnx", "--data", "d"], "--split", options.SPLITS),
]


@pytest.mark.parametrize("args,option,choices", CHOICE_OPTIONS, ids=lambda v: v if isinstance(v, str) else None)
def test_a_value_outside_the_set_fails_while_parsing_naming_the_choices(args, option, choices):
    result = runner.invoke(app, [*args, option, "bogus"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: {option} bogus is not one of {', '.join(choices)} (see root {args[0]} --help)"]


@pytest.mark.parametrize("command,choices", [("export", options.PRECISIONS), ("transform", options.SPECTRAL_OPS),
                                             ("bench", options.PROVIDERS)])
def test_help_lists_the_choices(command, choices):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and "|".join(choices) in result.output


def test_bf16_export_fails_before_any_work():
    """bf16 is no file precision: refused by the parser, before the export module (or torch) loads."""
    code = "\n".join([
        "import sys",
        "sys.argv = ['toolkit', 'export', '--model', 'cifar-cnn', '--precision', 'bf16']",
        "from toolkit.cli import main",
        "try:",
        "    main()",
        "except SystemExit as exc:",
        "    assert exc.code == 2, exc.code",
        "assert 'toolkit.pytorch.export' not in sys.modules and 'torch' not in sys.modules",
    ])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("error: --precision bf16 is not one of fp32, fp16, int8")


def test_unknown_model_names_the_known_ones_without_quotes(tmp_path):
    result = runner.invoke(app, ["export", "--model", "foo", "--out", str(tmp_path / "x.onnx")])
    known = ", ".join([*zoo.REGISTRY, *options.SPECTRAL_OPS])
    assert result.exit_code == 1 and result.stderr.strip() == f"error: unknown model foo (known: {known})"
    with pytest.raises(KeyError) as raised:
        zoo.get("foo")
    assert str(raised.value) == f"unknown model foo (known: {', '.join(zoo.REGISTRY)})"


def test_the_library_checks_the_same_sets():
    """Where a runtime module keeps its own table of a set (a mapping), its keys are the set."""
    from toolkit.edge.runtime import registry
    from toolkit.edge.spectral import ops
    from toolkit.pytorch import export

    assert tuple(registry.PROVIDER_TABLE) == options.PROVIDERS
    assert tuple(ops.OP_PARAMETER) == options.SPECTRAL_OPS and set(ops.IMAGE_OPS) <= set(options.SPECTRAL_OPS)
    assert ops.FORMS == options.FORMS
    assert export.PRECISIONS == options.PRECISIONS and export.TRANSFORM_MODELS == options.SPECTRAL_OPS
    assert not set(options.SPECTRAL_OPS) & set(zoo.REGISTRY)     # `export --model` takes either kind of name
