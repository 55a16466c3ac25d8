"""Tools: AnnData-facing entry points (results in ``obsm`` / ``obs`` / ``uns``)."""

from ._dlme import dlme

__all__ = ["dlme"]
