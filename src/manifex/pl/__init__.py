"""Plotting: ``sc.pl.embedding`` wrappers, training curves, image maps, cluster and query plots."""

from ._embedding import dlme, embedding, loss_curve
from ._images import image_map, tsimcne
from ._n2d import cluster_confusion, n2d
from ._query import confidence_map, query_map

__all__ = [
    "cluster_confusion",
    "confidence_map",
    "dlme",
    "embedding",
    "image_map",
    "loss_curve",
    "n2d",
    "query_map",
    "tsimcne",
]
