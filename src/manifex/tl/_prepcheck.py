"""Is a query preprocessed like the data a model was trained on?

Two levels of evidence, both cheap:

* **genes** (when the model input is built from genes): a *signature* of the expression values --
  range, whether they are integers (raw counts), centred (``sc.pp.scale``), clipped at a
  ``max_value``, and the mean total per cell (after ``expm1`` for log data, which recovers the
  ``normalize_total`` target). The training signature is recorded by the ``tl`` functions in
  ``model.input_spec_["genes"]``; with a ``reference`` it is measured on the reference itself;
  for a model fitted on a named array it is read from the model's per-feature means.
* **model input**: the per-feature mean and standard deviation of the prepared query against
  ``model.feature_mean_`` / ``model.feature_std_``.

At fit time the same gene signature tells when a ``tl`` function is about to train on raw
counts (:func:`fit_problems`), which it warns about with a :class:`PreprocessingWarning`.

The limits tolerate a query of a single cell type (its spread is smaller, its mean offset and
its totals up to about 1.5× the reference's on our data) and of cell types the reference lacks
(large z-scores after scaling), but not data on another scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..train._data import BackedMatrix

__all__ = [
    "PreprocessingWarning",
    "fit_problems",
    "gene_signature",
    "preprocessing_problems",
    "signature_from_model",
]


class PreprocessingWarning(UserWarning):
    """Data that does not look preprocessed as a method expects (raw counts given to
    ``mx.tl.dlme``, ``mx.tl.tsimcne`` or ``mx.tl.n2d``), or a query prepared otherwise than its
    reference (:func:`manifex.tl.embed` with ``check_preprocessing="warn"``).

    Examples
    --------
    >>> import warnings, numpy as np, anndata as ad, manifex as mx
    >>> counts = np.random.default_rng(0).poisson(30.0, size=(60, 20)).astype("float32")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     mx.tl.dlme(ad.AnnData(counts), n_steps=5, progress=False)
    >>> [w.category.__name__ for w in caught if issubclass(w.category, mx.tl.PreprocessingWarning)]
    ['PreprocessingWarning']
    """


#: Median ratio of per-feature standard deviations (query / training) allowed, and its inverse.
SCALE_RATIO_LIMIT = 10.0
#: Median absolute mean difference allowed, in training standard deviations.
MEAN_SHIFT_LIMIT = 5.0
#: Non-negative integers up to at least this are raw counts.
COUNT_MAX_MIN = 20.0
#: Ratio of mean totals per cell (query / training, after expm1 for log data) allowed, and its inverse.
TOTAL_RATIO_LIMIT = 4.0
#: Ratio of mean sums of log values per cell allowed (query / the reference's ``var["mean"]``), when
#: the reference was scaled and its totals after expm1 are not known: on pbmc68k_reduced a single
#: cell type's sum over the highly variable genes is 0.76-1.16× the mean; 1e6 against 1e4 is 2.7-3.4×.
LOG_SUM_RATIO_LIMIT = 2.0
#: Largest value of data read as log-transformed (log1p of counts normalised to 1e4 stays below 12).
LOG_MAX = 30.0
#: Rows and values a signature is computed on (a fixed sample beyond).
MAX_ROWS = 2000
MAX_VALUES = 200_000


def _dense_rows(x: Any, max_rows: int) -> np.ndarray | sp.csr_matrix:
    rows = np.arange(x.shape[0])
    if x.shape[0] > max_rows:
        rows = np.sort(np.random.default_rng(0).choice(x.shape[0], max_rows, replace=False))
    if isinstance(x, BackedMatrix):  # a backed matrix: only the sampled rows are read
        return x.read(rows)
    if x.shape[0] > max_rows:
        x = x[rows]
    return sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)


def col_stats(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (float64), sparse-aware; one pass over a backed
    matrix."""
    if isinstance(x, BackedMatrix):
        mean, var, _ = x.stats()
        return mean.astype(np.float64), np.sqrt(var.astype(np.float64))
    if sp.issparse(x):
        mean = np.asarray(x.mean(0)).ravel()
        var = np.maximum(np.asarray(x.multiply(x).mean(0)).ravel() - mean**2, 0.0)
    else:
        mean, var = x.mean(0, dtype=np.float64), x.var(0, dtype=np.float64)
    return mean.astype(np.float64), np.sqrt(var).astype(np.float64)


def _is_centred(mean: np.ndarray, std: np.ndarray) -> bool:
    ok = std > 0
    return bool(ok.any() and np.median(np.abs(mean[ok]) / std[ok]) < 0.05)


