"""One-shot / few-shot classification of classes a model never saw (Dikkala et al., 2021).

:func:`one_shot_accuracy` scores an embedding by N-way k-shot episodes of nearest-prototype
classification; :func:`holdout_classes` and :func:`holdout_one_shot` run the hold-out protocol:
fit on some classes, embed the others with ``model.transform``, score them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._utils import check_random_state
from ..models._contract import Space, check_model, check_space, model_transform
from ._classify import nearest_prototype

__all__ = ["holdout_classes", "holdout_one_shot", "one_shot_accuracy"]


def _str_labels(labels: Any, n: int | None = None) -> np.ndarray:
    """Labels as strings; missing labels (NaN, None) are refused rather than becoming a class."""
    if labels is None:
        raise ValueError("`labels` must be given.")
    ser = pd.Series(
        np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series) else labels.to_numpy()
    )
    if ser.ndim != 1 or (n is not None and ser.shape[0] != n):
        raise ValueError(f"`labels` must have {n} entries, got {np.shape(labels)}.")
    missing = int(ser.isna().sum())
    if missing:
        raise ValueError(f"`labels` has {missing} missing value(s) (NaN / None); drop those samples first.")
    return np.asarray(ser.astype(str))


def _check_episodes(n_way: Any, k_shot: Any, n_query: Any, n_episodes: Any) -> None:
    def positive(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, int | np.integer) and v >= 1

    if not positive(k_shot):
        raise ValueError(f"`k_shot` must be a positive integer, got {k_shot!r}.")
    if n_query is not None and not positive(n_query):
        raise ValueError(f"`n_query` must be a positive integer or None, got {n_query!r}.")
    if not positive(n_episodes):
        raise ValueError(f"`n_episodes` must be a positive integer, got {n_episodes!r}.")
    if n_way is not None and (not positive(n_way) or n_way < 2):
        raise ValueError(f"`n_way` must be an integer ≥ 2 or None, got {n_way!r}.")


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

    emb = np.asarray(embedding, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"`embedding` must be 2-dimensional, got shape {emb.shape}.")
    if not np.isfinite(emb).all():
        raise ValueError("`embedding` contains NaN or infinite values.")
    lab = _str_labels(labels, emb.shape[0])
    _check_episodes(n_way, k_shot, n_query, n_episodes)
    rng = np.random.default_rng(check_random_state(random_state))
    classes, counts = np.unique(lab, return_counts=True)
    eligible = classes[counts >= k_shot + 1]
    if n_way is None:
        n_way = len(eligible)
        if n_way < 2:
            raise ValueError(
                f"Episodes need at least 2 classes with {k_shot + 1} or more samples; "
                f"{n_way} have that many ({list(eligible)})."
            )
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
        qi, ql = np.concatenate(q_idx), np.concatenate(q_lab)
        pred, _, _ = nearest_prototype(emb[qi], np.stack(protos))
        accs[e] = float((pred == ql).mean())
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

    lab = _str_labels(labels)
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
    block: int | None = None,
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
    block
        With ``space="latent"``: classify on the output of this block of the network (0-based;
        see the model's ``transform``).
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
    if not callable(getattr(model, "fit", None)) or not callable(getattr(model, "transform", None)):
        raise TypeError(
            f"`model` must be an estimator with `fit` and `transform`, got {type(model).__name__}."
        )
    check_space(space, block)
    _check_episodes(n_way, k_shot, n_query, n_episodes)
    if not hasattr(X, "shape") or len(X.shape) < 2:
        raise TypeError(
            f"`X` must be an array or sparse matrix of shape (n, features), got {type(X).__name__}."
        )
    n = X.shape[0]
    lab = _str_labels(labels, n)
    train, held = holdout_classes(lab, holdout=holdout, n_holdout=n_holdout, random_state=random_state)
    fit_kwargs = {"feature_names": feature_names} if feature_names is not None else {}
    model.fit(X[np.flatnonzero(train)], **fit_kwargs)
    check_model(model)
    test = np.flatnonzero(~train)
    emb = model_transform(model, X[test], feature_names=feature_names, space=space, block=block)
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
