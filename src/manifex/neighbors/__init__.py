"""k-nearest-neighbour graphs at scale: exact on a torch device, faiss, pynndescent.

One option chooses the backend (``method="auto"`` by size and device), and the recall of an
approximate graph is measured against exact search on a sample of its rows:

>>> import numpy as np
>>> import manifex as mx
>>> x = np.random.default_rng(0).normal(size=(200, 8))
>>> ind, info = mx.neighbors.knn_graph(x, 10, device="cpu")
>>> info["method"], ind.shape
('exact', (200, 10))
"""

from ._exact import TILE_COLS, TILE_ENTRIES
from ._knn import knn_graph, knn_indices, knn_query
from ._options import EXACT_MAX_CELLS, METHODS, resolve_method
from ._recall import knn_recall

__all__ = [
    "EXACT_MAX_CELLS",
    "METHODS",
    "TILE_COLS",
    "TILE_ENTRIES",
    "knn_graph",
    "knn_indices",
    "knn_query",
    "knn_recall",
    "resolve_method",
]
