"""The layout's import rules, read from the source (ast), so the data path stays plain to see:

    actors/ -> fpac_async/ <- learner/     (the service: actors and learner never import each other)
    deploy/  the ways to run the service (imports the three above, never studies/)
    studies/ studies run on the service (scaling, experiment grids, figures); nothing imports it
    bench/   benchmarks (may import anything but is imported by nothing above)
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
    out = []
    for d, _, files in os.walk(os.path.join(REPO, package)):
        out += [os.path.join(d, f) for f in files if f.endswith(".py")]
    return sorted(out)


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
