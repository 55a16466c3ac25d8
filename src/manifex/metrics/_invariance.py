"""Invariance of a parametric embedding to augmentation (Dikkala, Kaplun & Panigrahy, 2021).

A network that maps a sample to a code depending on *which* manifold (cell type, digit) it
comes from and not on *where* on it (augmentation, noise) has two measurable properties:

* its embedding barely moves under augmentation, relative to the spacing of the data
  (:func:`invariance_score`, here);
* classes it never saw during training still land together, so one labelled example per
  class names them (:func:`~manifex.metrics.one_shot_accuracy`, with the hold-out protocol in
  :func:`~manifex.metrics.holdout_classes` and :func:`~manifex.metrics.holdout_one_shot`).

Both read a fitted model through its ``transform(X, feature_names=..., space=..., block=...)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from .._utils import as_2d_float, check_random_state
from ..augment.expression import AugmentContext, expression_preset
from ..models._contract import Space, check_model, check_space, model_transform
from ..neighbors import knn_indices

__all__ = ["invariance_score"]


# ---------------------------------------------------------------------------------------------
# invariance
# ---------------------------------------------------------------------------------------------
def _n_positional(fn: Callable) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 3
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in params)


def invariance_score(
    model: Any,
    X: Any,
    augment: str | Callable = "default",
    *,
    feature_names: Any = None,
    space: Space = "embedding",
    n_augment: int = 5,
    n_neighbors: int = 15,
    reduce: Literal["median", "mean"] = "median",
    random_state: int = 0,
    return_per_sample: bool = False,
) -> float | tuple[float, np.ndarray]:
    """How far augmentation moves a point in the embedding, relative to the data's spacing.

    For every sample ``x_i`` with embedding ``e_i`` the score is

    ``s_i = mean_r ‖e_i − f(a_r(x_i))‖ / min_{j≠i} ‖e_i − e_j‖``,

    the mean distance between a point's embedding and the embeddings of ``n_augment`` random
    augmentations of it, divided by the distance to its nearest other point in the embedding of
    ``X``. ``s_i < 1``: the augmented views stay closer than the nearest other sample (the map
    is invariant to the augmentation at the data's resolution); ``s_i ≫ 1``: augmentation moves
    points across the map. Points with a zero nearest-neighbour distance (duplicates) are left
    out.

    Parameters
    ----------
    model
        A fitted manifex model (or any object with ``transform(X)``).
    X
        Samples, prepared like the model's training input (dense, cells × features); with a
        2-argument augmentation anything it accepts (e.g. images).
    augment
        A preset of :func:`manifex.augment.expression_preset` (``"knn_mix"``, ``"default"``,
        ``"strong"``), an expression augmentation ``aug(x, idx, ctx)`` (the kNN table it may need
        is built on ``X`` with ``n_neighbors``), or a callable ``aug(x, generator)`` on a float
        tensor of ``X`` (e.g. an image augmentation).
    feature_names
        Column names of ``X`` (aligned to the model's features by name).
    space
        ``"embedding"`` (the map), ``"latent"`` (the network's internal representation) or
        ``"input"`` (the features the network reads: how far the augmentation itself moves a
        point, the reference value for the other two).
    n_augment
        Augmented copies per sample.
    n_neighbors
        K of the kNN table used by neighbour-based augmentations.
    reduce
        Summary of the per-sample scores.
    random_state
        Seed of the augmentations.
    return_per_sample
        Also return the per-sample scores (``NaN`` where left out).

    Returns
    -------
    The summary score, or ``(score, per_sample)``.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> x = np.random.default_rng(0).normal(size=(200, 10)).astype("float32")
    >>> model = mx.models.DLME(n_steps=20, progress=False, device="cpu").fit(x)
    >>> s = mx.metrics.invariance_score(model, x, "default", n_augment=2)
    >>> s > 0
    True
    """

    check_model(model)
    check_space(space, None)
    seed = check_random_state(random_state)
    if not isinstance(n_augment, int | np.integer) or n_augment < 1:
        raise ValueError(f"`n_augment` must be a positive integer, got {n_augment!r}.")
    if reduce not in ("median", "mean"):
        raise ValueError(f"`reduce` must be 'median' or 'mean', got {reduce!r}.")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"`n_neighbors` must be a positive integer, got {n_neighbors!r}.")
    aug = expression_preset(augment) if isinstance(augment, str) else augment
    if not callable(aug):
        raise TypeError("`augment` must be a preset name or a callable.")
    gen = torch.Generator().manual_seed(seed)
    if _n_positional(aug) == 2:
        xt = torch.as_tensor(np.asarray(X)).float()
        n = xt.shape[0]

        def draw() -> np.ndarray:
            return aug(xt.clone(), gen).cpu().numpy()
    else:
        x = as_2d_float(X, name="X")
        if not isinstance(x, np.ndarray):
            x = x.toarray()
        n = x.shape[0]
        if n < 2:
            raise ValueError("`X` needs at least 2 samples.")
        xt = torch.from_numpy(x)
        k = min(n_neighbors, n - 1)
        ctx = AugmentContext(
            data=xt,
            knn=torch.as_tensor(knn_indices(x, k, random_state=seed)),
            feature_std=torch.from_numpy(x.std(0)),
            generator=gen,
        )
        idx = torch.arange(n)

        def draw() -> np.ndarray:
            return aug(xt.clone(), idx, ctx).cpu().numpy()

    if n < 2:
        raise ValueError("`X` needs at least 2 samples.")
    emb = model_transform(model, X, feature_names=feature_names, space=space).astype(np.float64)
    moved = np.zeros(n)
    for _ in range(n_augment):
        e_aug = model_transform(model, draw(), feature_names=feature_names, space=space)
        moved += np.linalg.norm(emb - e_aug, axis=1)
    moved /= n_augment
    nn_dist = _nearest_other_distance(emb)
    per = np.full(n, np.nan)
    ok = nn_dist > 0
    per[ok] = moved[ok] / nn_dist[ok]
    if not ok.any():
        raise ValueError("All embedded points coincide; the score is undefined.")
    score = float(np.nanmedian(per) if reduce == "median" else np.nanmean(per))
    return (score, per) if return_per_sample else score


def _nearest_other_distance(emb: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    d, _ = NearestNeighbors(n_neighbors=2).fit(emb).kneighbors(emb)
    return d[:, 1]
