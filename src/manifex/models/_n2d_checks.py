"""N2D's parameter and data-size checks (run before any work)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import as_tuple, check_common, check_dims, check_int, check_positive

__all__ = ["PLACEMENTS", "check_n_cells", "check_params", "min_cells"]

#: How cells outside ``umap_subsample`` are placed on the fitted UMAPs.
PLACEMENTS = ("auto", "nearest", "transform")


def check_params(model: Any, presets: dict[str, Any]) -> None:
    """Raise a TypeError / ValueError naming the first bad parameter of an N2D ``model``."""
    for name, lo in (("n_neighbors", 2), ("gmm_n_init", 1), ("batch_size", 2), ("patience", 1)):
        check_int(model, name, lo)
    for name, lo in (
        ("n_clusters", 1),
        ("n_latent", 1),
        ("manifold_dim", 1),
        ("n_epochs", 1),
        ("n_steps", 1),
    ):
        check_int(model, name, lo, allow_none=True)
    check_int(model, "checkpoint_every", 1)
    check_int(model, "umap_subsample", 100, allow_none=True)
    if not (isinstance(model.validation_fraction, int | float) and 0 < model.validation_fraction < 0.5):
        raise ValueError(f"`validation_fraction` must be in (0, 0.5), got {model.validation_fraction!r}.")
    check_dims(model, "hidden_dims")
    k_range = as_tuple(model.k_range)
    if (
        k_range is None
        or len(k_range) != 2
        or not all(isinstance(k, int | np.integer) for k in k_range)
        or not 2 <= k_range[0] <= k_range[1]
    ):
        raise ValueError(f"`k_range` must be (k_min, k_max) with 2 ≤ k_min ≤ k_max, got {model.k_range!r}.")
    check_positive(model, "min_dist", allow_zero=True)
    check_positive(model, "gmm_reg_covar", allow_zero=True)
    check_positive(model, "lr")
    if model.preset not in presets:
        raise ValueError(f"`preset` must be one of {sorted(presets)}, got {model.preset!r}.")
    if model.placement not in PLACEMENTS:
        raise ValueError(f"`placement` must be one of {list(PLACEMENTS)}, got {model.placement!r}.")
    if model.placement == "nearest" and model.metric != "euclidean":
        raise ValueError(
            f"`placement`='nearest' searches Euclidean neighbours and `metric` is {model.metric!r}; "
            "use placement='transform' or 'auto'."
        )
    if not isinstance(model.map_2d, bool | np.bool_):
        raise TypeError(f"`map_2d` must be True or False, got {model.map_2d!r}.")
    check_common(model)


def min_cells(model: Any) -> int:
    """Fewest cells an N2D ``model`` fits."""
    k = model.n_clusters if model.n_clusters is not None else model.k_range[0]
    return max(model.n_neighbors + 1, k + 1)


def check_n_cells(model: Any, n: int) -> None:
    """Raise a ValueError when ``n`` cells are too few for ``model``'s clusters or UMAP."""
    if model.n_clusters is not None and n < model.n_clusters:
        raise ValueError(
            f"The data has {n} sample(s) (cells), fewer than `n_clusters`={model.n_clusters}; "
            "ask for fewer clusters or use more cells."
        )
    if n <= model.n_neighbors:
        raise ValueError(
            f"The data has {n} sample(s) (cells); UMAP with `n_neighbors`={model.n_neighbors} needs more than that."
        )
    if n < min_cells(model):
        raise ValueError(f"The data has {n} sample(s) (cells); at least {min_cells(model)} are needed.")
