"""No import cycles among clcnn's modules, and the backends at the bottom.

Reads every module's source with ``ast`` (nothing is imported) and lists its imports of clcnn modules, those
inside functions too (a lazy import still closes a loop at run time). ``python tests/test_imports.py`` prints
the graph, one module per line.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# package -> its folder: cl/ and cpu/ sit beside clcnn/ in a checkout and ship as clcnn.cl and clcnn.cpu
PACKAGES = {"clcnn": ROOT / "clcnn", "clcnn.cl": ROOT / "cl", "clcnn.cpu": ROOT / "cpu"}
BOTTOM = ("clcnn.backends", "clcnn.cpu", "clcnn.cl", "clcnn.errors", "clcnn.io")   # what the backends may import


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every .py of the package (a package is its __init__.py)."""
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def _targets(node, name: str, mods: dict[str, Path]) -> list[str]:
    """The clcnn modules one import statement of module ``name`` loads (the named module, or for
    ``from X import y`` the submodule X.y where y is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    here = name if _is_package(name, mods) else name.rpartition(".")[0]
    base = here
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    if node.level == 0:
        base = node.module or ""
    elif node.module:
        base = f"{base}.{node.module}"
    if base not in mods:
        return []
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
    return subs if len(subs) == len(node.names) else [base, *subs]


def import_graph() -> dict[str, set[str]]:
    """Module -> the clcnn modules it imports. Importing a.b.c also runs the packages a.b and a, so those are
    edges too, except the importer's own enclosing packages (they are already running)."""
    mods, graph = modules(), {}
    for name, path in mods.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, mods):
                    parts = target.split(".")
                    for i in range(1, len(parts) + 1):
                        dep = ".".join(parts[:i])
                        if dep in mods and not (name + ".").startswith(dep + ".") and dep != name:
                            edges.add(dep)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
    sys.setrecursionlimit(max(1000, 4 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = import_graph()
    assert "clcnn.backends.opencl" in graph and "clcnn.cli" in graph   # the scan found the package
    found = cycles(graph)
    detail = "; ".join(" <-> ".join(c) + " (" + ", ".join(f"{a} -> {sorted(graph[a] & set(c))}" for a in c) + ")"
                       for c in found)
    assert not found, f"import cycles: {detail}"


def test_backends_import_only_the_bottom():
    """The backends (tuning cache and search included) import nothing above them."""
    def bottom(mod):
        return any(mod == b or mod.startswith(b + ".") for b in BOTTOM)
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d != "clcnn" and not bottom(d)) for m, deps in graph.items() if bottom(m)}
    assert not {m: d for m, d in bad.items() if d}, bad


if __name__ == "__main__":
    g = import_graph()
    for mod in sorted(g):
        print(f"{mod:36s} -> {', '.join(sorted(g[mod])) or '-'}")
    print("cycles:", cycles(g) or "none")
