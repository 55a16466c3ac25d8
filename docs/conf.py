"""Sphinx configuration (cookiecutter-scverse style: myst, numpydoc-style docstrings via napoleon)."""

from importlib.metadata import version

project = "manifex"
author = "manifex developers"
release = version("manifex")
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
]
autosummary_generate = True
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
myst_enable_extensions = ["dollarmath", "colon_fence"]
nb_execution_mode = "off"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "torch": ("https://pytorch.org/docs/stable/", None),
}
html_theme = "sphinx_book_theme"
html_title = "manifex"
exclude_patterns = ["_build"]
