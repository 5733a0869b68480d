"""The import graph of the package, read from the source with `ast`: every import statement counts,
the lazy ones inside functions included, since a lazy import is still a dependency.

The rules (README, layout):
- no cycle among the package's modules;
- the runtime layer (toolkit.edge) imports neither the torch layer (toolkit.pytorch) nor what the
  `train` extra installs (torch, …), nor the CLI or the Python API above it;
- toolkit.pytorch.nets imports only torch, numpy, the standard library, toolkit.edge.spectral.ops and itself;
- and, run in a fresh interpreter that cannot import torch, every runtime module and command loads.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolkit.cli.common import TRAIN_EXTRA_MODULES

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "toolkit"
RUNTIME = "toolkit.edge"
BUILD = "toolkit.pytorch"
NETS = "toolkit.pytorch.nets"
NETS_MAY_IMPORT = ("torch", "numpy", "toolkit.edge.spectral.ops")


@dataclass(frozen=True)
class Edge:
    source: str          # importing module
    target: str          # imported module: a module of the package, or a top-level external name
    where: str           # file:line, for the failure message

    def __str__(self) -> str:
        return f"{self.source} → {self.target} ({self.where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside `if TYPE_CHECKING:`: read by the type checker only, never executed."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_edges(modules: dict[str, Path]) -> list[Edge]:
    """Every import of every module, resolved: `from a.b import c` is an edge to a.b.c when that is
    a module of the package, else to a.b; an external import is an edge to its top-level name."""
    edges: list[Edge] = []
    seen: set[tuple[str, str]] = set()          # one edge (the first import) per pair of modules
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _under_type_checking(node, parents):
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:                      # relative: from the module's own package upwards
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[:len(package) - node.level + 1]
                    base = ".".join([*package, base] if base else package)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in dict.fromkeys(targets):
                if target == "__future__":
                    continue
                if target.split(".")[0] != "toolkit":
                    target = target.split(".")[0]
                elif target not in modules:         # `import toolkit.x.y` of a name that is no module
                    raise AssertionError(f"{where}: {target} is not a module of the package")
                if target != name and (name, target) not in seen:
                    seen.add((name, target))
                    edges.append(Edge(name, target, where))
    return edges


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if e.target.startswith("toolkit"):
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return import_edges(package_modules())


def test_the_graph_is_read(edges):
    """The reader sees lazy imports (the CLI imports the torch layer inside its commands)."""
    assert any(e.source == "toolkit.cli.build" and in_package(e.target, BUILD) for e in edges)
    assert any(e.source.startswith(NETS) and e.target == "torch" for e in edges)


def shortest_cycle(start: str, members: set[str], edges: list[Edge]) -> list[Edge]:
    """The shortest path of edges from `start` back to itself inside one component (BFS)."""
    out: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        if e.source in members and e.target in members:
            out[e.source].append(e)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for e in out[node]:
                if e.target == start:
                    return [*paths[node], e]
                if e.target not in paths:
                    paths[e.target] = [*paths[node], e]
                    following.append(e.target)
        frontier = following
    return []


def test_no_import_cycles(edges):
    lines = []
    for component in cycles(edges):
        shown: set[frozenset[tuple[str, str]]] = set()
        lines.append(f"cycle among {len(component)} modules: {', '.join(component)}")
        for start in component:
            path = shortest_cycle(start, set(component), edges)
            key = frozenset((e.source, e.target) for e in path)
            if key not in shown:
                shown.add(key)
                lines.append("  " + " → ".join([path[0].source, *(f"{e.target} [{e.where}]" for e in path)]))
    assert not lines, "import cycles (lazy imports included):\n" + "\n".join(lines)


def test_runtime_layer_does_not_import_the_build_layer(edges):
    above = (BUILD, "toolkit.cli", "toolkit.api")
    bad = [str(e) for e in edges if in_package(e.source, RUNTIME)
           and (e.target in TRAIN_EXTRA_MODULES or any(in_package(e.target, p) for p in above))]
    assert not bad, "the runtime layer imports the torch layer or torch:\n  " + "\n  ".join(bad)


def test_nets_import_only_torch_numpy_and_ops(edges):
    allowed = set(sys.stdlib_module_names) | set(NETS_MAY_IMPORT)
    bad = [str(e) for e in edges if in_package(e.source, NETS)
           and e.target not in allowed and not in_package(e.target, NETS)]
    assert not bad, f"{NETS} may import only {', '.join(NETS_MAY_IMPORT)}:\n  " + "\n  ".join(bad)


def runtime_modules() -> list[str]:
    """What a torch-free install loads: the runtime layer, the registry, the CLI shell, the API."""
    return [m for m in package_modules()
            if in_package(m, RUNTIME) or in_package(m, "toolkit.cli") or m in ("toolkit", "toolkit.zoo", "toolkit.api")]


@pytest.mark.slow
def test_runtime_modules_and_commands_load_without_torch():
    """In a fresh interpreter where importing torch (or any train-extra module) fails: every runtime
    module imports and every command's --help renders (Typer resolves each command's options then)."""
    blocked = ", ".join(repr(m) for m in TRAIN_EXTRA_MODULES)
    code = "\n".join([
        "import importlib, sys",
        f"for name in ({blocked},):",
        "    sys.modules[name] = None     # `import torch` now raises ImportError",
        f"for module in {runtime_modules()!r}:",
        "    importlib.import_module(module)",
        "import typer.main",
        "from typer.testing import CliRunner",
        "from toolkit.cli import app",
        "group = typer.main.get_command(app)",
        "commands = [[name] for name in group.commands]",
        "commands += [['train', name] for name in group.commands['train'].commands]",
        "for args in [[], *commands]:",
        "    result = CliRunner().invoke(app, [*args, '--help'])",
        "    assert result.exit_code == 0, (args, result.output, result.exception)",
        f"assert not [m for m in ({blocked},) if sys.modules.get(m) is not None]",
        "print(len(commands))",
    ])
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) >= 8        # infer, eval, generate, info, bench, transform, export, …
