"""The specification lives in the repository: every relative link in docs/ and the READMEs points
at a file of the checkout, docs/README.md indexes every page of docs/, and nothing in the package
(code, comments, help text) points at a document outside the repository.

Run: .venv/bin/pytest tests/test_docs.py
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
READMES = (REPO / "README.md", REPO / "models" / "README.md")

# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# Pointers at documents that are not part of the repository.
OUTSIDE = ("GUIDE", "../shared")


def markdown_files() -> list[Path]:
    return sorted(DOCS.glob("*.md")) + [p for p in READMES if p.is_file()]


def relative_links(text: str) -> list[str]:
    """The link targets of a markdown text that name a file of the checkout: code blocks and inline
    code are not links, and web addresses and in-page anchors are not files."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def broken_links(path: Path) -> list[str]:
    """The relative links of a markdown file that do not resolve to an existing file or folder."""
    return [target for target in relative_links(path.read_text(encoding="utf-8"))
            if not (path.parent / target).exists()]


def test_the_link_scan_finds_links_and_reports_broken_ones(tmp_path):
    (tmp_path / "there.md").write_text("x")
    page = tmp_path / "page.md"
    page.write_text("[here](there.md) [gone](missing.md#part) ![pic](img/none.png) [web](https://x.org/a.md)\n"
                    "[anchor](#top) `[code](not-a-link.md)`\n```\n[block](nor-this.md)\n```\n")
    assert relative_links(page.read_text()) == ["there.md", "missing.md", "img/none.png"]
    assert broken_links(page) == ["missing.md", "img/none.png"]


def test_docs_hold_the_specification():
    for page in ("README.md", "contract.md", "transforms.md", "data.md", "machine.md"):
        assert (DOCS / page).is_file(), f"docs/{page} is missing"


def test_every_relative_link_in_docs_and_readmes_resolves():
    broken = {str(p.relative_to(REPO)): links for p in markdown_files() if (links := broken_links(p))}
    assert not broken, f"links to files that do not exist: {broken}"


def test_the_docs_index_links_every_page():
    indexed = {(DOCS / target).resolve() for target in relative_links((DOCS / "README.md").read_text())}
    missing = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.resolve() not in indexed]
    assert not missing, f"docs/README.md does not link {missing}"


def metadata_keys_in_code() -> set[str]:
    """Every `toolkit.*` metadata key the package names: string literals, and the keywords of each
    `set_metadata(...)` call (written as `toolkit.<keyword>`)."""
    keys: set[str] = set()
    for path in (REPO / "toolkit").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"toolkit\.[a-z_]+", node.value):
                keys.add(node.value)
            called = getattr(node.func, "id", getattr(node.func, "attr", None)) if isinstance(node, ast.Call) else None
            if isinstance(node, ast.Call) and called == "set_metadata":
                keys |= {f"toolkit.{kw.arg}" for kw in node.keywords
                         if kw.arg and kw.arg not in ("task", "model", "precision", "proto")}
    return keys


def test_the_contract_page_names_every_metadata_key_and_io_name():
    from toolkit.edge.contract import REQUIRED_KEYS, WRAPPED_KEY
    from toolkit.edge.spectral.graphs import INPUT_NAME, OUTPUT_NAME

    page = (DOCS / "contract.md").read_text(encoding="utf-8")
    keys = metadata_keys_in_code() | set(REQUIRED_KEYS) | {WRAPPED_KEY}
    assert {"toolkit.op", "toolkit.labels", "toolkit.latent_dim"} <= keys      # the scan sees both ways of writing
    missing = sorted(key for key in keys if f"`{key}`" not in page)
    assert not missing, f"docs/contract.md does not describe {missing}"
    for name in (INPUT_NAME, OUTPUT_NAME, "logits", "z"):
        assert f"`{name}`" in page, f"docs/contract.md does not name the tensor `{name}`"


def package_text_files() -> list[Path]:
    """Every text file of the package: the sources and anything else a reader or the help shows
    (the built models the wheel carries are binary and skipped)."""
    files = []
    for path in sorted((REPO / "toolkit").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".onnx", ".png", ".safetensors"):
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def test_nothing_in_the_package_points_outside_the_repository():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in package_text_files()
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if any(word in line for word in OUTSIDE)]
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)


def test_the_package_scan_reads_comments_docstrings_and_help():
    files = {p.relative_to(REPO).as_posix() for p in package_text_files()}
    assert {"toolkit/edge/contract.py", "toolkit/cli/run.py", "toolkit/edge/bench/roof.c"} <= files
