"""Plotting: embedding wrappers over ``sc.pl.embedding`` and training curves."""

from ._embedding import dlme, embedding, loss_curve
from ._images import image_map as image_map
from ._images import tsimcne as tsimcne
from ._n2d import cluster_confusion, n2d
from ._query import confidence_map, query_map

__all__ = ["cluster_confusion", "confidence_map", "dlme", "embedding", "loss_curve", "n2d", "query_map"]
