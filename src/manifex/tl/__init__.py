"""Tools: AnnData-facing entry points (results in ``obsm`` / ``obs`` / ``uns``)."""

from ._dlme import dlme
from ._n2d import n2d
from ._query import embed, fewshot_labels, transfer_labels
from ._tsimcne import tsimcne as tsimcne

__all__ = ["dlme", "embed", "fewshot_labels", "n2d", "transfer_labels", "tsimcne"]
