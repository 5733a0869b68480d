"""`toolkit wrap` of a model the onnx package stamped with a newer IR version than onnxruntime reads."""

from __future__ import annotations

import onnx
import pytest
from typer.testing import CliRunner

from tests.helpers import SAMPLES, stamped_classifier
from toolkit.cli import app
from toolkit.edge.wrap.irversion import runtime_ir_version

runner = CliRunner()
NEWEST_IR = 14


@pytest.fixture
def newer_than_runtime():
    if runtime_ir_version() >= NEWEST_IR:
        pytest.skip(f"the installed onnxruntime reads IR {NEWEST_IR}")


def test_runtime_ir_version_is_what_onnxruntime_loads():
    from toolkit.edge.wrap.irversion import _loads
    readable = runtime_ir_version()
    assert _loads(readable)[0]
    assert readable == onnx.IR_VERSION or not _loads(readable + 1)[0]


def test_wrap_lowers_the_ir_version_and_says_so(tmp_path, newer_than_runtime):
    source = stamped_classifier(tmp_path / "theirs.onnx", NEWEST_IR, 13)
    out = tmp_path / "mine.onnx"
    result = runner.invoke(app, ["wrap", str(source), "--out", str(out), "--images", str(SAMPLES)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "IR version" in line]
    assert len(notes) == 1 and f"IR version {NEWEST_IR}" in notes[0] and f"IR {runtime_ir_version()}" in notes[0]
    assert onnx.load(str(out)).ir_version == runtime_ir_version()
    assert onnx.load(str(source)).ir_version == NEWEST_IR          # the input is left as it was


def test_wrap_refuses_a_graph_that_needs_the_newer_ir(tmp_path, newer_than_runtime):
    from toolkit.edge.wrap.irversion import _max_opsets
    opset = _max_opsets(runtime_ir_version())[""] + 1
    source = stamped_classifier(tmp_path / "theirs.onnx", NEWEST_IR, opset)
    out = tmp_path / "mine.onnx"
    result = runner.invoke(app, ["wrap", str(source), "--out", str(out), "--images", str(SAMPLES)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"opset {opset}" in lines[0] and "lower opset" in lines[0], result.output
    assert not out.exists()
