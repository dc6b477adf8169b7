"""Import graph of the runbook package, read with ast (nothing is imported).

Example::

    python tests/importgraph.py lib/runbook
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    """One `import` of a runbook module by another, with where it sits."""

    source: str
    target: str
    line: int
    type_only: bool
    deferred: bool  # inside a function: runs only when called


def module_name(root: Path, path: Path) -> str:
    """The dotted name of a file under the package directory `root`."""
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(modules: set[str], name: str) -> str | None:
    # "runbook.ops.api.DealixAPI" -> the longest prefix that is a module
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _module_edges(mod: str, tree: ast.Module, is_pkg: bool, modules: set[str]) -> list[Edge]:
    found: list[Edge] = []

    def visit(node: ast.AST, type_only: bool, deferred: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            deferred = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for sub in node.body:
                visit(sub, True, deferred)
            for sub in node.orelse:
                visit(sub, type_only, deferred)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [t for a in node.names if (t := _resolve(modules, a.name))]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            # `from pkg import sub` imports the submodule; `from mod import name` the module
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            resolved = _resolve(modules, base)
            targets = subs or ([resolved] if resolved else [])
        for target in targets:
            if target != mod:
                found.append(Edge(mod, target, node.lineno, type_only, deferred))
        for sub in ast.iter_child_nodes(node):
            visit(sub, type_only, deferred)

    for top in tree.body:
        visit(top, False, False)
    return found


def edges(root: Path) -> tuple[set[str], list[Edge]]:
    """Every module under `root` and every import between them (one edge per kind)."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    found: list[Edge] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        found += _module_edges(mod, tree, path.name == "__init__.py", modules)
    unique = {(e.source, e.target, e.type_only, e.deferred): e for e in found}
    return modules, sorted(unique.values(), key=lambda e: (e.source, e.target))


def runtime_graph(edge_list: list[Edge], *, include_deferred: bool = True) -> dict[str, set[str]]:
    """Who imports whom when the code runs (type-only imports left out)."""
    graph: dict[str, set[str]] = {}
    for e in edge_list:
        if e.type_only or (e.deferred and not include_deferred):
            continue
        graph.setdefault(e.source, set()).add(e.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            strong(v)
    return sorted(out)


def report(root: Path) -> str:
    """Modules, per-module import counts and the cycles, as text (the issue note's numbers)."""
    modules, edge_list = edges(root)
    g_all = runtime_graph(edge_list)
    imports = {m: set() for m in modules}
    imported_by = {m: set() for m in modules}
    for e in edge_list:
        imports[e.source].add(e.target)
        imported_by[e.target].add(e.source)
    lines = [
        f"{len(modules)} modules, {sum(len(p.read_text().splitlines()) for p in root.rglob('*.py'))} lines"
    ]
    lines.append(f"{'module':40} imports imported-by (any kind)")
    for m in sorted(modules):
        lines.append(f"{m:40} {len(imports[m]):7} {len(imported_by[m]):11}")
    lines.append("runtime cycles (module level and deferred):")
    for c in cycles(g_all):
        lines.append("  " + " ".join(c))
    lines.append("runtime cycles (module level only):")
    for c in cycles(runtime_graph(edge_list, include_deferred=False)):
        lines.append("  " + " ".join(c))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1] if len(sys.argv) > 1 else "lib/runbook")))
