"""Estimators with ``fit`` / ``transform`` / ``save`` / ``load`` on arrays (no AnnData)."""

from ..io._format import ModelFileError
from ..io._models import convert_legacy_file, load_model
from ._base import BaseModel
from ._contract import NotFittedError
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
