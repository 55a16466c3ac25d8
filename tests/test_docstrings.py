"""Every public function and class has a numpydoc docstring with Parameters and Examples.

"Public" means listed in the ``__all__`` of a subpackage (``mx.tl``, ``mx.pl``, ...). Each must
have an ``Examples`` section, and a ``Parameters`` section when it takes parameters (for a class:
its constructor's). The API reference (``docs/api.md``) must list each of them.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

import manifex as mx

MODULES = [f"manifex.{name}" for name in mx.__all__] + ["manifex.augment.image"]
API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def _section(doc: str, name: str) -> bool:
    return re.search(rf"^\s*{name}\n\s*-{{3,}}\s*$", doc, flags=re.MULTILINE) is not None


def _parameters(obj) -> list[str]:
    """Names of the parameters a caller passes (``self`` excluded; none for exceptions)."""
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return []
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p for p in sig.parameters if p != "self"]


def docstring_problems(obj) -> list[str]:
    """What is missing from ``obj``'s docstring (empty when nothing is)."""
    doc = inspect.getdoc(obj) or ""
    problems = []
    if not doc.strip():
        return ["no docstring"]
    if not _section(doc, "Examples"):
        problems.append("no Examples section")
    elif ">>>" not in doc.split("Examples", 1)[1]:
        problems.append("Examples section without a >>> example")
    if _parameters(obj) and not _section(doc, "Parameters"):
        problems.append("no Parameters section")
    return problems


def public_objects() -> list[tuple[str, object]]:
    out = []
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and all(obj is not o for _, o in out):
                out.append((f"{modname}.{name}", obj))
    return out


PUBLIC = public_objects()


def test_there_are_public_objects():
    names = {n for n, _ in PUBLIC}
    assert "manifex.tl.dlme" in names and "manifex.models.DLME" in names
    assert len(PUBLIC) > 50


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_docstring(name, obj):
    problems = docstring_problems(obj)
    assert not problems, f"{name}: {', '.join(problems)}"


def test_checker_flags_missing_sections():
    def undocumented(x, y=1):
        pass

    def no_examples(x):
        """Do something.

        Parameters
        ----------
        x
            A value.
        """

    def no_parameters(x):
        """Do something.

        Examples
        --------
        >>> no_parameters(1)
        """

    def complete(x):
        """Do something.

        Parameters
        ----------
        x
            A value.

        Examples
        --------
        >>> complete(1)
        """

    class NoParameters:
        """A class.

        Examples
        --------
        >>> NoParameters(2)
        """

        def __init__(self, n):
            self.n = n

    assert docstring_problems(undocumented) == ["no docstring"]
    assert docstring_problems(no_examples) == ["no Examples section"]
    assert docstring_problems(no_parameters) == ["no Parameters section"]
    assert docstring_problems(NoParameters) == ["no Parameters section"]
    assert docstring_problems(complete) == []


def _resolve(dotted: str):
    """The object at ``manifex.<dotted>`` or ``manifex.augment.<dotted>``, else None."""
    for prefix in ("manifex.", "manifex.augment."):
        modname, _, attr = (prefix + dotted).rpartition(".")
        try:
            return getattr(importlib.import_module(modname), attr)
        except (ImportError, AttributeError):
            continue
    return None


def test_api_reference_lists_every_public_object():
    entries = re.findall(r"^ {3}([A-Za-z_][\w.]*)\s*$", API_PAGE.read_text(), flags=re.MULTILINE)
    listed = {id(obj) for obj in map(_resolve, entries) if obj is not None}
    missing = [name for name, obj in PUBLIC if id(obj) not in listed]
    assert not missing, f"not in docs/api.md: {missing}"


def test_docstring_examples_run_as_doctests():
    """The README's test command (``python -m pytest``) runs every example of ``src/manifex``."""
    import tomllib

    cfg = tomllib.loads((API_PAGE.parents[1] / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "src/manifex" in cfg["testpaths"]
    assert "--doctest-modules" in cfg["addopts"]
    assert {"ELLIPSIS", "NORMALIZE_WHITESPACE"} <= set(cfg["doctest_optionflags"])
    # each example runs in its own temporary directory (files it writes stay out of the checkout)
    conftest = (API_PAGE.parents[1] / "conftest.py").read_text()
    assert "DoctestItem" in conftest and "monkeypatch.chdir" in conftest
