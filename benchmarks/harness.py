"""Shared benchmark harness: baselines, timing, scoring, tables and figures.

Every benchmark script (``python -m benchmarks.<name>``) uses these helpers so methods and
baselines are scored by the same protocol (:func:`manifex.metrics.evaluate_embedding`) in the
same run, on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
METRIC_COLS = ["knn_acc", "linear_acc", "acc", "nmi", "ari", "trust", "mean"]


def data_dir() -> str:
    """``$MANIFEX_DATA_DIR``, else ``../shared/data`` next to the repository."""
    env = os.environ.get("MANIFEX_DATA_DIR")
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / "shared" / "data")


def machine() -> str:
    """A one-line description of the machine and device used."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU"
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, device {dev}"


def git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        return "unknown"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_json(argv: Sequence[str]) -> dict[str, Any]:
    """Run ``python argv...`` in a fresh process and return the JSON object on its last stdout
    line; a failing child raises with the end of its stderr."""
    import json
    import sys

    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, check=False, env=os.environ)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def knn_indices(x: Any, k: int, *, random_state: int = 0, exact_max: int = 10_000) -> np.ndarray:
    """Each row's ``k`` nearest other rows (Euclidean), as the studies measured them.

    scikit-learn's exact brute-force search up to ``exact_max`` rows, pynndescent above (the
    search manifex used when those reports were written); each row's own index is removed.
    """
    n = x.shape[0]
    if n <= exact_max:
        from sklearn.neighbors import NearestNeighbors

        ind = (
            NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x, return_distance=False)
        )
    else:
        from pynndescent import NNDescent

        ind = NNDescent(x, n_neighbors=k + 1, metric="euclidean", random_state=random_state, n_jobs=-1)
        ind = ind.neighbor_graph[0]
    is_self = ind == np.arange(n)[:, None]
    is_self[~is_self.any(axis=1), -1] = True  # exact duplicates may hide a row's own index: drop the last
    return np.ascontiguousarray(ind[~is_self].reshape(n, -1)[:, :k], dtype=np.int64)


def umap_baseline(adata, *, use_rep: str = "X_pca", n_neighbors: int = 15, random_state: int = 0):
    """scanpy's ``neighbors`` + ``umap`` on a copy. Returns (embedding, seconds)."""
    import scanpy as sc

    a = adata.copy()

    def run():
        sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep=use_rep, random_state=random_state)
        sc.tl.umap(a, random_state=random_state)
        return a.obsm["X_umap"]

    return timed(run)


def tsne_baseline(adata, *, use_rep: str = "X_pca", random_state: int = 0, n_jobs: int | None = None):
    """scanpy's ``tl.tsne`` with ``n_jobs`` threads (default: every core). Returns (embedding, seconds)."""
    import scanpy as sc

    a = adata.copy()

    def run():
        sc.tl.tsne(a, use_rep=use_rep, random_state=random_state, n_jobs=n_jobs or os.cpu_count())
        return a.obsm["X_tsne"]

    return timed(run)


def pca_baseline(x: np.ndarray, *, random_state: int = 0):
    """First two principal components. Returns (embedding, seconds)."""
    from sklearn.decomposition import PCA

    return timed(lambda: PCA(2, random_state=random_state).fit_transform(np.asarray(x)))


@contextlib.contextmanager
def _global_rng_kept():
    """Restore Python's, NumPy's and torch's global RNG states (and PYTHONHASHSEED) on exit.

    TorchDR's estimators seed every global generator when constructed with a ``random_state``;
    this keeps that from leaking into the methods run after them.
    """
    import random

    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()  # noqa: NPY002
    hashseed = os.environ.get("PYTHONHASHSEED")
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.random.set_rng_state(states[2])
        if hashseed is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = hashseed


def _check_seed(random_state: Any) -> int:
    """A seed as an int; None or a negative seed (from the clock in TorchDR and openTSNE) is refused."""
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(f"random_state must be an int, got {type(random_state).__name__}")
    if random_state < 0:
        raise ValueError(f"random_state must be >= 0, got {random_state}")
    return int(random_state)


