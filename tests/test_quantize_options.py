"""The quantize options are declared once (toolkit/edge/quantize/config.py): `toolkit quantize`,
`toolkit export` and `toolkit.quantize` take their defaults, help texts and limits from it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer

import toolkit.api as api
from toolkit.cli import app
from toolkit.edge.options import help_text, limits
from toolkit.edge.quantize.config import DEFAULTS, QuantizeOptions

FIELDS = {f.name: f for f in dataclasses.fields(QuantizeOptions)}
# The fields a command takes no option for: `toolkit quantize` makes no dynamic variants; `toolkit
# export` guards on the fixed split of its own labelled data, and its --precision is the file's
# (fp32 included).
NOT_AN_OPTION = {"quantize": {"dynamic"}, "export": {"precision", "split", "unlabeled", "min_agreement",
                                                    "guard_images"}}


def _options(command: str) -> dict:
    """The command's options by parameter name (Typer's click objects, vendored or not)."""
    group = typer.main.get_command(app)
    params = group.commands[command].params         # type: ignore[attr-defined]
    return {p.name: p for p in params if p.param_type_name == "option"}


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_each_command_takes_the_dataclass_defaults_help_and_limits(command):
    options = _options(command)
    for name, f in FIELDS.items():
        if name in NOT_AN_OPTION[command]:
            continue
        option = options[name]
        assert option.default == f.default, name
        assert option.help is not None and option.help.startswith(help_text(QuantizeOptions, name)), name
        bounds = limits(QuantizeOptions, name)
        assert (option.min, option.max) == (bounds.get("min"), bounds.get("max")), name


def test_the_api_takes_the_dataclass_defaults():
    parameters = inspect.signature(api.quantize).parameters
    for name, f in FIELDS.items():
        if name in NOT_AN_OPTION["quantize"]:
            assert name not in parameters
            continue
        assert parameters[name].default == f.default, name
    assert QuantizeOptions() == DEFAULTS


def test_the_library_functions_default_to_the_same_values():
    from toolkit.edge.quantize import variants

    static = inspect.signature(variants.quantize_int8_static).parameters
    guarded = inspect.signature(variants.quantize_int8).parameters
    assert static["method"].default == guarded["method"].default == DEFAULTS.calibration_method
    assert static["target"].default == guarded["target"].default == DEFAULTS.target
    assert guarded["max_drop"].default == DEFAULTS.max_drop
    assert guarded["min_agreement"].default == DEFAULTS.min_agreement


def test_a_value_outside_the_limits_fails_while_parsing():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["quantize", "m.onnx", "--out", "q.onnx", "--data", "d",
                                      "--min-agreement", "1.5"])
    assert result.exit_code == 2 and "--min-agreement" in result.stderr
