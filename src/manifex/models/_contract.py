"""Reading a fitted model through the estimator contract, for :mod:`manifex.tl` and :mod:`manifex.metrics`.

Every manifex model answers ``transform(X, *, feature_names=None, space="embedding", block=None)``;
these helpers check the arguments before any work and call it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = ["SPACES", "NotFittedError", "check_model", "check_space", "model_transform"]

Space = Literal["embedding", "latent", "input", "manifold"]
#: The spaces of the contract; a model class may offer more (``type(model)._extra_spaces``: N2D's
#: ``"manifold"``).
SPACES = ("embedding", "latent", "input")


class NotFittedError(_SklearnNotFittedError):
    """Raised when a model is used before ``fit``.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> try:
    ...     mx.models.DLME().transform(np.zeros((5, 10)))
    ... except mx.models.NotFittedError as err:
    ...     print(err)
    This DLME is not fitted yet; call `fit` first (or load a saved model with `mx.models.load_model`).
    """


def check_model(model: Any) -> None:
    """``model`` has a ``transform`` and is fitted (its ``is_fitted`` is not ``False``)."""
    if not callable(getattr(model, "transform", None)):
        raise TypeError(f"`model` must have a `transform` method, got {type(model).__name__}.")
    if getattr(model, "is_fitted", True) is False:
        raise NotFittedError(
            f"This {type(model).__name__} is not fitted yet; fit it (e.g. `mx.tl.dlme(adata, "
            "return_model=True)`) or load a saved one with `mx.models.load_model(path)`."
        )


def model_spaces(model: Any = None) -> tuple[str, ...]:
    """The spaces ``model.transform`` accepts: :data:`SPACES` and those of the model's class
    (``_extra_spaces``); :data:`SPACES` alone when ``model`` is ``None``.

    Examples
    --------
    >>> import manifex as mx
    >>> from manifex.models._contract import model_spaces
    >>> model_spaces(mx.models.N2D())
    ('embedding', 'latent', 'input', 'manifold')
    """
    extra = getattr(type(model), "_extra_spaces", ()) if model is not None else ()
    return SPACES + tuple(s for s in extra if isinstance(s, str) and s not in SPACES)


def check_space(space: Any, block: Any, model: Any = None) -> None:
    """``space`` is one of :data:`SPACES` (or of ``model``'s extra spaces, e.g. N2D's
    ``"manifold"``) and ``block`` (a block index) goes with ``space="latent"``.

    Examples
    --------
    >>> from manifex.models._contract import check_space
    >>> check_space("input", 0)
    Traceback (most recent call last):
    ...
    ValueError: `block` reads a block of the network: it needs space='latent', not 'input'.
    """
    allowed = model_spaces(model)
    if not isinstance(space, str) or space not in allowed:
        names = ", ".join(map(repr, allowed[:-1])) + f" or {allowed[-1]!r}"
        whose = f" for a {type(model).__name__}" if model is not None else ""
        raise ValueError(f"`space` must be {names}{whose}, got {space!r}.")
    if block is not None:
        if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 0:
            raise ValueError(f"`block` must be a non-negative integer block index or None, got {block!r}.")
        if space != "latent":
            raise ValueError(f"`block` reads a block of the network: it needs space='latent', not {space!r}.")


def model_transform(
    model: Any, x: Any, *, feature_names: Any = None, space: Space = "embedding", block: int | None = None
) -> np.ndarray:
    """``model.transform(x, feature_names=..., space=..., block=...)`` as an ``(n, d)`` array.

    Only the arguments that differ from the contract's defaults are passed, so any object with
    a scikit-learn style ``transform(X)`` serves for the default space.
    """
    kwargs: dict[str, Any] = {}
    if feature_names is not None:
        kwargs["feature_names"] = feature_names
    if space != "embedding":
        kwargs["space"] = space
    if block is not None:
        kwargs["block"] = int(block)
    out = np.asarray(model.transform(x, **kwargs))
    n = x.shape[0] if hasattr(x, "shape") else len(x)
    if out.ndim < 2 or out.shape[0] != n:
        raise ValueError(f"`model.transform` returned shape {out.shape} for {n} samples; expected (n, d).")
    return out.reshape(n, -1)