def _torchdr_baseline(name: str, x: Any, random_state: int, device: str, kwargs: dict[str, Any]):
    random_state = _check_seed(random_state)
    try:
        import torchdr
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{name} needs TorchDR: pip install torchdr (or manifex[bench])") from e
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-d array (n_samples, n_features), got shape {x.shape}")
    params = dict(n_components=2, device=device, random_state=int(random_state), verbose=False)
    params.update(kwargs)

    def run():
        with _global_rng_kept():
            emb = getattr(torchdr, name)(**params).fit_transform(x)
        return np.asarray(emb.detach().cpu() if hasattr(emb, "detach") else emb, dtype=np.float32)

    return timed(run)


def torchdr_umap_baseline(x: Any, *, random_state: int, device: str = "cpu", **kwargs: Any):
    """TorchDR's ``UMAP`` with its defaults on ``x`` (e.g. ``X_pca``). Returns (embedding, seconds).

    TorchDR 0.5 defaults: ``n_neighbors=30``, ``max_iter=1000``, SGD at ``lr=1`` decaying
    linearly, PCA initialisation, faiss kNN search. ``x`` is cast to float32 (TorchDR computes
    in the input's dtype). ``kwargs`` go to ``torchdr.UMAP`` (e.g. ``max_iter``, ``n_neighbors``).
    The time covers constructing the estimator and ``fit_transform``; the global RNG states
    TorchDR seeds are restored afterwards.
    """
    return _torchdr_baseline("UMAP", x, random_state, device, kwargs)


def torchdr_infotsne_baseline(x: Any, *, random_state: int, device: str = "cpu", **kwargs: Any):
    """TorchDR's ``InfoTSNE`` with its defaults on ``x``. Returns (embedding, seconds).

    TorchDR 0.5 defaults: ``perplexity=30``, ``n_negatives=300``, ``max_iter=1000`` with 250
    early-exaggeration iterations (coefficient 12), ``lr="auto"``, PCA initialisation. As
    :func:`torchdr_umap_baseline` otherwise; ``kwargs`` go to ``torchdr.InfoTSNE``.
    """
    return _torchdr_baseline("InfoTSNE", x, random_state, device, kwargs)


def opentsne_baseline(x: Any, *, random_state: int, n_jobs: int | None = None, **kwargs: Any):
    """openTSNE's ``TSNE`` with its defaults on ``x`` (e.g. ``X_pca``). Returns (embedding, seconds).

    openTSNE 1.0 defaults: ``perplexity=30``, PCA initialisation, ``learning_rate="auto"`` (n over
    the exaggeration), 250 early-exaggeration iterations (coefficient 12) then 500 iterations,
    exact kNN search below 1,000 points and Annoy above, the Barnes-Hut gradient below 10,000
    points and the FFT-interpolated one above. ``n_jobs`` threads
    (default: every core); ``kwargs`` go to ``openTSNE.TSNE`` (e.g. ``n_iter``). The time covers
    constructing the estimator and ``fit``, not importing openTSNE (nor pynndescent, which openTSNE
    imports on its first fit to check it is installed: a numba compilation of tens of seconds).
    """
    random_state = _check_seed(random_state)
    try:
        import openTSNE
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("opentsne_baseline needs openTSNE: pip install openTSNE (or manifex[bench])") from e
    with contextlib.suppress(ImportError):
        import pynndescent  # noqa: F401
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise ValueError(f"x must be a 2-d array (n_samples, n_features), got shape {x.shape}")
    params = dict(n_components=2, random_state=random_state, n_jobs=n_jobs or os.cpu_count(), verbose=False)
    params.update(kwargs)
    return timed(lambda: np.array(openTSNE.TSNE(**params).fit(x), dtype=np.float64))


def opentsne_version() -> str:
    """openTSNE's version, or ``"not installed"``."""
    try:
        import openTSNE
    except ImportError:
        return "not installed"
    return str(openTSNE.__version__)


def torchdr_version() -> str:
    """TorchDR's version, or ``"not installed"``."""
    try:
        import torchdr
    except ImportError:
        return "not installed"
    return str(torchdr.__version__)


