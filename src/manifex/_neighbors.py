"""k-nearest-neighbour search used to build augmentations and metrics (see :mod:`manifex.neighbors`)."""

from __future__ import annotations

from .neighbors._knn import _drop_self, knn_graph, knn_indices, knn_recall

__all__ = ["_drop_self", "knn_graph", "knn_indices", "knn_recall"]
