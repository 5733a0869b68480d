"""How failures are said (toolkit/edge/errors.py): one `first_line`, one name-escaping `shown`,
defined once in the package and used by every stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from toolkit.edge.errors import first_line, shown

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"


def _definitions(name: str) -> list[str]:
    """Every module of the package that defines `name` at its top level (function, class or value)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                found.append(str(path.relative_to(PACKAGE)))
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(str(path.relative_to(PACKAGE)))
    return found


@pytest.mark.parametrize("name,where", [
    ("first_line", "edge/errors.py"),
    ("shown", "edge/errors.py"),
    ("QuantizeError", "edge/quantize/variants.py"),
    ("ExportError", "edge/contract.py"),
    ("topological_sort", "edge/onnxgraph.py"),
    ("load_onnx", "edge/onnxgraph.py"),
])
def test_each_rule_is_defined_once(name, where):
    assert _definitions(name) == [where]


@pytest.mark.parametrize("name", ["OPS", "PREPROCESS_OPS", "TODAY_RECIPE", "QuantizationError", "ModuleExportError",
                                  "_one_line", "PRECISIONS"])
def test_names_that_meant_two_things_are_gone_or_single(name):
    assert len(_definitions(name)) <= 1, _definitions(name)


def test_first_line_is_the_first_line_or_the_type():
    assert first_line(RuntimeError("  cannot load\nstack trace …")) == "cannot load"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 500)) == "x" * 500        # the cause sits at the end of the line
    assert first_line(ValueError("x" * 500), limit=10) == "x" * 10
    assert first_line(ZeroDivisionError("boom"), typed=True) == "ZeroDivisionError: boom"


def test_shown_escapes_what_would_break_a_line():
    assert shown("photos/cat.jpg") == "photos/cat.jpg"
    assert shown(Path("a\nb.jpg")) == "a\\nb.jpg"
    assert shown(b"caf\xe9.jpg") == "caf\\xe9.jpg"
    assert "\n" not in shown("tensor\r\nname") and "\x1b" not in shown("\x1b[31mred")
