"""The DLME loss (Zang et al., ECCV 2022): Student-t kernels, fuzzy union, binary cross-entropy."""

from __future__ import annotations

import math

import torch

__all__ = ["dlme_loss", "fuzzy_union", "squared_distances", "t_kernel"]


_LOG_FLOOR = -80.0
_FLOOR = math.exp(_LOG_FLOOR) * (1 + 1e-3)


def _log_c(nu: float) -> float:
    """log of the Student-t normalising constant Γ((ν+1)/2) / (√(νπ) Γ(ν/2))."""
    return math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)


def _log_peak(nu: float) -> float:
    """log of the squared kernel at distance 0, ``2 log(C_ν √(2π))``."""
    return 2.0 * (_log_c(nu) + 0.5 * math.log(2 * math.pi))


def t_kernel(d2: torch.Tensor, nu: float) -> torch.Tensor:
    """Squared Student-t kernel ``k_ν(d²) = [C_ν √(2π) (1 + d²/ν)^(-(ν+1)/2)]²``.

    Evaluated in log space for stability. ``k_100(0) ≈ 0.995`` (nearly Gaussian) and
    ``k_0.01(0) ≈ 0.0155`` (very heavy tails). Values below ``exp(-80) ≈ 1.8e-35`` are raised
    to it: subnormal floats would slow CPU arithmetic tenfold and carry no signal.

    Parameters
    ----------
    d2
        Squared distances, any shape.
    nu
        Degrees of freedom ν (> 0).

    Examples
    --------
    >>> import torch
    >>> from manifex.losses import t_kernel
    >>> t_kernel(torch.tensor([0.0, 1.0, 100.0]), nu=0.01)
    tensor([1.5493e-02, 1.4648e-04, 1.4128e-06])
    """
    log_k = _log_peak(nu) - (nu + 1.0) * torch.log1p(d2 / nu)
    return torch.exp(log_k.clamp_min(_LOG_FLOOR))


def fuzzy_union(k: torch.Tensor) -> torch.Tensor:
    """Symmetrise a similarity matrix as a fuzzy set union: ``K + Kᵀ − K∘Kᵀ``.

    Parameters
    ----------
    k
        Square matrix of similarities in [0, 1].

    Examples
    --------
    >>> import torch
    >>> from manifex.losses import fuzzy_union
    >>> fuzzy_union(torch.tensor([[0.0, 0.5], [0.2, 0.0]]))
    tensor([[0.0000, 0.6000],
            [0.6000, 0.0000]])
    """
    kt = k.transpose(0, 1)
    return k + kt - k * kt


#: up to this many dimensions (maps), squared distances are summed from coordinate differences
_DIRECT_MAX_DIM = 8


