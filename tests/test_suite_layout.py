"""The test suite's own rules: shared builders live in tests/helpers.py and nowhere else, no test
module (nor conftest) imports a test module, and the markers `make test-fast` deselects are
registered, with unknown markers an error.

Run: .venv/bin/pytest tests/test_suite_layout.py
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import TORCH_FIXTURES

TESTS = Path(__file__).resolve().parent
SUPPORT_MODULES = {"__init__", "conftest", "helpers"}
FAST_LOOP_MARKERS = ("slow", "gpu", "data")


def imported_modules(source: str) -> set[str]:
    """Every module `source` imports, as dotted names: import statements anywhere (functions
    included), __import__ / importlib.import_module with a literal name, and the same inside
    string literals that hold Python code (what a test hands a child process with `-c`)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:      # a fragment of code in a string: its import statements still say what it loads
        pieces = [piece.strip() for line in source.splitlines() for piece in line.split(";")]
        imports = [piece for piece in pieces if piece.startswith(("import ", "from ")) and _parses(piece)]
        return set().union(*map(imported_modules, imports))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "tests" if node.level else (node.module or "")
            if node.level and node.module:
                base = f"tests.{node.module}"
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str) and _imports_by_name(node.func)):
            found.add(node.args[0].value)
        elif (text := _string_text(node)) and "import" in text and "tests" in text:
            found |= imported_modules(text)
    return found


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def _imports_by_name(func: ast.expr) -> bool:
    return getattr(func, "id", None) == "__import__" or getattr(func, "attr", None) == "import_module"


def _string_text(node: ast.AST) -> str:
    """A string literal's text; an f-string's with each placeholder read as a name."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "_" for v in node.values)
    return ""


def of_test_modules(names: set[str]) -> set[str]:
    """The test modules and conftests among dotted module names."""
    return {name for name in names
            if name.startswith("tests.") and name.split(".")[-1].startswith(("test_", "conftest"))}


def test_the_scan_sees_every_way_of_importing_a_test_module():
    sources = {
        "from tests.test_bench import tiny_classifier": "tests.test_bench",
        "from tests import test_wrap": "tests.test_wrap",
        "import tests.conftest as c": "tests.conftest",
        "from .test_wrap import DATA": "tests.test_wrap",
        "def f():\n    from tests.conftest import REPO": "tests.conftest",
        'X = __import__("tests.conftest", fromlist=["REPO"]).REPO': "tests.conftest",
        'child = """\nimport sys\nfrom tests.test_properties import ENCODED\n"""': "tests.test_properties",
        'child = f"""\nsys.path.insert(0, {root!r})\nfrom tests.test_bench import LABELS\n"""': "tests.test_bench",
        'code = "import sys; from tests.conftest import REPO; print(" + repr(1) + ")"': "tests.conftest",
    }
    for source, module in sources.items():
        assert of_test_modules(imported_modules(source)) == {module}, source
    assert of_test_modules(imported_modules("from tests.helpers import REPO\nfrom tests import helpers")) == set()


def test_no_test_module_imports_another_and_helpers_is_the_one_builders_module():
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():        # its own examples of what is forbidden
            continue
        imported = of_test_modules(imported_modules(path.read_text(encoding="utf-8")))
        if imported:
            offenders[str(path.relative_to(TESTS))] = sorted(imported)
    assert offenders == {}, f"import shared builders from tests/helpers.py instead: {offenders}"
    support = {p.stem for p in TESTS.glob("*.py") if not p.stem.startswith("test_")}
    assert support == SUPPORT_MODULES, f"shared builders belong in tests/helpers.py, not {support - SUPPORT_MODULES}"


def test_fast_loop_markers_are_registered_and_unknown_markers_are_errors(pytestconfig):
    registered = {line.split(":")[0].strip() for line in pytestconfig.getini("markers")}
    assert set(FAST_LOOP_MARKERS) <= registered
    assert "--strict-markers" in pytestconfig.getini("addopts")
    makefile = (TESTS.parent / "Makefile").read_text(encoding="utf-8")
    assert '-m "not slow and not gpu and not data"' in makefile.split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]


@pytest.mark.parametrize("marker", FAST_LOOP_MARKERS)
def test_each_marker_is_in_use(marker):
    """A marker nobody applies would make `make test-fast` look complete while deselecting nothing."""
    used = any(f"pytest.mark.{marker}" in p.read_text(encoding="utf-8") for p in TESTS.glob("test_*.py")
               if p.name != Path(__file__).name)
    assert used, f"no test is marked {marker}"


def test_no_test_outside_slow_waits_for_a_torch_export(request):
    """Over the tests this run selected: under `make test-fast`, none may ask for a fixture that
    exports with torch; under `make test`, every one that does carries `slow`."""
    unmarked = [item.nodeid for item in request.session.items
                if TORCH_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("slow")]
    assert unmarked == []
