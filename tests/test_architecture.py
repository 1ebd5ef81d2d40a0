"""The package's import graph has no cycle: no module imports one that imports it back.

Every ``summarizer.*`` import counts, wherever it is written: at the top, inside a function, or under
``TYPE_CHECKING`` (a cycle hidden in a function is still two modules that cannot be understood, or
changed, apart). The root package is left out: it only re-exports the public API and holds
``__version__``, which modules read from it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import summarizer

PACKAGE = Path(summarizer.__file__).parent
ROOT = "summarizer"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (``from ..x import y`` in ``summarizer.a.b``: ``summarizer.x``)."""
    if node.level == 0:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, path, node)
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return {m for m in found if m in known and m not in (ROOT, name)}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items() if name != ROOT}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``edges`` as the modules along it (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None
    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_walk_sees_every_kind_of_import() -> None:
    """The walker finds relative, nested-package and function-level imports (else the next test proves little)."""
    edges = graph()
    assert "summarizer.config" in edges["summarizer.refresh"]
    assert {"summarizer.engines.base", "summarizer.runs"} <= edges["summarizer.engines.spark"]
    assert "pyspark" not in edges["summarizer.engines.spark"]  # only the package's own modules


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": set(), "c": {"a", "b"}}, None),
])
def test_find_cycle(edges: dict[str, set[str]], cycle: list[str] | None) -> None:
    assert find_cycle(edges) == cycle


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_inside_functions_count(tmp_path: Path) -> None:
    source = tmp_path / "engine.py"
    source.write_text("def preflight():\n    from .refresh import SINCE\n    from . import runs\n")
    known = {"summarizer.refresh", "summarizer.runs", "summarizer.engine"}
    assert imports_of("summarizer.engine", source, known) == {"summarizer.refresh", "summarizer.runs"}


def test_only_the_command_line_reaches_into_serving() -> None:
    """The serving side (``summarizer.serve``, the optional api/redis extras) sits on top: the refresh side
    never imports it; only ``summarizer serve`` (cli) starts it."""
    edges = graph()
    reaching = {name for name, targets in edges.items() if not name.startswith(f"{ROOT}.serve")
                and any(t.startswith(f"{ROOT}.serve") for t in targets)}
    assert reaching == {f"{ROOT}.cli"}
