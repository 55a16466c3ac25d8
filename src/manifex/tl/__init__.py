"""Tools: AnnData-facing entry points (results in ``obsm`` / ``obs`` / ``uns``)."""

from ._dlme import dlme
from ._embed import embed
from ._fewshot import fewshot_labels
from ._n2d import n2d
from ._prepcheck import PreprocessingWarning
from ._transfer import transfer_labels
from ._tsimcne import tsimcne

__all__ = ["PreprocessingWarning", "dlme", "embed", "fewshot_labels", "n2d", "transfer_labels", "tsimcne"]
