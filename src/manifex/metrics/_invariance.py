"""Invariance and few-shot metrics for parametric embeddings (Dikkala, Kaplun & Panigrahy, 2021).

A network that maps a sample to a code depending on *which* manifold (cell type, digit) it
comes from and not on *where* on it (augmentation, noise) has two measurable properties:

* its embedding barely moves under augmentation, relative to the spacing of the data
  (:func:`invariance_score`);
* classes it never saw during training still land together, so one labelled example per
  class names them (:func:`one_shot_accuracy`, with the hold-out protocol in
  :func:`holdout_classes` and :func:`holdout_one_shot`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

__all__ = [
    "holdout_classes",
    "holdout_one_shot",
    "invariance_score",
    "one_shot_accuracy",
]

Space = Literal["embedding", "latent", "input"]


# ---------------------------------------------------------------------------------------------
# embedding with any manifex model (or any object with ``transform``)
# ---------------------------------------------------------------------------------------------
def _check_model_fitted(model: Any) -> None:
    from ..models._base import NotFittedError

    if not hasattr(model, "transform") or not callable(model.transform):
        raise TypeError(f"`model` must have a `transform` method, got {type(model).__name__}.")
    if getattr(model, "is_fitted", True) is False:
        raise NotFittedError(
            f"This {type(model).__name__} is not fitted yet; fit it (e.g. `mx.tl.dlme(adata, "
            "return_model=True)`) or load a saved one with `mx.models.load_model(path)`."
        )


def embed_with(
    model: Any, x: Any, *, feature_names: Any = None, space: Space = "embedding", layer: int | None = None
) -> np.ndarray:
    """``model.transform`` in the requested space, whatever the model's keyword for it.

    ``space="embedding"`` is the map the ``tl`` function writes to ``obsm`` (DLME / t-SimCNE
    output, N2D's 2-d map); ``"latent"`` is the network's internal representation (DLME's
    ``z``, t-SimCNE's backbone features, N2D's autoencoder code), or with ``layer`` the output
    of that block of the encoder / backbone (DLME, t-SimCNE); ``"input"`` is what the
    network reads, without the network: the features aligned to the training features by name
    (before any standardisation the model applies inside), or the images flattened and scaled
    to [0, 1]. The input space is the baseline every learnt space should beat.
    """
    _check_model_fitted(model)
    if space not in ("embedding", "latent", "input"):
        raise ValueError(f"`space` must be 'embedding', 'latent' or 'input', got {space!r}.")
    if layer is not None and space != "latent":
        raise ValueError(f"`layer` reads the network's blocks: it needs space='latent', not {space!r}.")
    if space == "input":
        return _model_input(model, x, feature_names)
    params = inspect.signature(model.transform).parameters
    kwargs: dict[str, Any] = {}
    if feature_names is not None and "feature_names" in params:
        kwargs["feature_names"] = feature_names
    if layer is not None:
        if "layer" not in params:
            raise ValueError(f"{type(model).__name__}.transform cannot return a block's output (`layer`).")
        out = np.asarray(model.transform(x, layer=layer, **kwargs))
        return out.reshape(out.shape[0], -1)
    if "space" in params:  # N2D
        kwargs["space"] = "map" if space == "embedding" else "code"
    elif space == "latent":
        if "return_latent" in params:  # DLME
            kwargs["return_latent"] = True
        elif "return_features" in params:  # t-SimCNE
            kwargs["return_features"] = True
        else:
            raise ValueError(f"{type(model).__name__}.transform has no latent space to return.")
    out = np.asarray(model.transform(x, **kwargs))
    if out.ndim != 2:
        raise ValueError(f"`model.transform` returned shape {out.shape}; expected (n, d).")
    return out


def _model_input(model: Any, x: Any, feature_names: Any) -> np.ndarray:
    """The query as the model's network would read it (aligned features, or images in [0, 1])."""
    if getattr(model, "kind_", None) == "image":
        u8 = model._query(x)
        return u8.reshape(u8.shape[0], -1).astype(np.float32) / np.float32(255.0)
    check = getattr(model, "_check_query", None)
    if check is None:
        raise ValueError(f"{type(model).__name__} does not expose its input space.")
    out = check(x, feature_names)
    out = out.toarray() if sp.issparse(out) else np.asarray(out)
    return out.astype(np.float32, copy=False)


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
    from .._neighbors import knn_indices
    from .._utils import as_2d_float, check_random_state
    from ..augment.expression import AugmentContext, expression_preset

    _check_model_fitted(model)
    seed = check_random_state(random_state)
    if not isinstance(n_augment, int | np.integer) or n_augment < 1:
        raise ValueError(f"`n_augment` must be a positive integer, got {n_augment!r}.")
    if reduce not in ("median", "mean"):
        raise ValueError(f"`reduce` must be 'median' or 'mean', got {reduce!r}.")
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
    emb = embed_with(model, X, feature_names=feature_names, space=space).astype(np.float64)
    moved = np.zeros(n)
    for _ in range(n_augment):
        e_aug = embed_with(model, draw(), feature_names=feature_names, space=space)
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


# ---------------------------------------------------------------------------------------------
# one-shot / few-shot episodes
# ---------------------------------------------------------------------------------------------
def one_shot_accuracy(
    embedding: Any,
    labels: Any,
    *,
    n_way: int | None = None,
    k_shot: int = 1,
    n_query: int | None = 15,
    n_episodes: int = 200,
    random_state: int = 0,
) -> dict[str, Any]:
    """N-way k-shot accuracy of nearest-prototype classification, over random episodes.

    Each episode draws ``n_way`` classes, ``k_shot`` labelled examples of each (the support
    set) and up to ``n_query`` other samples of each (the queries); a query gets the class of
    the nearest prototype (mean of a class's support embeddings, Euclidean distance). The
    accuracy over the episode's queries is recorded; the result is its mean ± sd over
    episodes. Use it on the embedding of classes the model never saw (see
    :func:`holdout_one_shot`).

    Parameters
    ----------
    embedding
        ``(n, d)`` coordinates.
    labels
        ``(n,)`` class labels.
    n_way
        Classes per episode; default all classes with at least ``k_shot + 1`` samples.
    k_shot
        Labelled examples per class (1 for one-shot).
    n_query
        Queries per class and episode (balanced episodes, as usual in few-shot learning);
        ``None`` uses all of a class's remaining samples.
    n_episodes
        Number of episodes.
    random_state
        Seed of the episode draws.

    Returns
    -------
    ``dict`` with ``mean``, ``sd``, ``n_episodes``, ``n_way``, ``k_shot``, ``chance``
    (``1 / n_way``), ``classes`` and the per-episode ``accuracies``.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(4), 30)
    >>> emb = rng.normal(size=(4, 2))[y] * 10 + rng.normal(size=(120, 2))
    >>> res = mx.metrics.one_shot_accuracy(emb, y, n_episodes=50)
    >>> res["mean"] > 0.9, res["chance"]
    (True, 0.25)
    """
    from .._utils import check_random_state

    emb = np.asarray(embedding, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"`embedding` must be 2-dimensional, got shape {emb.shape}.")
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str)) if labels is not None else None
    if lab is None or lab.shape != (emb.shape[0],):
        raise ValueError(f"`labels` must have {emb.shape[0]} entries.")
    if not isinstance(k_shot, int | np.integer) or k_shot < 1:
        raise ValueError(f"`k_shot` must be a positive integer, got {k_shot!r}.")
    if n_query is not None and (not isinstance(n_query, int | np.integer) or n_query < 1):
        raise ValueError(f"`n_query` must be a positive integer or None, got {n_query!r}.")
    if not isinstance(n_episodes, int | np.integer) or n_episodes < 1:
        raise ValueError(f"`n_episodes` must be a positive integer, got {n_episodes!r}.")
    rng = np.random.default_rng(check_random_state(random_state))
    classes, counts = np.unique(lab, return_counts=True)
    eligible = classes[counts >= k_shot + 1]
    if n_way is None:
        n_way = len(eligible)
    if not isinstance(n_way, int | np.integer) or n_way < 2:
        raise ValueError(f"`n_way` must be an integer ≥ 2, got {n_way!r}.")
    if n_way > len(eligible):
        raise ValueError(
            f"{n_way}-way episodes need {n_way} classes with at least {k_shot + 1} samples; "
            f"only {len(eligible)} have that many ({list(eligible)})."
        )
    members = {c: np.flatnonzero(lab == c) for c in eligible}
    accs = np.empty(n_episodes)
    for e in range(n_episodes):
        chosen = rng.choice(eligible, n_way, replace=False) if n_way < len(eligible) else eligible
        protos, q_idx, q_lab = [], [], []
        for ci, c in enumerate(chosen):
            perm = rng.permutation(members[c])
            protos.append(emb[perm[:k_shot]].mean(0))
            rest = perm[k_shot:] if n_query is None else perm[k_shot : k_shot + n_query]
            q_idx.append(rest)
            q_lab.append(np.full(rest.size, ci))
        p = np.stack(protos)
        qi, ql = np.concatenate(q_idx), np.concatenate(q_lab)
        d2 = ((emb[qi, None, :] - p[None, :, :]) ** 2).sum(-1)
        accs[e] = float((d2.argmin(1) == ql).mean())
    return {
        "mean": float(accs.mean()),
        "sd": float(accs.std(ddof=1)) if n_episodes > 1 else 0.0,
        "n_episodes": int(n_episodes),
        "n_way": int(n_way),
        "k_shot": int(k_shot),
        "chance": 1.0 / n_way,
        "classes": [str(c) for c in eligible],
        "accuracies": accs,
    }


