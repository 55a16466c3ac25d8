"""Estimators with ``fit`` / ``transform`` / ``save`` / ``load`` on arrays (no AnnData)."""

from ._base import BaseModel, NotFittedError, load_model
from .dlme import DLME

__all__ = ["DLME", "BaseModel", "NotFittedError", "load_model"]
