"""Sphinx configuration: MyST markdown and notebooks (myst-nb), numpydoc docstrings, autosummary.

Build (warnings are errors)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The tutorial notebooks live in ``tutorials/`` at the repository root; they are copied into
``docs/tutorials/`` when the build starts and rendered with their stored outputs (they are not
executed). Cross-links to other projects' documentation (intersphinx) need the network and are
off unless ``MANIFEX_DOCS_INTERSPHINX=1`` is set.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "manifex"
author = "manifex developers"
copyright = "manifex developers"
try:
    release = version("manifex")
except PackageNotFoundError:  # building from a checkout that is not installed
    release = "0.0.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# ---- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"inherited-members": "Module, Sequential, BaseException"}
templates_path = ["_templates"]
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# ---- MyST and notebooks ----------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_merge_streams = True
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# ---- HTML ------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "manifex"
html_theme_options = {"show_toc_level": 2}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
# notebook outputs that HTML cannot show (progress-bar widgets) are skipped without a warning
suppress_warnings = ["mystnb.unknown_mime_type"]

# ---- optional cross-links (need the network) -------------------------------------------------
if os.environ.get("MANIFEX_DOCS_INTERSPHINX", "0") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "torch": ("https://pytorch.org/docs/stable/", None),
    }


# ---- tutorials: copy the notebooks next to docs/tutorials/index.md ---------------------------
def _prepare_notebook(raw: bytes, name: str) -> bytes:
    """The notebook as the docs need it: a level-1 heading (the toctree's link text; one is made
    from the file name when there is none) and a code language for highlighting."""
    nb = json.loads(raw)
    changed = False
    meta = nb.setdefault("metadata", {})
    if not meta.get("language_info", {}).get("name"):
        meta["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
        changed = True
    has_title = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = cell.get("source", "")
            text = "".join(src) if isinstance(src, list) else src
            if any(line.startswith("# ") for line in text.splitlines()):
                has_title = True
                break
    if not has_title:
        title = name.removesuffix(".ipynb").lstrip("0123456789_").replace("_", " ").capitalize()
        cell = {"cell_type": "markdown", "metadata": {}, "source": f"# {title}"}
        if (nb.get("nbformat"), nb.get("nbformat_minor", 0)) >= (4, 5):
            cell["id"] = "manifex-docs-title"
        nb.setdefault("cells", []).insert(0, cell)
        changed = True
    return json.dumps(nb, indent=1, ensure_ascii=False).encode() if changed else raw


def _sync_tutorials() -> int:
    """Copy ``tutorials/*.ipynb`` into ``docs/tutorials/`` and drop copies whose source is gone."""
    src, dst = ROOT / "tutorials", DOCS / "tutorials"
    dst.mkdir(exist_ok=True)
    wanted = {p.name: p for p in sorted(src.glob("*.ipynb"))} if src.is_dir() else {}
    for old in dst.glob("*.ipynb"):
        if old.name not in wanted:
            old.unlink()
    for name, path in wanted.items():
        data = _prepare_notebook(path.read_bytes(), name)
        target = dst / name
        if not target.exists() or target.read_bytes() != data:  # unchanged copies keep their mtime
            target.write_bytes(data)
    return len(wanted)


N_TUTORIALS = _sync_tutorials()


def _drop_empty_tutorial_toctree(app, docname: str, source: list[str]) -> None:
    """Without any notebook, replace the tutorials page's glob toctree (it would match nothing)."""
    if docname == "tutorials/index" and N_TUTORIALS == 0:
        text = source[0]
        start = text.find("```{toctree}")
        if start >= 0:
            end = text.find("```", start + 3)
            end = len(text) if end < 0 else end + 3
            source[0] = text[:start] + "No notebook is present in `tutorials/` yet." + text[end:]


def _reread_tutorial_index(app, env, added, changed, removed) -> list[str]:
    """Re-read the tutorials page on every build: its toctree depends on which notebooks exist."""
    return ["tutorials/index"] if "tutorials/index" in env.found_docs else []


def _skip_sklearn_metadata_routing(app, what, name, obj, skip, options):
    """Leave out scikit-learn's metadata-routing methods (``get_metadata_routing``,
    ``set_<method>_request``) that every estimator inherits, and ``set_output`` of
    ``TransformerMixin``: their docstrings point into scikit-learn's own documentation and say
    nothing about manifex."""
    if name in ("get_metadata_routing", "set_output") or (
        name.startswith("set_") and name.endswith("_request")
    ):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_sklearn_metadata_routing)
    app.connect("source-read", _drop_empty_tutorial_toctree)
    app.connect("env-get-outdated", _reread_tutorial_index)
