"""Loss functions: the DLME kernel loss and the Cauchy InfoNCE of t-SimCNE."""

from .dlme import dlme_loss, fuzzy_union, squared_distances, t_kernel
from .infonce import cauchy_infonce

__all__ = ["cauchy_infonce", "dlme_loss", "fuzzy_union", "squared_distances", "t_kernel"]
