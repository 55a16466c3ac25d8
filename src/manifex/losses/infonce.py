"""InfoNCE with the Cauchy similarity, the loss of t-SimCNE (Böhm, Berens & Kobak, ICLR 2023)."""

from __future__ import annotations

import torch

__all__ = ["cauchy_infonce"]


def cauchy_infonce(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cauchy-similarity InfoNCE of ``n`` positive pairs ``(a_i, b_i)``.

    With ``q(u, v) = 1 / (1 + ‖u − v‖²)`` and the ``2n`` points ``[a; b]``, every point is an
    anchor whose positive is its partner and whose negatives are the other ``2n − 2`` points:

    ``L = −mean_i log q(a_i, b_i)
    + ½ [mean_j log(Σ_i q(b_j, a_i) + Σ_{k≠j} q(b_j, b_k))
    + mean_j log(Σ_i q(a_j, b_i) + Σ_{k≠j} q(a_j, a_k))]``

    (self-pairs excluded). Computed in float32.

    Parameters
    ----------
    a, b
        ``(n, d)`` outputs of the two views, row ``i`` of each from the same image.

    Returns
    -------
    The scalar loss.

    Examples
    --------
    >>> import torch
    >>> from manifex.losses import cauchy_infonce
    >>> a = torch.randn(8, 2)
    >>> float(cauchy_infonce(a, a + 0.01)) < float(cauchy_infonce(a, torch.randn(8, 2)))
    True
    """
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"`a` and `b` must both be (n, d) with the same shape, got {a.shape} and {b.shape}.")
    n = a.shape[0]
    if n < 2:
        raise ValueError("The contrastive loss needs at least 2 pairs.")
    z = torch.cat([a, b]).float()
    sq = (z * z).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
    q = 1.0 / (1.0 + d2)
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    denom = q.masked_fill(eye, 0.0).sum(1)
    # positive pairs, computed directly (more accurate than reading them off the expanded form)
    pos = 1.0 / (1.0 + (a.float() - b.float()).pow(2).sum(1))
    return torch.log(denom).mean() - torch.log(pos).mean()