def gene_signature(x: np.ndarray | sp.spmatrix) -> dict[str, Any]:
    """A few numbers that tell how an expression matrix was preprocessed (plain types only).

    ``min``, ``max``, ``integer`` (every value whole), ``centred`` (per-gene means ≈ 0 relative
    to their spread: scaled), ``clip`` (the largest absolute value when it is a round number that
    several entries sit exactly on, in centred data: ``sc.pp.scale(max_value=...)``), ``total`` (mean sum per cell)
    and ``log_total`` (mean sum per cell after ``expm1``, for non-negative, non-integer data below
    :data:`LOG_MAX`, else ``None``).

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.tl._prepcheck import gene_signature
    >>> counts = np.random.default_rng(0).poisson(5.0, size=(50, 10)).astype("float32")
    >>> sig = gene_signature(counts)
    >>> sig["integer"], sig["centred"], round(sig["total"] / 50)
    (True, False, 1)
    """
    xs = _dense_rows(x, MAX_ROWS)
    vals = xs.data if sp.issparse(xs) else xs.ravel()
    has_zero = sp.issparse(xs) and xs.nnz < xs.shape[0] * xs.shape[1]
    if vals.size > MAX_VALUES:
        vals = vals[np.random.default_rng(0).choice(vals.size, MAX_VALUES, replace=False)]
    lo = float(vals.min()) if vals.size else 0.0
    hi = float(vals.max()) if vals.size else 0.0
    if has_zero or not vals.size:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    integer = bool(np.all(np.equal(np.mod(vals, 1), 0)))
    mean, std = col_stats(xs)
    centred = lo < 0 and _is_centred(mean, std)
    clip = None
    if centred and vals.size:
        # a clip bound is a round number (max_value=10) that several entries sit exactly on;
        # ties of unclipped z-scores (genes seen in one cell: √(n − 1)) are rarely round
        top = max(abs(lo), abs(hi))
        if int(np.sum(np.abs(vals) == top)) >= 3 and abs(top * 10 - round(top * 10)) < 1e-3:
            clip = float(round(top, 1))
    log_total = None
    if lo >= 0 and not integer and hi <= LOG_MAX:
        ex = xs.expm1() if sp.issparse(xs) else np.expm1(xs.astype(np.float64))
        log_total = float(np.asarray(ex.sum(1)).mean())
    return {
        "min": lo,
        "max": hi,
        "integer": integer,
        "centred": bool(centred),
        "clip": clip,
        "total": float(mean.sum()),
        "log_total": log_total,
        "n_genes": int(x.shape[1]),
    }


def signature_from_model(model: Any) -> dict[str, Any] | None:
    """What the per-feature means and standard deviations of a gene-level model tell: centred or
    not, and the mean total per cell (nothing about integers, ranges or logs)."""
    mean, std = getattr(model, "feature_mean_", None), getattr(model, "feature_std_", None)
    if mean is None or std is None:
        return None
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    centred = bool(np.any(mean < 0) or _is_centred(mean, std))
    return {"centred": centred, "total": None if centred else float(mean.sum()), "partial": True}


def _counts(sig: dict[str, Any]) -> bool:
    return bool(sig.get("integer")) and sig.get("min", -1) >= 0 and sig.get("max", 0) >= COUNT_MAX_MIN


