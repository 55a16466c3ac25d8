"""Reading a fitted model through the estimator contract, for :mod:`manifex.tl` and :mod:`manifex.metrics`.

Every manifex model answers ``transform(X, *, feature_names=None, space="embedding", block=None)``;
these helpers check the arguments before any work and call it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["SPACES", "check_model", "check_space", "model_transform"]

Space = Literal["embedding", "latent", "input"]
#: The spaces of the contract (N2D also offers ``"manifold"`` through ``model.transform``).
SPACES = ("embedding", "latent", "input")


def check_model(model: Any) -> None:
    """``model`` has a ``transform`` and is fitted (its ``is_fitted`` is not ``False``)."""
    from .models import NotFittedError

    if not callable(getattr(model, "transform", None)):
        raise TypeError(f"`model` must have a `transform` method, got {type(model).__name__}.")
    if getattr(model, "is_fitted", True) is False:
        raise NotFittedError(
            f"This {type(model).__name__} is not fitted yet; fit it (e.g. `mx.tl.dlme(adata, "
            "return_model=True)`) or load a saved one with `mx.models.load_model(path)`."
        )


def check_space(space: Any, block: Any) -> None:
    """``space`` is one of :data:`SPACES` and ``block`` (a block index) goes with ``space="latent"``.

    Examples
    --------
    >>> from manifex._transform import check_space
    >>> check_space("input", 0)
    Traceback (most recent call last):
    ...
    ValueError: `block` reads a block of the network: it needs space='latent', not 'input'.
    """
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"`space` must be 'embedding', 'latent' or 'input', got {space!r}.")
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
