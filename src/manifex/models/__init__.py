"""Estimators with ``fit`` / ``transform`` / ``save`` / ``load`` on arrays (no AnnData)."""

from ._base import BaseModel, NotFittedError, load_model
from ._io import ModelFileError, convert_legacy_file
from .dlme import DLME
from .n2d import N2D
from .tsimcne import TSimCNE

__all__ = [
    "DLME",
    "N2D",
    "BaseModel",
    "ModelFileError",
    "NotFittedError",
    "TSimCNE",
    "convert_legacy_file",
    "load_model",
]