def squared_distances(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise squared Euclidean distances, clamped at 0 (float32 accumulation).

    Up to 8 dimensions (the output maps) they are summed from coordinate differences, which is
    exact however far the points lie from the origin; above that by the expansion
    ``‖a‖² + ‖b‖² − 2 a·b`` (matrix products). The expansion loses the small distances of points
    far from the origin: at coordinates near 1,000, float32 errs by about 0.5 in ``d²``, more
    than the distances between neighbours on a map.

    Parameters
    ----------
    a
        ``(n, d)`` points, or a stack ``(s, n, d)`` of sets of them.
    b
        ``(m, d)`` points (``(s, m, d)`` for a stack); default ``a``.

    Returns
    -------
    ``(n, m)`` matrix of ``‖a_i − b_j‖²`` (``(s, n, m)`` for stacks).

    Examples
    --------
    >>> import torch
    >>> from manifex.losses import squared_distances
    >>> squared_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    tensor([[ 0., 25.],
            [25.,  0.]])
    """
    a = a.float()
    b = a if b is None else b.float()
    if a.shape[-1] <= _DIRECT_MAX_DIM:
        d2 = None
        for k in range(a.shape[-1]):
            t = (a[..., :, k, None] - b[..., None, :, k]).square()
            d2 = t if d2 is None else d2 + t
        return d2 if d2 is not None else a.new_zeros(*a.shape[:-1], b.shape[-2])
    d2 = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1)[..., None, :] - 2.0 * a @ b.transpose(-1, -2)
    return d2.clamp_min(0.0)


def dlme_loss(
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    nu_z: float = 100.0,
    nu_y: float = 0.01,
    aug_near_rate: float = 1e5,
    exaggeration: float = 1.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """DLME's loss on a batch of B points and their B augmentations.

    Parameters
    ----------
    z
        ``(2B, d)`` latent codes, the first B of the original points, the last B of their
        augmented views (row ``B + i`` is the view of row ``i``).
    y
        ``(2B, m)`` outputs (the embedding), same order.
    nu_z, nu_y
        Degrees of freedom of the input-side and output-side kernels.
    aug_near_rate
        ``ρ_i = min_{j≠i} D_ij / aug_near_rate`` shifts distances that involve augmented points.
    exaggeration
        Weight ``α`` of the attractive term of the cross-entropy,
        ``−[α P log Q + (1 − P) log(1 − Q)]``; 1 is the paper's loss. As t-SNE's exaggeration,
        ``α > 1`` pulls neighbours together harder than the repulsion pushes the rest apart.
    eps
        Guards the logarithms.

    Notes
    -----
    The input-side distances use only the un-augmented codes ``D = ‖z_i − z_j‖²`` (i, j < B):
    orig–orig ``D_ij``, aug_i–orig_j ``D_ij + ρ_i``, orig_i–aug_j ``D_ij + ρ_j``, aug–aug
    ``D_ij + ρ_i + ρ_j``, so a point and its own augmentation are a near-certain positive pair.
    ``P = S_{ν_z}(·)`` is **not** detached: the encoder receives gradient through P too.
    The loss is the mean binary cross-entropy between P and ``Q = S_{ν_y}(‖y_a − y_b‖²)`` over
    the whole 2B × 2B matrix.

    Returns
    -------
    The scalar loss.

    Examples
    --------
    >>> import torch
    >>> from manifex.losses import dlme_loss
    >>> from manifex.nn import MLP
    >>> x = torch.randn(64, 50)
    >>> x_aug = 0.7 * x + 0.3 * x[torch.randperm(64)]  # stand-in for kNN-mix
    >>> encoder, projector = MLP(50, [500, 300, 80]), MLP(80, [500, 80], 2)
    >>> z = encoder(torch.cat([x, x_aug]))
    >>> loss = dlme_loss(z, projector(z))
    >>> loss.backward()
    """
    two_b = z.shape[0]
    if two_b % 2 or y.shape[0] != two_b:
        raise ValueError("`z` and `y` must hold 2B rows: B originals followed by their B views.")
    b = two_b // 2
    d = squared_distances(z[:b])
    off = d + torch.diag(torch.full((b,), float("inf"), device=d.device))
    rho = off.min(dim=1).values / aug_near_rate
    # the output distances of the three distinct B × B blocks: originals–originals,
    # originals–views (the views–originals block is its transpose) and views–views
    yo, ya = y[:b], y[b:]
    d_q = squared_distances(torch.stack([yo, yo, ya]), torch.stack([yo, ya, ya]))
    return _KernelBCE.apply(d, rho, d_q, nu_z, nu_y, eps, float(exaggeration))


def _kernel(d2: torch.Tensor, nu: float) -> torch.Tensor:
    """:func:`t_kernel` in one new tensor, the rest in place (no autograd)."""
    return d2.div(nu).log1p_().mul_(-(nu + 1.0)).add_(_log_peak(nu)).clamp_min_(_LOG_FLOOR).exp_()


def _union_(k: torch.Tensor) -> torch.Tensor:
    """The fuzzy union of a symmetric kernel matrix, ``K(2 − K)``, in a new tensor."""
    return k.neg().add_(2.0).mul_(k)


def _kernel_slope_(k: torch.Tensor, d2: torch.Tensor, nu: float, scale: float) -> torch.Tensor:
    """``scale · dS/dd²`` of the union ``S = K(2 − K)``, in place on ``d2`` (zero below the floor)."""
    slope = d2.add_(nu).reciprocal_().mul_(k).mul_(k.neg().add_(1.0)).mul_(-2.0 * (nu + 1.0) * scale)
    return slope.masked_fill_(k <= _FLOOR, 0.0)


class _KernelBCE(torch.autograd.Function):
    """Mean BCE between ``S_{ν_z}`` of the shifted batch distances and ``S_{ν_y}`` of the outputs'.

    The ``2B × 2B`` matrices are symmetric, with blocks ``[[OO, OA], [OAᵀ, AA]]`` (O: originals,
    A: their views), so the loss is computed on the three distinct ``B × B`` blocks, the ``OA``
    block counted twice: a quarter less work than the whole matrix, the same loss and gradients.
    Inputs are the originals' ``B × B`` distances ``D``, the shifts ``ρ`` and the outputs'
    distances of the blocks ``(3, B, B)`` (OO, OA, AA); the input side's blocks are ``D``,
    ``D + ρ_j`` and ``D + ρ_i + ρ_j``. Within each block the fuzzy union ``K + Kᵀ − K∘Kᵀ`` of
    the whole symmetric matrix is ``K(2 − K)``. The gradients are computed in the forward pass
    with in-place arithmetic and only they are kept, so a step makes a few passes over the
    blocks instead of the several dozen of autograd's chain (which dominate a DLME step on the
    CPU). Checked against autograd over the whole matrix in the tests.
    """

    @staticmethod
    def forward(ctx, d, rho, d_q, nu_p: float, nu_q: float, eps: float, alpha: float = 1.0):
        b = d.shape[0]
        d_p = d.expand(3, b, b).clone()  # blocks OO, OA (+ ρ_j), AA (+ ρ_i + ρ_j)
        d_p[1:].add_(rho[None, :])
        d_p[2].add_(rho[:, None])
        kp, kq = _kernel(d_p, nu_p), _kernel(d_q, nu_q)
        p, q = _union_(kp), _union_(kq)
        log_q = q.add(eps).log_()
        log_1q = q.neg().add_(eps).log1p_()
        if alpha != 1.0:
            log_q.mul_(alpha)  # α log(q + ε) from here on
        scale = 1.0 / (4 * b * b)
        bce = torch.lerp(log_1q, log_q, p)
        bce[1].mul_(2.0)  # OA stands for OA and its transpose
        loss = -bce.sum() * scale
        grad_d = grad_rho = grad_q = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # dL/dp = log(1 − q + ε) − α log(q + ε); times dp/dd² of the union, per entry of a block
            g = log_1q.sub_(log_q).mul_(_kernel_slope_(kp, d_p, nu_p, scale))
            g_oo, g_oa, g_aa = g
            # the whole matrix's entry (i, j) of D appears in OO, OA, its transpose and AA
            grad_d = g_oo + g_oa + g_oa.T + g_aa
            # ρ_i shifts the views' rows (OAᵀ, AA) and columns (OA, AA)
            grad_rho = 2.0 * g_oa.sum(dim=0) + g_aa.sum(dim=0) + g_aa.sum(dim=1)
        if ctx.needs_input_grad[2]:
            # dL/dq = (1 − p)/(1 − q + ε) − α p/(q + ε); with u = q + ε its numerator over
            # (q + ε)(1 + ε − q) is u − p(u(1 − α) + α(1 + 2ε))
            u = q.add_(eps)
            if alpha == 1.0:
                num = torch.add(u, p, alpha=-(1.0 + 2.0 * eps))
            else:
                num = u.mul(1.0 - alpha).add_(alpha * (1.0 + 2.0 * eps)).mul_(p).neg_().add_(u)
            dq = num.div_(u.neg().add_(1.0 + 2.0 * eps).mul_(u))
            grad_q = dq.mul_(_kernel_slope_(kq, d_q.clone(), nu_q, scale))
            grad_q[1].mul_(2.0)  # the OA distances enter twice
        ctx.save_for_backward(grad_d, grad_rho, grad_q)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        grads = [None if g is None else g * grad_out for g in ctx.saved_tensors]
        return (*grads, None, None, None, None)
