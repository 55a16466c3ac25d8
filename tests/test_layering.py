"""The shape of the package: layers, no import cycles, no deferred internal imports, small modules.

Imports go one way, from the top layer down (``docs/architecture.md``)::

    cli (may import anything)
    tl | pl | pp | datasets          AnnData-facing, independent of each other
    metrics
    models
    train
    io
    nn | losses | augment | neighbors   building blocks, independent of each other
    _anndata
    _utils

The root ``manifex/__init__.py`` (the facade that imports every subpackage) and
``__main__.py`` (which runs the CLI) stand outside the layers. The graph is read by grimp from
the module-level imports (``if TYPE_CHECKING:`` imports excluded); deferred imports of manifex
modules inside functions are refused altogether (except in the CLI, which imports the package
on demand), so that the graph grimp reads is the whole graph. Deferred imports of *other*
packages stay allowed: optional extras (faiss, scvi-tools, zarr) and slow imports (umap,
pynndescent, matplotlib) are loaded on first use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

PACKAGE = "manifex"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Top to bottom; a set holds siblings that may not import each other.
LAYERS: tuple[str | set[str], ...] = (
    "cli",
    {"tl", "pl", "pp", "datasets"},
    "metrics",
    "models",
    "train",
    "io",
    {"nn", "losses", "augment", "neighbors"},
    "_anndata",
    "_utils",
)
#: Modules of the package root outside the layers.
OUTSIDE_LAYERS = {"__init__", "__main__"}
#: Where a function may import manifex modules.
DEFERRED_IMPORTS_ALLOWED = {"cli.py"}
MAX_LINES = 500
MAX_ROOT_PRIVATE_MODULES = 2


# ---- detectors (each checked on a small fake graph below) ------------------------------------
def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself)
    of ``graph``'s direct imports: each holds at least one import cycle."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:  # iterative Tarjan: no recursion limit on long chains
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            child = next(it, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges.get(child, []))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1 or node in edges.get(node, []):
                    found.append(sorted(component))
    return found


def upward_imports(graph, layers=LAYERS, package: str = PACKAGE) -> list[str]:
    """Each import (direct or by a chain) from a layer up to a higher one, or between siblings,
    as ``"importer -> imported (via a -> b -> c)"``."""
    grimp_layers = [grimp.Layer(*sorted(layer)) if isinstance(layer, set) else layer for layer in layers]
    out = []
    for dep in graph.find_illegal_dependencies_for_layers(layers=grimp_layers, containers={package}):
        for route in dep.routes:
            chain = " -> ".join([min(route.heads), *route.middle, min(route.tails)])
            out.append(f"{dep.importer} -> {dep.imported} (via {chain})")
    return sorted(out)


def unlayered_subpackages(graph, layers=LAYERS, package: str = PACKAGE) -> list[str]:
    """Children of the package root that no layer names (a new subpackage must be placed)."""
    named = {m for layer in layers for m in ({layer} if isinstance(layer, str) else layer)}
    children = {m.split(".")[1] for m in graph.find_children(package)}
    return sorted(children - named - OUTSIDE_LAYERS)


def deferred_internal_imports(source: str, package: str = PACKAGE) -> list[tuple[int, str]]:
    """``(line, statement)`` of each import of a ``package`` module inside a function."""
    out = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        for node in ast.walk(fn):
            internal = (
                isinstance(node, ast.ImportFrom)
                and (node.level > 0 or (node.module or "").split(".")[0] == package)
            ) or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == package for a in node.names))
            if internal:
                out.append((node.lineno, ast.unparse(node)))
    return sorted(set(out))


# ---- the rules on the package ----------------------------------------------------------------
@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE, exclude_type_checking_imports=True)


def test_no_import_cycles(graph):
    cycles = import_cycles(graph)
    assert not cycles, "import cycles among manifex modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_go_down_the_layers(graph):
    bad = upward_imports(graph)
    assert not bad, "imports against the layers (docs/architecture.md):\n" + "\n".join(bad)


def test_every_subpackage_has_a_layer(graph):
    assert not unlayered_subpackages(graph), "place each subpackage in LAYERS and docs/architecture.md"


def test_no_deferred_internal_imports():
    bad = [
        f"{f.relative_to(SRC)}:{line}: {stmt}"
        for f in sorted(SRC.rglob("*.py"))
        if str(f.relative_to(SRC)) not in DEFERRED_IMPORTS_ALLOWED
        for line, stmt in deferred_internal_imports(f.read_text())
    ]
    assert not bad, "imports of manifex modules inside functions (move them to the top):\n" + "\n".join(bad)


def test_modules_are_small():
    lines = {str(f.relative_to(SRC)): len(f.read_text().splitlines()) for f in SRC.rglob("*.py")}
    big = {f: n for f, n in sorted(lines.items()) if n > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them): {big}"


def test_few_private_modules_at_the_root():
    private = sorted(
        p.name
        for p in SRC.iterdir()
        if p.name.startswith("_") and not p.name.startswith("__") and (p.suffix == ".py" or p.is_dir())
    )
    assert len(private) <= MAX_ROOT_PRIVATE_MODULES, (
        f"private modules at the package root: {private}; put new code in a subpackage"
    )


# ---- the detectors can fail ------------------------------------------------------------------
def _fake_graph(imports: list[tuple[str, str]]):
    """A grimp graph of these imports, each module's parents added first (grimp's hierarchy)."""
    g = grimp.ImportGraph()
    names = {m for pair in imports for m in pair}
    for name in sorted({".".join(m.split(".")[: i + 1]) for m in names for i in range(m.count(".") + 1)}):
        g.add_module(name)
    for importer, imported in imports:
        g.add_import(importer=importer, imported=imported)
    return g


def test_cycle_detector_on_a_fake_graph():
    g = _fake_graph([("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.e", "p.e")])
    assert import_cycles(g) == [["p.a", "p.b", "p.c"], ["p.e"]]
    assert import_cycles(_fake_graph([("p.a", "p.b"), ("p.b", "p.c"), ("p.a", "p.c")])) == []


def test_layer_detector_on_a_fake_graph():
    layers = ("top", {"left", "right"}, "low")
    imports = [("p.top.x", "p.left.y"), ("p.left.y", "p.low.z"), ("p.low.z", "p.top.x")]  # up
    g = _fake_graph([*imports, ("p.right.w", "p.left.y")])  # and one between siblings
    bad = upward_imports(g, layers, package="p")
    assert any(b.startswith("p.low -> p.top") for b in bad), bad
    assert any(b.startswith("p.right -> p.left") for b in bad), bad
    assert not any(b.startswith("p.top ->") for b in bad), bad
    g2 = _fake_graph([("p.top.x", "p.left.y"), ("p.left.y", "p.low.z"), ("p.top.x", "p.low.z")])
    assert upward_imports(g2, layers, package="p") == []
    assert unlayered_subpackages(g2, layers, package="p") == []
    g2.add_module("p.extra")
    assert unlayered_subpackages(g2, layers, package="p") == ["extra"]


def test_deferred_import_detector():
    src = (
        "import numpy\nfrom . import a\n"
        "def f():\n    import scipy\n    from .b import c\n    import manifex.tl\n"
        "class K:\n    def g(self):\n        from manifex import pl\n"
    )
    assert [line for line, _ in deferred_internal_imports(src)] == [5, 6, 9]
