"""Loaders for the benchmark and tutorial datasets.

Files are looked up in ``data_dir`` (argument), else the ``MANIFEX_DATA_DIR`` environment
variable. Nothing is bundled; :func:`available` tells which datasets are present.
"""

from ._loaders import (
    DATASETS,
    available,
    data_dir,
    image_anndata,
    load,
    load_images,
    load_scrna,
    preprocess_scrna,
)

__all__ = [
    "DATASETS",
    "available",
    "data_dir",
    "image_anndata",
    "load",
    "load_images",
    "load_scrna",
    "preprocess_scrna",
]
