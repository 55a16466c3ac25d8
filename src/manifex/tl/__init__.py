"""Tools: AnnData-facing entry points (results in ``obsm`` / ``obs`` / ``uns``)."""

from ._dlme import dlme
from ._n2d import n2d
from ._tsimcne import tsimcne as tsimcne

__all__ = ["dlme", "n2d"]
