"""manifex: deep parametric manifold embeddings (DLME, t-SimCNE, N2D) for the scverse."""

from importlib.metadata import PackageNotFoundError, version

from . import augment, datasets, losses, metrics, models, neighbors, nn, pl, pp, tl

try:
    __version__ = version("manifex")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = ["augment", "datasets", "losses", "metrics", "models", "neighbors", "nn", "pl", "pp", "tl"]
