"""The size limits of the package's code, read with `ast`: no file over 400 lines, no function body
over 60 lines. A body runs from the first statement after the signature and docstring to the
function's last line, so a Typer command's option declarations (its signature) do not count."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "toolkit"
MAX_FILE_LINES = 400
MAX_BODY_LINES = 60


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's end (0 for a body that
    is only a docstring)."""
    statements = function.body
    if statements and isinstance(statements[0], ast.Expr) and isinstance(statements[0].value, ast.Constant) \
            and isinstance(statements[0].value.value, str):
        statements = statements[1:]
    if not statements:
        return 0
    end = function.end_lineno or statements[-1].end_lineno or statements[-1].lineno
    return end - statements[0].lineno + 1


def long_functions(source: str, name: str = "<source>", limit: int = MAX_BODY_LINES) -> list[str]:
    tree = ast.parse(source, name)
    return [f"{name}:{node.lineno} {node.name}: body of {body_lines(node)} lines"
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > limit]


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_file_is_over_400_lines():
    long = [f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in _files()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not long, "\n".join(long)


def test_no_function_body_is_over_60_lines():
    long = [line for p in _files() for line in long_functions(p.read_text(), str(p.relative_to(PACKAGE.parent)))]
    assert not long, "\n".join(long)


def test_the_measure_counts_the_body_not_the_signature_or_docstring():
    options = "".join(f"    option_{i}: int = 0,\n" for i in range(80))
    body = "".join(f"    x = {i}\n" for i in range(60))
    command = f'def command(\n{options}):\n    """Help text\n    over two lines."""\n{body}'
    assert long_functions(command) == []
    assert long_functions(command + "    return x\n") == ["<source>:1 command: body of 61 lines"]
    lines = "".join(f"        y = {i}\n" for i in range(61))
    nested = f"def outer():\n    def inner():\n{lines}    return inner\n"
    assert [line.split(" ")[1] for line in long_functions(nested)] == ["outer:", "inner:"]
