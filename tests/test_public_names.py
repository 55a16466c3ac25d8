"""benchmarks/ and tutorials/ use only public manifex names.

A private name is an underscore-prefixed module, function, class or attribute of manifex
(``manifex._neighbors``, ``mx.tl._coverage.reference_coverage``, ``model._apply_scale(...)``).
The scripts and the code cells of the notebooks are parsed (nothing is run) and every import
from manifex and every attribute access is checked:

- an import whose module path or imported name has an underscore-prefixed part;
- an attribute chain rooted at a name bound to manifex (``mx._x``, ``mx.tl._y``, or an
  object imported from manifex) with an underscore-prefixed part;
- ``obj._name`` on any object, where ``_name`` is a private name defined in ``src/manifex``
  (a function, method, class or ``self._name`` attribute).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "manifex"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def manifex_private_names() -> set[str]:
    """Underscore-prefixed names defined anywhere in the package."""
    names: set[str] = set()
    for f in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and _private(
                node.name
            ):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
                names.add(node.id)
    return names


def sources() -> list[tuple[str, str]]:
    """(label, python source) of every benchmark script and every tutorial code cell."""
    out = [(str(f.relative_to(ROOT)), f.read_text()) for f in sorted((ROOT / "benchmarks").rglob("*.py"))]
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                # IPython magics and shell lines are not Python
                src = "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines())
                out.append((f"{nb.relative_to(ROOT)} cell {i}", src))
    return out


def _chain(node: ast.AST) -> tuple[str | None, list[str]]:
    """Root name and attribute names of ``a.b.c`` (root None when not a plain name)."""
    attrs: list[str] = []
    while isinstance(node, ast.Attribute):
        attrs.append(node.attr)
        node = node.value
    return (node.id if isinstance(node, ast.Name) else None), attrs[::-1]


def private_uses(source: str, private_names: set[str]) -> list[str]:
    """Each use of a private manifex name in ``source``, as ``"line N: what"``."""
    tree = ast.parse(source)
    bound: set[str] = set()  # local names bound to manifex modules or objects
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "manifex" or a.name.startswith("manifex."):
                    parts = a.name.split(".")
                    if any(map(_private, parts)):
                        found.append(f"line {node.lineno}: import {a.name}")
                    bound.add(a.asname or parts[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "manifex":
                continue
            for a in node.names:
                if any(map(_private, parts)) or _private(a.name):
                    found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                bound.add(a.asname or a.name)
    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or id(node) in inner:
            continue  # each chain once, from its outermost attribute
        root, attrs = _chain(node)
        if root in bound and any(map(_private, attrs)):
            found.append(f"line {node.lineno}: {root}.{'.'.join(attrs)}")
        else:
            found += [f"line {node.lineno}: .{a}" for a in attrs if a in private_names]
    return sorted(set(found), key=lambda s: int(s.split(":")[0].split()[1]))


PRIVATE = manifex_private_names()
SOURCES = sources()


def test_there_is_something_to_check():
    labels = [label for label, _ in SOURCES]
    assert any(label.startswith("benchmarks") for label in labels)
    assert any(label.startswith("tutorials") for label in labels)
    assert len(PRIVATE) > 20  # the package's private names were found


@pytest.mark.parametrize("label, source", SOURCES, ids=[label for label, _ in SOURCES])
def test_only_public_manifex_names(label, source):
    uses = private_uses(source, PRIVATE)
    assert not uses, f"{label} uses private manifex names: {uses}"


def test_checker_finds_private_uses():
    src = """
import manifex as mx
import manifex._neighbors
from manifex._neighbors import knn_indices
from manifex.tl import _helper
from manifex.models import DLME
from numpy import _private_thing
mx.tl._query.embed(1)
DLME._fit_hook
model._apply_scale(x)
mx.tl.dlme(a)
df._asdict()
"""
    uses = private_uses(src, {"_apply_scale"})
    assert uses == [
        "line 3: import manifex._neighbors",
        "line 4: from manifex._neighbors import knn_indices",
        "line 5: from manifex.tl import _helper",
        "line 8: mx.tl._query.embed",
        "line 9: DLME._fit_hook",
        "line 10: ._apply_scale",
    ]