def thread_counts() -> dict[str, Any]:
    """Threads the methods run with: torch intra-op, numba, and the environment variables behind them."""
    import torch

    out: dict[str, Any] = {"torch": torch.get_num_threads()}
    try:
        import numba

        out["numba"] = numba.get_num_threads()
    except ImportError:  # pragma: no cover
        out["numba"] = None
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
        out[var] = os.environ.get(var, "unset")
    return out


def score(embedding, labels, X=None, **kwargs) -> dict[str, float]:
    from manifex.metrics import evaluate_embedding

    return evaluate_embedding(embedding, labels, X=X, **kwargs)


def summarize(rows: Sequence[dict[str, Any]], by: Sequence[str] = ("dataset", "method")) -> pd.DataFrame:
    """Mean ± sd over seeds of every numeric column, grouped by ``by``."""
    df = pd.DataFrame(rows)
    num = [c for c in df.columns if c not in by and pd.api.types.is_numeric_dtype(df[c]) and c != "seed"]
    g = df.groupby(list(by), sort=False)
    mean, sd, cnt = g[num].mean(), g[num].std(ddof=1), g.size()
    out = mean.copy().astype(object)
    for c in num:
        out[c] = [
            f"{m:.3f}" + (f" ± {s:.3f}" if n > 1 and np.isfinite(s) else "") if np.isfinite(m) else ""
            for m, s, n in zip(mean[c], sd[c], cnt)
        ]
    out["n_seeds"] = cnt
    return out.reset_index()


def _joined(note: str) -> str:
    """A machine note as a continuation of the machine line ("; " unless it brings its own)."""
    return note if not note or note[0] in ";,." else f"; {note}"


def report_header(title: str, machine_note: str = "") -> list[str]:
    """The first lines of every benchmark report: title, machine (with a note), commit and date."""
    return [
        f"# {title}",
        "",
        f"- machine: {machine()}{_joined(machine_note)}",
        f"- commit: {git_rev()}; date: {time.strftime('%Y-%m-%d %H:%M')}",
    ]


def write_report(path: str | Path, title: str, lines: Sequence[str], machine_note: str = "") -> None:
    """Write :func:`report_header` followed by ``lines`` (notes, tables) to ``path``."""
    Path(path).write_text("\n".join([*report_header(title, machine_note), *lines]))


def write_markdown(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    *,
    title: str,
    notes: str = "",
    by: Sequence[str] = ("dataset", "method"),
) -> pd.DataFrame:
    """Write a markdown table (mean ± sd over seeds) with machine, commit and notes; also a CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = summarize(rows, by)
    pd.DataFrame(rows).to_csv(path.with_suffix(".csv"), index=False)
    lines = ["", table.to_markdown(index=False), ""]
    if notes:
        lines += [notes.strip(), ""]
    write_report(path, title, lines)
    return table


def plot_maps(
    maps: dict[str, tuple[np.ndarray, Any]],
    path: str | Path,
    *,
    ncols: int | None = None,
    s: float | None = None,
    suptitle: str | None = None,
    legend: bool = False,
) -> None:
    """Side-by-side scatter plots ``{title: (embedding, labels)}`` coloured by label.

    ``legend=True`` adds one legend of the categories (of the last panel) to the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    ncols = ncols or n
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax, (name, (emb, labels)) in zip(axes.ravel(), maps.items()):
        cats = pd.Categorical(np.asarray(labels).astype(str))
        cmap = plt.get_cmap("tab20" if len(cats.categories) > 10 else "tab10")
        size = s if s is not None else max(0.5, min(8.0, 4000 / len(cats)))
        ax.scatter(
            emb[:, 0],
            emb[:, 1],
            c=cats.codes,
            cmap=cmap,
            s=size,
            linewidths=0,
            rasterized=True,
            vmin=0,
            vmax=max(cmap.N - 1, 1),
        )
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    if legend:
        handles = [
            plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=c)
            for i, c in enumerate(cats.categories)
        ]
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
