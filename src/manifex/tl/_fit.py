"""The shared body of the ``tl`` fitting functions (``dlme``, ``tsimcne``, ``n2d``).

:func:`fit_embedding` runs four steps: validate everything before any work
(:func:`validate`: the AnnData, the model's parameters, the number of cells, the input chosen
once by :func:`~manifex.tl._input.choose_input`, the key the results go to); prepare the input
(:func:`prepare`: read it, warn when it looks like raw counts); fit the model, with the input
recorded on it; record the results in ``obsm`` / ``obs`` / ``uns`` (:func:`record`), so that a
failure leaves ``adata`` untouched.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

from anndata import AnnData
from scanpy import logging as logg

from .._anndata import Slot, check_adata, check_flags, check_key_added, copy_of, plain
from ..io import InputSpec
from ._input import choose_input, read_input
from ._prepcheck import PreprocessingWarning, fit_problems

__all__ = ["MIN_CELLS", "check_n_cells", "fit_embedding"]

#: Fewest cells a ``tl`` fitting function accepts (the model may need more: ``n_neighbors`` + 1).
MIN_CELLS = 20
#: Frames between :func:`prepare`'s warning and the user's call of ``mx.tl.<method>``.
_STACKLEVEL = 4

Collect = Callable[[Any, str], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]


def check_n_cells(adata: AnnData, model: Any, *, minimum: int = MIN_CELLS, neighbors: bool = True) -> None:
    """The one minimum-cells rule of the fitting functions: at least ``minimum`` cells, at least
    ``n_clusters`` (a model that has them), more than the model's ``n_neighbors`` (its kNN graph
    or UMAP; unless ``neighbors`` is false, as for t-SimCNE on images) and the model's own
    ``_min_rows()`` (N2D's counts its clusters). The message names the parameter that sets the minimum."""
    n, method = adata.n_obs, type(model).__name__
    k = getattr(model, "n_clusters", None)
    if k is not None and n < k:
        raise ValueError(
            f"`adata` has {n} cells, fewer than `n_clusters`={k}; ask for fewer clusters or use more cells."
        )
    nn = getattr(model, "n_neighbors", None) if neighbors else None
    need = max(minimum, int(nn) + 1 if nn is not None else 0)
    if neighbors and callable(getattr(model, "_min_rows", None)):
        need = max(need, int(model._min_rows()))
    if n >= need:
        return
    if nn is not None and n <= nn and need == nn + 1:
        raise ValueError(
            f"`adata` has {n} cells; {method} with `n_neighbors`={nn} needs more than {nn} (at least "
            f"{need}): lower `n_neighbors` or use more cells."
        )
    raise ValueError(f"`adata` has {n} cells; {method} needs at least {need}.")


def validate(
    adata: AnnData,
    model: Any,
    *,
    method: str,
    use_rep: str | None,
    layer: str | None,
    key_added: str | None,
    flags: dict[str, Any],
    min_cells: int,
    auto_pca: bool,
    given_spec: InputSpec | None,
    extra_writes: Callable[[str], list[Slot]] | None,
) -> tuple[InputSpec, str]:
    """Every check that needs no training, in order; returns the input spec and the result key."""
    check_adata(adata, need_vars=given_spec is None)
    check_flags(**flags)
    model._validate_params()
    check_n_cells(adata, model, minimum=min_cells, neighbors=given_spec is None)
    spec = (
        choose_input(adata, use_rep=use_rep, layer=layer, auto_pca=auto_pca)
        if given_spec is None
        else given_spec
    )

    def writes(k: str) -> list[Slot]:
        return [("obsm", f"X_{k}"), ("uns", k), *(extra_writes(k) if extra_writes is not None else [])]

    key = check_key_added(
        adata, key_added, default=method, writes=writes, inputs=spec.slots(), function=method
    )
    return spec, key


def prepare(adata: AnnData, spec: InputSpec, *, method: str, random_state: int) -> tuple[Any, Any, InputSpec]:
    """Read the chosen input; warn (:class:`PreprocessingWarning`) when its genes look like raw
    counts, the check :func:`manifex.tl.embed` applies to a query."""
    x, feature_names, spec = read_input(adata, spec, random_state=random_state)
    if spec.genes is not None:
        where = f"adata.layers[{spec.key!r}]" if spec.source == "layer" else "adata.X"
        for problem in fit_problems(spec.genes, where=where, method=method, pca=spec.source == "pca"):
            warnings.warn(problem, PreprocessingWarning, stacklevel=_STACKLEVEL)
    return x, feature_names, spec


def record(
    adata: AnnData,
    model: Any,
    spec: InputSpec,
    key: str,
    seconds: float,
    *,
    copy: bool,
    collect: Collect | None,
) -> AnnData | None:
    """Write ``obsm["X_<key>"]``, ``uns[key]`` and what ``collect(model, key)`` adds; returns the
    AnnData written (a copy with ``copy``)."""
    obsm: dict[str, Any] = {f"X_{key}": model.embedding_}
    obs: dict[str, Any] = {}
    uns_extra: dict[str, Any] = {}
    if collect is not None:
        more_obsm, obs, uns_extra = collect(model, key)
        obsm.update(more_obsm)
    history = getattr(model, "history_", None) or {}
    uns = {
        "params": plain({k: v for k, v in model.get_params(deep=False).items() if k not in {"progress"}}),
        "input": spec.to_uns(),
        "loss": history.get("loss"),
        "n_steps": history.get("n_steps"),
        "device": str(model.device_),
        "seconds": float(seconds),
        "timings": getattr(model, "timings_", None),
        # the kNN graph of the augmentations: backend, time and sampled recall against exact kNN
        "knn": getattr(model, "knn_info_", None),
        **uns_extra,
    }
    logg.info(
        f"    finished {spec.method} in {seconds:.1f}s on {model.device_}: added obsm[{f'X_{key}'!r}], uns[{key!r}]"
    )
    target = copy_of(adata) if copy else adata
    for k, v in obsm.items():
        target.obsm[k] = v
    for k, v in obs.items():
        target.obs[k] = v
    target.uns[key] = plain(uns)
    return target


def fit_embedding(
    adata: AnnData,
    model: Any,
    *,
    method: str,
    use_rep: str | None,
    layer: str | None,
    key_added: str | None,
    random_state: int,
    return_model: bool,
    copy: bool,
    min_cells: int = MIN_CELLS,
    collect: Collect | None = None,
    extra_writes: Callable[[str], list[Slot]] | None = None,
    auto_pca: bool = True,
    given_input: tuple[Any, Any, InputSpec] | None = None,
):
    """Fit ``model`` on ``adata`` and write its results (validate, prepare, fit, record).

    The input is chosen by :func:`~manifex.tl._input.choose_input` (``auto_pca=False`` trains on
    ``X`` itself when there is no ``X_pca``), or given as ``given_input`` ``(x, feature_names,
    spec)`` (t-SimCNE's images); ``random_state`` seeds a PCA computed here. ``collect(model,
    key) -> (obsm, obs, uns)`` adds method-specific outputs, whose entries ``extra_writes(key)``
    lists in advance. Returns, by ``copy`` and ``return_model``: ``None``, the AnnData copy, the
    model, or both.
    """
    spec, key = validate(
        adata,
        model,
        method=method,
        use_rep=use_rep,
        layer=layer,
        key_added=key_added,
        flags={"copy": copy, "return_model": return_model},
        min_cells=min_cells,
        auto_pca=auto_pca,
        given_spec=given_input[2] if given_input is not None else None,
        extra_writes=extra_writes,
    )
    if given_input is None:
        x, feature_names, spec = prepare(adata, spec, method=method, random_state=random_state)
    else:
        x, feature_names, _ = given_input
    spec = spec.replace(key_added=key, method=method)
    t0 = time.perf_counter()
    model.fit(x, feature_names=feature_names, input_spec=spec)
    target = record(adata, model, spec, key, time.perf_counter() - t0, copy=copy, collect=collect)
    if copy and return_model:
        return target, model
    if copy:
        return target
    return model if return_model else None
