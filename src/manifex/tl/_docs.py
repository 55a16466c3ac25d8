"""Parameter texts shared by the ``tl`` functions, and :func:`doc_params` that fills them in.

Like scanpy's ``_doc_params``: a docstring names a shared text by a placeholder alone on its
line (``{doc_device}``), indented as the entry it stands for; :func:`doc_params` replaces it by
the text, indented alike, so one parameter is described once for every function that takes it.
A parameter a ``tl`` function passes on to its model unchanged is described by the model
class: :func:`model_params` reads those entries from the class's docstring.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

__all__ = ["doc_params", "model_params"]

F = TypeVar("F", bound=Callable)


def doc_params(**texts: str) -> Callable[[F], F]:
    """Fill each ``{name}`` placeholder line of the decorated object's docstring with
    ``texts[name]`` (dedented, then indented like the placeholder).

    Examples
    --------
    >>> from manifex.tl._docs import doc_params
    >>> @doc_params(doc_copy="copy\\n    Work on a copy.")
    ... def f(copy=False):
    ...     '''Do it.
    ...
    ...     Parameters
    ...     ----------
    ...     {doc_copy}
    ...     '''
    >>> print(f.__doc__.splitlines()[4:6])
    ['    copy', '        Work on a copy.']
    """

    def fill(obj: F) -> F:
        doc = obj.__doc__ or ""
        for name, text in texts.items():
            pattern = re.compile(rf"^([ \t]*)\{{{name}\}}[ \t]*$", re.MULTILINE)
            if not pattern.search(doc):
                raise ValueError(f"{obj.__qualname__}'s docstring has no line {{{name}}}.")
            body = textwrap.dedent(text).strip("\n")
            doc = pattern.sub(lambda m, body=body: textwrap.indent(body, m.group(1)), doc)
        obj.__doc__ = doc
        return obj

    return fill


def model_params(klass: type, *names: str) -> str:
    """The entries of ``names`` in the Parameters section of ``klass``'s docstring (an entry that
    describes several parameters, ``"lr, weight_decay"``, once), dedented.

    Examples
    --------
    >>> import manifex as mx
    >>> from manifex.tl._docs import model_params
    >>> print(model_params(mx.models.N2D, "k_range"))
    k_range
        Inclusive range ``(k_min, k_max)`` searched when ``n_clusters`` is ``None``.
    """
    lines = inspect.cleandoc(klass.__doc__ or "").splitlines()
    try:
        start = lines.index("Parameters") + 2
    except ValueError:
        raise ValueError(f"{klass.__name__}'s docstring has no Parameters section.") from None
    entries: list[list[str]] = []
    for i, line in enumerate(lines[start:], start):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1]):
            break  # the next section
        if line and not line[0].isspace():
            entries.append([line])
        elif entries:
            entries[-1].append(line)
    picked: list[str] = []
    for name in names:
        found = [e for e in entries if name in (n.strip() for n in e[0].split(","))]
        if not found:
            raise ValueError(f"{klass.__name__}'s docstring does not describe `{name}`.")
        text = "\n".join(found[0]).rstrip()
        if text not in picked:
            picked.append(text)
    return "\n".join(picked)


# ---- the fitting functions (dlme, tsimcne, n2d) -----------------------------------------------
doc_layer = """\
layer
    Use ``adata.layers[layer]`` instead of ``X`` (sparse is fine: minibatches are densified on
    the fly)."""

doc_device = """\
device
    ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``."""

doc_random_state = """\
random_state
    Seed of every random step (weights, batches, augmentations, a PCA computed here); the same
    seed on the same device gives the same result."""

doc_progress = """\
progress
    Show a progress bar."""

doc_copy_adata = """\
copy
    Work on and return a copy of ``adata``."""

doc_returns_fit = """\
Depending on ``copy`` and ``return_model``: ``None``, the AnnData copy, the model, or
``(adata_copy, model)``. A warning (:class:`~manifex.tl._prepcheck.PreprocessingWarning`) says
when the genes trained on look like raw counts (run ``sc.pp.normalize_total`` and
``sc.pp.log1p`` first). Writes"""

#: the texts every fitting function (dlme, tsimcne, n2d) shares
FIT_DOCS = {
    "doc_device": doc_device,
    "doc_random_state": doc_random_state,
    "doc_progress": doc_progress,
    "doc_copy_adata": doc_copy_adata,
    "doc_returns_fit": doc_returns_fit,
}

# ---- the query functions (embed, transfer_labels, fewshot_labels) -----------------------------
doc_basis = """\
basis
    Embedding key without ``X_`` (``"dlme"``, ``"dlme_latent"``, ...). Default: the one
    embedding the query received from :func:`embed` that the other AnnData given also hold."""

doc_label_key = """\
label_key
    ``obs`` column with the labels (of the reference, of ``support``); missing labels are
    ignored."""

doc_copy_query = """\
copy
    Return a copy of ``query`` instead of writing into it."""
