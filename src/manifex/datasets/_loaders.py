from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

ENV_VAR = "MANIFEX_DATA_DIR"

#: name -> (file, kind, label column)
DATASETS: dict[str, tuple[str, str, str]] = {
    "pbmc3k": ("pbmc3k_counts.h5ad", "scrna", "cell_type"),
    "paul15": ("paul15_counts.h5ad", "scrna", "cell_type"),
    "pbmc4k": ("pbmc4k_10x_top2000.h5ad", "scrna", "label"),
    "human_kidney": ("human_kidney_top2000.h5ad", "scrna", "label"),
    "mouse_bladder": ("mouse_bladder_top2000.h5ad", "scrna", "label"),
    "worm_neuron": ("worm_neuron.h5ad", "scrna", "label"),
    "cite_cbmc": ("cite_cbmc_top2000.h5ad", "scrna", "label"),
    "kang": ("kang_pbmc_ctrl_stim_2k.h5ad", "scrna", "batch"),
    "mnist": ("mnist.npz", "images", "label"),
    "usps": ("usps.npz", "images", "label"),
    "cifar10": ("cifar10_jpeg_subset20k.npz", "images", "label"),
    "bccd": ("bccd_wbc_96px.npz", "images", "label"),
}


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: ``path``, else ``$MANIFEX_DATA_DIR``.

    Parameters
    ----------
    path
        Directory to use; ``None`` reads the ``MANIFEX_DATA_DIR`` environment variable.

    Returns
    -------
    The directory as a :class:`pathlib.Path`.

    Raises
    ------
    FileNotFoundError
        When neither is given or the directory does not exist.

    Examples
    --------
    >>> import os, manifex as mx
    >>> os.makedirs("data", exist_ok=True)
    >>> mx.datasets.data_dir("data")
    PosixPath('data')
    >>> os.environ["MANIFEX_DATA_DIR"] = "data"  # or in the shell: export MANIFEX_DATA_DIR=data
    >>> mx.datasets.data_dir()
    PosixPath('data')
    >>> mx.datasets.data_dir("no/such/dir")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Data directory no/such/dir does not exist.
    """
    p = path if path is not None else os.environ.get(ENV_VAR)
    if p is None:
        raise FileNotFoundError(
            f"No data directory: pass `data_dir` or set the {ENV_VAR} environment variable."
        )
    p = Path(p).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"Data directory {p} does not exist.")
    return p


def available(path: str | os.PathLike | None = None) -> list[str]:
    """Names of the datasets whose files are present in the data directory.

    Parameters
    ----------
    path
        Data directory (default ``$MANIFEX_DATA_DIR``); an empty list when it is not set or
        does not exist.

    Examples
    --------
    >>> import os, numpy as np, manifex as mx
    >>> os.makedirs("data", exist_ok=True)
    >>> mx.datasets.available("data")
    []
    >>> np.savez("data/usps.npz", images=np.zeros((4, 16, 16), np.uint8), labels=np.arange(4))
    >>> mx.datasets.available("data")
    ['usps']
    """
    try:
        d = data_dir(path)
    except FileNotFoundError:
        return []
    return [k for k, (f, _, _) in DATASETS.items() if (d / f).exists()]


def _file(name: str, path: str | os.PathLike | None) -> tuple[Path, str, str]:
    if name not in DATASETS:
        raise KeyError(f"Unknown dataset {name!r}; known: {sorted(DATASETS)}.")
    fname, kind, label = DATASETS[name]
    f = data_dir(path) / fname
    if not f.exists():
        raise FileNotFoundError(f"{f} not found (dataset {name!r}).")
    return f, kind, label


def load_scrna(name: str, data_dir: str | os.PathLike | None = None) -> AnnData:
    """Raw-count AnnData of a single-cell dataset; labels as a categorical ``obs["label"]`` too.

    Parameters
    ----------
    name
        A single-cell entry of :data:`DATASETS` (``"pbmc3k"``, ``"paul15"``, ``"kang"``, ...).
    data_dir
        Directory holding the ``.h5ad`` files (default ``$MANIFEX_DATA_DIR``).

    Returns
    -------
    The counts in ``X``, the dataset's own annotation in ``obs``, its labels also in
    ``obs["label"]`` and the dataset name in ``uns["dataset"]``.

    Examples
    --------
    With the benchmark files in ``$MANIFEX_DATA_DIR``, ``mx.datasets.load_scrna("pbmc3k")``
    loads PBMC 3k. Here a small file of the same layout stands in for it:

    >>> import os, numpy as np, pandas as pd, anndata as ad, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> cells = pd.DataFrame({"cell_type": rng.choice(["B", "T"], 60)}, index=[f"c{i}" for i in range(60)])
    >>> os.makedirs("data", exist_ok=True)
    >>> ad.AnnData(rng.poisson(1.0, (60, 40)).astype(np.float32), obs=cells).write_h5ad("data/pbmc3k_counts.h5ad")
    >>> adata = mx.datasets.load_scrna("pbmc3k", data_dir="data")
    >>> adata.obs["label"].cat.categories.tolist(), adata.uns["dataset"]
    (['B', 'T'], 'pbmc3k')
    """
    import anndata as ad

    f, kind, label = _file(name, data_dir)
    if kind != "scrna":
        raise ValueError(f"{name!r} is an image dataset; use `load_images`.")
    adata = ad.read_h5ad(f)
    adata.obs["label"] = pd.Categorical(adata.obs[label].astype(str))
    adata.uns["dataset"] = name
    return adata


def image_anndata(
    images: np.ndarray,
    labels: Any = None,
    *,
    label_names: Any = None,
    image_key: str = "image",
    obs: pd.DataFrame | None = None,
) -> AnnData:
    """Build an image AnnData: images in ``obsm[image_key]``, flattened pixels in ``X``.

    Parameters
    ----------
    images
        ``(n, H, W)`` or ``(n, H, W, C)`` array, uint8 or float.
    labels
        Optional per-image labels (ints mapped through ``label_names`` when given).
    label_names
        Names for integer labels.
    image_key
        ``obsm`` key for the images.
    obs
        Extra per-image metadata.

    Examples
    --------
    >>> import numpy as np, manifex as mx
    >>> a = mx.datasets.image_anndata(np.zeros((5, 16, 16), dtype="uint8"), labels=[0, 1, 0, 1, 1])
    >>> a.obsm["image"].shape, a.n_vars
    ((5, 16, 16), 256)
    """
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"`images` must have shape (n, H, W) or (n, H, W, C), got {images.shape}.")
    if images.dtype.kind not in "uif":
        raise TypeError(f"`images` must be numeric, got dtype {images.dtype}.")
    n = images.shape[0]
    x = images.reshape(n, -1).astype(np.float32)
    if images.dtype == np.uint8:
        x /= 255.0
    if obs is not None and len(obs) != n:
        raise ValueError(f"`obs` has {len(obs)} rows but there are {n} images.")
    meta = obs.copy() if obs is not None else pd.DataFrame()
    meta.index = [str(i) for i in range(n)]
    adata = AnnData(X=x, obs=meta)
    adata.obsm[image_key] = images
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"`labels` must have {n} entries, got shape {lab.shape}.")
        if label_names is not None:
            names = np.asarray(label_names).astype(str)
            lab = names[lab]
        adata.obs["label"] = pd.Categorical(lab.astype(str))
    return adata


def load_images(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    n: int | None = None,
    random_state: int = 0,
) -> AnnData:
    """Image dataset as AnnData (see :func:`image_anndata`).

    Parameters
    ----------
    name
        ``"mnist"``, ``"usps"``, ``"cifar10"`` or ``"bccd"``.
    data_dir
        Directory holding the ``.npz`` files (default ``$MANIFEX_DATA_DIR``).
    split
        ``"train"`` or ``"test"`` where the source has a split; ``None`` for all.
    n
        Random subset of this size (seeded by ``random_state``).
    random_state
        Seed of the subset.

    Returns
    -------
    Images in ``obsm["image"]``, flattened pixels in ``X`` (scaled to [0, 1] for uint8
    images), labels in ``obs["label"]`` and the split in ``obs["split"]`` where the source has
    one.

    Examples
    --------
    With the benchmark files in ``$MANIFEX_DATA_DIR``, ``mx.datasets.load_images("mnist",
    split="test")`` loads the 10,000 MNIST test digits. Here a small file of the same layout
    (``images``, ``labels`` and a ``split`` index into ``split_names``) stands in for it:

    >>> import os, numpy as np, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> os.makedirs("data", exist_ok=True)
    >>> np.savez(
    ...     "data/mnist.npz",
    ...     images=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
    ...     labels=rng.integers(0, 10, 30),
    ...     split=np.repeat([0, 1], [20, 10]),
    ...     split_names=np.array(["train", "test"]),
    ... )
    >>> adata = mx.datasets.load_images("mnist", data_dir="data", split="test", n=5)
    >>> adata.obsm["image"].shape, adata.obs["split"].unique().tolist()
    ((5, 28, 28), ['test'])
    >>> float(adata.X.max()) <= 1.0  # pixels scaled to [0, 1] in X
    True
    """
    f, kind, _ = _file(name, data_dir)
    if kind != "images":
        raise ValueError(f"{name!r} is a single-cell dataset; use `load_scrna`.")
    z = np.load(f, allow_pickle=False)
    images, labels = z["images"], z["labels"]
    names = z["label_names"] if "label_names" in z else None
    obs = pd.DataFrame(index=[str(i) for i in range(len(labels))])
    if "split" in z:
        split_names = (
            np.asarray(z["split_names"]).astype(str) if "split_names" in z else np.array(["train", "test"])
        )
        obs["split"] = pd.Categorical(split_names[z["split"]])
    sel = np.arange(len(labels))
    if split is not None:
        if "split" not in obs:
            raise ValueError(f"{name!r} has no train/test split.")
        if split not in set(obs["split"].astype(str)):
            raise ValueError(
                f"`split` must be one of {sorted(set(obs['split'].astype(str)))}, got {split!r}."
            )
        sel = np.flatnonzero(obs["split"].astype(str).to_numpy() == split)
    if n is not None and n < sel.size:
        sel = np.sort(np.random.default_rng(random_state).choice(sel, n, replace=False))
    adata = image_anndata(
        images[sel], labels[sel], label_names=names, obs=obs.iloc[sel].reset_index(drop=True)
    )
    adata.uns["dataset"] = name
    return adata


def load(name: str, data_dir: str | os.PathLike | None = None, **kwargs: Any) -> AnnData:
    """Load any dataset of :data:`DATASETS` by name.

    Parameters
    ----------
    name
        A key of :data:`DATASETS`.
    data_dir
        Directory holding the files (default ``$MANIFEX_DATA_DIR``).
    **kwargs
        Passed to :func:`load_images` for image datasets (``split``, ``n``, ``random_state``).

    Returns
    -------
    The result of :func:`load_scrna` or :func:`load_images`.

    Examples
    --------
    With the benchmark files in ``$MANIFEX_DATA_DIR``, ``mx.datasets.load("usps")`` gives the
    9,298 USPS digits. Here a small file of the same layout stands in for it:

    >>> import os, numpy as np, manifex as mx
    >>> os.makedirs("data", exist_ok=True)
    >>> np.savez("data/usps.npz", images=np.zeros((12, 16, 16), np.uint8), labels=np.arange(12) % 10)
    >>> usps = mx.datasets.load("usps", data_dir="data")
    >>> usps.obsm["image"].shape
    (12, 16, 16)
    """
    if name not in DATASETS:
        raise KeyError(f"Unknown dataset {name!r}; known: {sorted(DATASETS)}.")
    if DATASETS[name][1] == "images":
        return load_images(name, data_dir, **kwargs)
    return load_scrna(name, data_dir)


def preprocess_scrna(
    adata: AnnData, *, n_top_genes: int = 2000, n_comps: int = 50, scale: bool = True, random_state: int = 0
) -> AnnData:
    """Standard scanpy preprocessing used by the benchmarks and tutorials.

    ``normalize_total`` → ``log1p`` → ``n_top_genes`` HVGs (subset) → ``scale`` (max 10) →
    PCA with ``n_comps`` components. Works on a copy; raw counts stay in ``layers["counts"]``
    and the log-normalised values in ``layers["log1p"]``.

    Parameters
    ----------
    adata
        Raw counts, cells × genes.
    n_top_genes
        Highly variable genes kept.
    n_comps
        Principal components in ``obsm["X_pca"]``.
    scale
        Scale each gene to unit variance (clipped at 10) before the PCA.
    random_state
        Seed of the PCA.

    Returns
    -------
    The preprocessed copy.

    Examples
    --------
    On raw counts (here simulated; ``mx.datasets.load_scrna("paul15")`` loads real ones):

    >>> import numpy as np, anndata as ad, manifex as mx
    >>> rng = np.random.default_rng(0)
    >>> counts = ad.AnnData(rng.negative_binomial(2, 0.3, (200, 300)).astype(np.float32))
    >>> adata = mx.datasets.preprocess_scrna(counts, n_top_genes=100, n_comps=20)
    >>> adata.shape, adata.obsm["X_pca"].shape
    ((200, 100), (200, 20))
    >>> sorted(adata.layers)
    ['counts', 'log1p']
    """
    import scanpy as sc

    a = adata.copy()
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=min(n_top_genes, a.n_vars), subset=True)
    a.layers["log1p"] = a.X.copy()
    if scale:
        sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=random_state)
    return a
