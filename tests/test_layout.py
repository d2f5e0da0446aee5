"""The layout's import rules, read from the source (ast), so the data path stays plain to see:

    actors/ -> fpac_async/ <- learner/     (the service: actors and learner never import each other)
    deploy/  the ways to run the service (imports the three above, never studies/)
    studies/ studies run on the service (scaling, experiment grids, figures); nothing imports it
    bench/   benchmarks (may import anything but is imported by nothing above)

Inside fpac_async/: agent/ (the FPAC agent, torch) and wire/ (the message format and sockets)
never import each other, at most six modules stay at its top, no product module is over 350
lines, and no module imports itself back through others (no import circle).
"""
from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("fpac_async", "actors", "learner", "deploy", "studies", "bench")
FORBIDDEN = {
    "fpac_async": {"actors", "learner", "deploy", "studies", "bench"},
    "actors": {"learner", "deploy", "studies", "bench"},
    "learner": {"actors", "deploy", "studies", "bench"},
    "deploy": {"studies", "bench"},
    "studies": {"bench"},
}


def imported_packages(path: str) -> set[str]:
    """Top-level names of every import in a file (also those inside functions)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def sources(package: str) -> list[str]:
    return sources_under(REPO, package)


def test_the_import_reader_sees_nested_and_from_imports(tmp_path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import os.path\nfrom learner.x import y\ndef f():\n    import actors.z\n"
                   "from . import sibling\n")
    assert imported_packages(str(src)) == {"os", "learner", "actors"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_the_layout_allows(package: str) -> None:
    files = sources(package)
    assert files, package
    bad = {os.path.relpath(p, REPO): sorted(imported_packages(p) & FORBIDDEN[package])
           for p in files}
    assert {p: names for p, names in bad.items() if names} == {}


PRODUCT = ("fpac_async", "actors", "learner", "deploy", "studies")
MAX_LINES = 350


def module_of(path: str, root: str = REPO) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def imported_modules(path: str, known: set[str], root: str = REPO) -> set[str]:
    """The modules in `known` that a file imports (also inside functions, also relative ones);
    `from a import b` counts a.b where that is a module, else a."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    me = module_of(path, root)
    package = me if path.endswith("__init__.py") else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known and m != me}


def import_graph(root: str, packages: tuple[str, ...]) -> dict[str, set[str]]:
    files = [p for pkg in packages for p in sources_under(root, pkg)]
    known = {module_of(p, root) for p in files}
    return {module_of(p, root): imported_modules(p, known, root) for p in files}


def sources_under(root: str, package: str) -> list[str]:
    out = []
    for d, _, files in os.walk(os.path.join(root, package)):
        out += [os.path.join(d, f) for f in files if f.endswith(".py")]
    return sorted(out)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_sees_a_lazy_circle(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    graph = import_graph(str(tmp_path), ("pkg",))
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert circles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_circle() -> None:
    assert circles(import_graph(REPO, PRODUCT)) == []


def test_no_product_file_over_350_lines() -> None:
    long = {}
    for package in PRODUCT:
        for path in sources(package):
            with open(path, encoding="utf-8") as f:
                n = sum(1 for _ in f)
            if n > MAX_LINES:
                long[os.path.relpath(path, REPO)] = n
    assert long == {}


def test_fpac_async_is_grouped_by_concern() -> None:
    top = sorted(f for f in os.listdir(os.path.join(REPO, "fpac_async")) if f.endswith(".py"))
    assert len(top) <= 6, top
    graph = import_graph(REPO, ("fpac_async",))
    for a, b in (("agent", "wire"), ("wire", "agent")):
        crossing = {m: sorted(x for x in deps if x.startswith(f"fpac_async.{b}"))
                    for m, deps in graph.items() if m.startswith(f"fpac_async.{a}")}
        assert {m: d for m, d in crossing.items() if d} == {}, f"fpac_async.{a} imports {b}"