def holdout_classes(
    labels: Any,
    *,
    holdout: Sequence[Any] | None = None,
    n_holdout: int | None = None,
    min_size: int = 10,
    random_state: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Split samples by class for the hold-out protocol: fit on some classes, test on the rest.

    Parameters
    ----------
    labels
        ``(n,)`` class labels.
    holdout
        Classes to hold out; default a random draw of ``n_holdout`` classes among those with
        at least ``min_size`` samples.
    n_holdout
        Number of classes to draw (default: a third of the classes, at least 2).
    min_size
        Smallest class that may be drawn (a one-shot episode needs examples to query).
    random_state
        Seed of the draw.

    Returns
    -------
    ``(train_mask, held_out)``: a boolean mask of the samples to fit on, and the held-out
    class names (as strings).

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> y = np.repeat(["a", "b", "c", "d"], 10)
    >>> mask, held = mx.metrics.holdout_classes(y, holdout=["c", "d"])
    >>> int(mask.sum()), held
    (20, ['c', 'd'])
    """
    from .._utils import check_random_state

    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    classes, counts = np.unique(lab, return_counts=True)
    if holdout is not None:
        held = [str(c) for c in holdout]
        unknown = sorted(set(held) - set(classes))
        if unknown:
            raise KeyError(f"Held-out classes {unknown} are not among the labels {list(classes)}.")
    else:
        big = classes[counts >= min_size]
        if n_holdout is None:
            n_holdout = max(2, len(classes) // 3)
        if not isinstance(n_holdout, int | np.integer) or n_holdout < 1:
            raise ValueError(f"`n_holdout` must be a positive integer, got {n_holdout!r}.")
        if n_holdout > len(big) or n_holdout >= len(classes):
            raise ValueError(
                f"Cannot hold out {n_holdout} classes: {len(big)} of {len(classes)} have ≥ {min_size} samples."
            )
        rng = np.random.default_rng(check_random_state(random_state))
        held = sorted(str(c) for c in rng.choice(big, n_holdout, replace=False))
    if len(set(held)) >= len(classes):
        raise ValueError("At least one class must remain for training.")
    return ~np.isin(lab, held), held


def holdout_one_shot(
    model: Any,
    X: Any,
    labels: Any,
    *,
    holdout: Sequence[Any] | None = None,
    n_holdout: int | None = None,
    feature_names: Any = None,
    space: Space = "embedding",
    layer: int | None = None,
    n_way: int | None = None,
    k_shot: int = 1,
    n_query: int | None = 15,
    n_episodes: int = 200,
    random_state: int = 0,
) -> dict[str, Any]:
    """The one-shot protocol end to end: fit on some classes, embed the others, run episodes.

    ``model`` (an unfitted manifex estimator, e.g. ``mx.models.DLME(...)``) is fitted on the
    samples of the training classes only; the held-out classes are embedded with
    ``model.transform`` and scored by :func:`one_shot_accuracy`.

    Parameters
    ----------
    model
        Estimator with ``fit`` and ``transform``; it is fitted in place.
    X
        ``(n, features)`` data, dense or sparse.
    labels
        ``(n,)`` class labels.
    holdout, n_holdout
        Which classes to hold out, or how many to draw (see :func:`holdout_classes`).
    feature_names
        Column names of ``X``.
    space
        Classify in the map (``"embedding"``), the network's latent space (``"latent"``) or
        the model's input features (``"input"``, the baseline a learnt space should beat).
    layer
        With ``space="latent"``: classify on the output of this block of the network (see
        :func:`embed_with`).
    n_way, k_shot, n_query, n_episodes
        Episode settings (see :func:`one_shot_accuracy`); ``n_way`` defaults to all held-out
        classes.
    random_state
        Seed of the class draw and the episodes (the model keeps its own ``random_state``).

    Returns
    -------
    The :func:`one_shot_accuracy` result plus ``held_out`` (class names), ``embedding`` (of
    the held-out samples), ``labels`` (theirs) and the fitted ``model``.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat(np.arange(6), 40)
    >>> x = (rng.normal(size=(6, 20)) * 6)[y] + rng.normal(size=(240, 20))
    >>> res = mx.metrics.holdout_one_shot(
    ...     mx.models.DLME(n_steps=30, progress=False, device="cpu"), x.astype("float32"), y,
    ...     holdout=[4, 5], n_episodes=20)
    >>> res["held_out"], res["n_way"]
    (['4', '5'], 2)
    """
    if not hasattr(model, "fit"):
        raise TypeError(f"`model` must be an estimator with `fit`, got {type(model).__name__}.")
    lab = np.asarray(pd.Series(np.asarray(labels)).astype(str))
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if lab.shape != (n,):
        raise ValueError(f"`labels` must have {n} entries, got {lab.shape[0]}.")
    train, held = holdout_classes(lab, holdout=holdout, n_holdout=n_holdout, random_state=random_state)
    fit_kwargs = {"feature_names": feature_names} if feature_names is not None else {}
    model.fit(X[np.flatnonzero(train)], **fit_kwargs)
    test = np.flatnonzero(~train)
    emb = embed_with(model, X[test], feature_names=feature_names, space=space, layer=layer)
    res = one_shot_accuracy(
        emb,
        lab[test],
        n_way=n_way,
        k_shot=k_shot,
        n_query=n_query,
        n_episodes=n_episodes,
        random_state=random_state,
    )
    res.update(held_out=held, embedding=emb, labels=lab[test], model=model)
    return res