def fit_problems(sig: dict[str, Any], *, where: str, method: str, pca: bool) -> list[str]:
    """What the gene signature ``sig`` of a training input says against training on it: raw
    counts (non-negative integers up to at least :data:`COUNT_MAX_MIN`). ``where`` names the
    input (``"adata.X"``), ``method`` the method and ``pca`` whether a PCA of it would be its input.

    Examples
    --------
    >>> import numpy as np
    >>> from manifex.tl._prepcheck import fit_problems, gene_signature
    >>> counts = np.random.default_rng(0).poisson(30.0, size=(50, 10)).astype("float32")
    >>> len(fit_problems(gene_signature(counts), where="adata.X", method="dlme", pca=False))
    1
    >>> fit_problems(gene_signature(np.log1p(counts)), where="adata.X", method="dlme", pca=False)
    []
    """
    if not _counts(sig):
        return []
    through = " through a PCA of them" if pca else ""
    return [
        f"{where} looks like raw counts (non-negative integers up to {sig['max']:.0f}): {method} would "
        f"train on them{through}, where a few highly expressed genes and the cells' sequencing depth "
        "dominate. Run sc.pp.normalize_total and sc.pp.log1p first (then usually "
        "sc.pp.highly_variable_genes and sc.pp.pca), or pass `use_rep` / `layer` naming normalised data."
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not a > 0 or not b > 0:
        return None
    return float(a / b)


def gene_problems(q: dict[str, Any], ref: dict[str, Any], *, where: str) -> list[str]:
    """Differences between the query's gene signature ``q`` and the training one ``ref``.

    ``where`` names the source of ``ref`` in messages (``"the reference"``, ``"the training
    data"``). A partial ``ref`` (from the model's means) only knows ``centred`` and ``total``.
    """
    out: list[str] = []
    partial = bool(ref.get("partial"))
    q_counts = _counts(q)
    ref_counts = not partial and bool(ref.get("integer")) and ref.get("min", -1) >= 0
    if q_counts and not ref_counts and (not partial or ref.get("centred")):
        out.append(
            f"the query's genes look like raw counts (non-negative integers up to {q['max']:.0f}) but "
            f"{where}'s are not: run sc.pp.normalize_total and sc.pp.log1p on the query as for {where}"
        )
    elif ref_counts and not q["integer"]:
        out.append(
            f"{where} holds raw counts (non-negative integers) but the query's genes are not integers "
            "(normalised / log-transformed?): give the query's raw counts, like the training data"
        )
    elif ref.get("centred") and not q["centred"] and q["min"] >= 0:
        out.append(
            f"{where}'s genes were centred / scaled (sc.pp.scale) but the query's are all ≥ 0: scale the "
            "query like the reference (`reference=` with `scale_query=True`)"
        )
    elif not ref.get("centred") and q["centred"]:
        out.append(
            f"the query's genes are centred / scaled (they have negative values) but {where}'s are not: "
            "embed the query before sc.pp.scale"
        )
    if out or ref.get("centred"):
        return out
    r = _ratio(q.get("log_total"), ref.get("log_total"))
    how = " after expm1"
    if r is None:
        r, how = _ratio(q.get("total"), ref.get("total")), ""
    if r is not None and not 1 / TOTAL_RATIO_LIMIT <= r <= TOTAL_RATIO_LIMIT:
        counts = " (the query looks like raw counts)" if q_counts else ""
        out.append(
            f"a query cell's genes sum to {r:.3g}× those of {where}{how} on average (allowed "
            f"1/{TOTAL_RATIO_LIMIT:g} to {TOTAL_RATIO_LIMIT:g}){counts}: normalised to another total? Use "
            f"the same sc.pp.normalize_total(target_sum=...) and sc.pp.log1p as for {where}"
        )
    elif not partial and ref.get("max", 0) > 0 and q["max"] > 10 * ref["max"] and not q_counts:
        out.append(
            f"the query's largest value ({q['max']:.3g}) is over 10× {where}'s ({ref['max']:.3g}): "
            f"is the query log-transformed like {where}?"
        )
    return out


def clip_problem(q: dict[str, Any], clip: float | None, *, where: str, fix: str) -> str | None:
    """A scaled query whose values go beyond the ``max_value`` the training genes were clipped at."""
    if clip is None or (not q["centred"] and q["min"] >= 0):
        return None
    reach = max(q["max"], -q["min"])
    if reach <= clip * (1 + 1e-6):
        return None
    return (
        f"{where}'s scaled values stop at ±{clip:g}, as sc.pp.scale(max_value={clip:g}) leaves them, but "
        f"the query's reach {reach:.3g}: {fix}"
    )


def unscaled_problems(xg: Any, ref_total: float) -> list[str]:
    """The query's genes before ``scale_query`` scaled them, against the sum of the reference's
    ``var["mean"]`` (what ``sc.pp.scale`` recorded: the mean of each gene before scaling)."""
    q = gene_signature(xg)
    if _counts(q):
        return [
            f"the query's genes look like raw counts (non-negative integers up to {q['max']:.0f}): run "
            "sc.pp.normalize_total and sc.pp.log1p on the query as for the reference before scaling"
        ]
    if q["centred"]:
        return [
            "the query's genes are already centred / scaled, and `scale_query=True` scales them again "
            "with the reference's statistics: pass the query's log data, before sc.pp.scale"
        ]
    if q["log_total"] is None or not ref_total > 0:
        return []
    r = q["total"] / ref_total
    if 1 / LOG_SUM_RATIO_LIMIT <= r <= LOG_SUM_RATIO_LIMIT:
        return []
    return [
        f"a query cell's log values sum to {r:.3g}× the reference's before scaling (its var['mean'], "
        f"allowed 1/{LOG_SUM_RATIO_LIMIT:g} to {LOG_SUM_RATIO_LIMIT:g}): normalised to another total? Use "
        "the same sc.pp.normalize_total(target_sum=...) and sc.pp.log1p as for the reference"
    ]


def input_problems(x: Any, model: Any) -> tuple[list[str], dict[str, float]]:
    """The prepared model input ``x`` against the model's per-feature means and spreads."""
    problems: list[str] = []
    stats: dict[str, float] = {}
    f_mean, f_std = getattr(model, "feature_mean_", None), getattr(model, "feature_std_", None)
    if x is None or f_mean is None or f_std is None or x.shape[1] != len(f_std):
        return problems, stats
    qm, qs = col_stats(x)
    f_mean, f_std = np.asarray(f_mean, np.float64), np.asarray(f_std, np.float64)
    ok = f_std > 1e-8 * max(float(f_std.max()), 1e-30)
    if not ok.any():
        return problems, stats
    shift = float(np.median(np.abs(qm[ok] - f_mean[ok]) / f_std[ok]))
    stats["mean_shift"] = shift
    if shift > MEAN_SHIFT_LIMIT:
        problems.append(
            f"the query's features are offset by a median {shift:.3g} reference standard deviations "
            f"from the training data (limit {MEAN_SHIFT_LIMIT:g})"
        )
    if x.shape[0] >= 2:
        pos = ok & (qs > 0)
        if pos.any():
            ratio = float(np.exp(np.median(np.log(qs[pos] / f_std[pos]))))
            stats["scale_ratio"] = ratio
            if not 1 / SCALE_RATIO_LIMIT <= ratio <= SCALE_RATIO_LIMIT:
                problems.append(
                    f"the query's features vary {ratio:.3g}× as much as the training data's (median "
                    f"ratio of standard deviations; allowed 1/{SCALE_RATIO_LIMIT:g} to "
                    f"{SCALE_RATIO_LIMIT:g}): another normalisation or scale?"
                )
    return problems, stats


def _reference_signature(prep: dict[str, Any], model: Any) -> dict[str, Any] | None:
    """The signature of the training genes: measured on ``prep["gene_ref"]`` when it is a
    matrix, recorded (a dict), or from the model's means (``prep["gene_ref_model"]``)."""
    ref = prep.get("gene_ref")
    if ref is not None and not isinstance(ref, dict):
        return gene_signature(ref)
    if ref is None and prep.get("gene_ref_model"):
        return signature_from_model(model)
    return ref


def _reference_clip(ref: dict[str, Any] | None, clip_from: str | None) -> tuple[float | None, str]:
    """The bound the reference's scaled genes were clipped at, when the query must stay within it
    (``clip_from``: ``"unscaled"``, a query not scaled by manifex; ``"max_value"``, one scaled
    like the reference without ``max_value``), and the fix to name."""
    clip = ref.get("clip") if ref is not None and clip_from is not None else None
    if clip is None:
        return None, ""
    if clip_from == "unscaled":
        return clip, (
            "scale the query with the reference's statistics and clipping (`reference=` with "
            f"`scale_query=True, max_value={clip:g}`)"
        )
    return clip, f"pass `max_value={clip:g}`"


def preprocessing_problems(prep: dict[str, Any], model: Any) -> tuple[list[str], dict[str, Any]]:
    """All problems found for a prepared query (see :func:`manifex.tl.embed`) and the statistics.

    ``prep`` (from :func:`manifex.tl._query.prepare_query`) holds ``gene_q`` (the query's genes
    as the model input is built from them, or ``None``), ``gene_ref`` (the training genes: the
    reference's as a matrix, or a recorded signature; or ``None``), ``gene_ref_model`` (take the
    signature from the model's means), ``gene_ref_from`` (its name in messages), ``unscaled``
    (the query's genes before ``scale_query`` and the sum of the reference's ``var["mean"]``),
    ``clip_from`` (which clipping of the reference applies: :func:`_reference_clip`) and
    ``model_input``.
    """
    problems: list[str] = []
    stats: dict[str, Any] = {}
    if prep.get("gene_q") is not None:
        q = gene_signature(prep["gene_q"])
        stats.update(query_min=q["min"], query_max=q["max"])
        if q["log_total"] is not None:
            stats["query_log_total"] = q["log_total"]
        where = prep.get("gene_ref_from", "the training data")
        ref = _reference_signature(prep, model)
        if ref is not None:
            problems += gene_problems(q, ref, where=where)
        if prep.get("unscaled") is not None:
            problems += unscaled_problems(*prep["unscaled"])
        clip_value, fix = _reference_clip(ref, prep.get("clip_from"))
        clip = clip_problem(q, clip_value, where=where, fix=fix)
        if clip is not None:
            problems.append(clip)
    more, s = input_problems(prep.get("model_input"), model)
    stats.update(s)
    return problems + more, stats
