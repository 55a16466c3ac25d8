"""Estimators with ``fit`` / ``transform`` / ``save`` / ``load`` on arrays (no AnnData)."""

from ._base import BaseModel, NotFittedError, load_model
from .dlme import DLME
from .n2d import N2D
from .tsimcne import TSimCNE

__all__ = ["DLME", "N2D", "BaseModel", "NotFittedError", "TSimCNE", "load_model"]
