"""The package's shape: no import cycle, small modules, rules that know no graph library.

Imports are read from the source (module-level and function-level alike; only those under
``if TYPE_CHECKING:`` are left out, since they never run).  Importing a submodule of another
package counts as importing that package too, as it does at run time (its ``__init__`` runs
first); inside one package it does not (the package is already being initialised).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import fprune

ROOT = Path(fprune.__file__).parent
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The fprune modules `path` imports when it runs (packages of imported submodules included)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    closed: set[str] = set()
    for target in found:
        if not target.startswith("fprune"):
            continue
        parts = target.split(".")
        closed.add(target)
        for i in range(1, len(parts)):  # another package's submodule runs that package's __init__ first
            parent = ".".join(parts[:i])
            if not (name == parent or name.startswith(parent + ".")):
                closed.add(parent)
    return {m for m in closed if m in known and m != name and m != "fprune"}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_no_import_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(path, name, known) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_700_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_rules_know_no_graph_library_or_aten_op() -> None:
    for path in sorted((ROOT / "analysis" / "rules").glob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.startswith(("torch.fx", "torch.export", "torch._ops")) for m in imported), path.name
        assert re.search(r"\baten\b", text) is None, path.name


def test_transformers_only_inside_fprune_hf() -> None:
    """The core depends on torch, toolz and typing-extensions; the hf extra is read in fprune.hf only,
    and there inside functions, so ``import fprune.hf`` works without it."""
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        top = {a.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for a in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        every = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names} | \
            {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        extra = {"transformers", "safetensors"}
        assert not top & extra, f"{name} imports {top & extra} at module level"
        assert name.startswith("fprune.hf") or not every & extra, f"{name} imports {every & extra}"
