import math

import numpy as np
import pytest
import torch

from manifex.losses import dlme_loss, fuzzy_union, squared_distances, t_kernel


def student_t_pdf_squared(d2, nu):
    # the density of a Student-t at distance sqrt(d2), times sqrt(2π), squared — from scratch
    c = math.gamma((nu + 1) / 2) / (math.sqrt(nu * math.pi) * math.gamma(nu / 2))
    return (c * math.sqrt(2 * math.pi) * (1 + d2 / nu) ** (-(nu + 1) / 2)) ** 2


@pytest.mark.parametrize("nu", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("d2", [0.0, 0.3, 2.0, 25.0])
def test_t_kernel_matches_hand_formula(nu, d2):
    got = t_kernel(torch.tensor([d2], dtype=torch.float64), nu).item()
    assert got == pytest.approx(student_t_pdf_squared(d2, nu), rel=1e-6)


def test_t_kernel_known_values():
    # nu=100 is nearly Gaussian: at 0 the value is close to 1; nu=0.01 peaks at ~0.0155,
    # so the fuzzy union of two such values peaks at ~0.031 (DESIGN §3.1)
    assert t_kernel(torch.zeros(1), 100.0).item() == pytest.approx(0.99501, abs=1e-4)
    k = t_kernel(torch.zeros(1), 0.01).item()
    assert k == pytest.approx(0.015493, rel=1e-3)
    assert 2 * k - k * k == pytest.approx(0.0307, abs=1e-3)


def test_fuzzy_union():
    k = torch.tensor([[0.5, 0.2], [0.4, 1.0]])
    s = fuzzy_union(k)
    assert s[0, 1].item() == pytest.approx(0.2 + 0.4 - 0.08)
    assert torch.allclose(s, s.T)


def test_squared_distances():
    a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    d = squared_distances(a)
    assert d[0, 1].item() == pytest.approx(25.0)
    assert d[0, 0].item() == 0.0


@pytest.mark.parametrize("dim", [1, 2, 8])
def test_squared_distances_far_from_origin(dim):
    # points of a map that has drifted far from the origin: the small distances between them
    # must survive float32 (the expansion ‖a‖² + ‖b‖² − 2ab errs by ~0.5 here, typical d² ~0.02)
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(50, dim, generator=g) * 0.1 + 1000.0).float()
    a64 = a.double()
    exact = ((a64[:, None] - a64[None]) ** 2).sum(-1)
    torch.testing.assert_close(squared_distances(a).double(), exact, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(squared_distances(a, a[:7]).double(), exact[:, :7], rtol=1e-5, atol=1e-6)


def _reference_loss(z, y, nu_z=100.0, nu_y=0.01, rate=1e5, eps=1e-5):
    """DESIGN §3.1 written elementwise, independent of the vectorised code."""
    b = z.shape[0] // 2
    zo = z[:b].numpy().astype(np.float64)
    yy = y.numpy().astype(np.float64)
    d = ((zo[:, None] - zo[None]) ** 2).sum(-1)
    rho = np.array([min(d[i, j] for j in range(b) if j != i) / rate for i in range(b)])
    n = 2 * b
    p = np.zeros((n, n))
    q = np.zeros((n, n))
    for a in range(n):
        for c in range(n):
            i, j = a % b, c % b
            dd = d[i, j] + (rho[i] if a >= b else 0) + (rho[j] if c >= b else 0)
            dd_t = d[j, i] + (rho[j] if c >= b else 0) + (rho[i] if a >= b else 0)
            k1, k2 = student_t_pdf_squared(dd, nu_z), student_t_pdf_squared(dd_t, nu_z)
            p[a, c] = k1 + k2 - k1 * k2
            dy = ((yy[a] - yy[c]) ** 2).sum()
            q1 = student_t_pdf_squared(dy, nu_y)
            q[a, c] = 2 * q1 - q1 * q1
    bce = -(p * np.log(q + eps) + (1 - p) * np.log(1 - q + eps))
    return bce.mean(), p


def test_dlme_loss_matches_elementwise_reference():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 3, generator=g) * 0.3
    y = torch.randn(8, 2, generator=g)
    expected, p = _reference_loss(z, y)
    got = dlme_loss(z, y).item()
    assert got == pytest.approx(expected, rel=1e-4)
    # a point and its own augmentation are a near-certain positive pair
    assert np.all(np.diag(p[:4, 4:]) > 0.99)


def test_dlme_loss_gradient_flows_through_p():
    z = torch.randn(10, 4, requires_grad=True)
    y = torch.randn(10, 2).detach()  # no path through y: all gradient comes via P
    dlme_loss(z, y).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_dlme_loss_rejects_odd_batch():
    with pytest.raises(ValueError, match="2B"):
        dlme_loss(torch.randn(5, 3), torch.randn(5, 2))


def test_fused_backward_matches_autograd():
    # the fused kernel/BCE on the three distinct blocks, with gradients computed in its forward
    # pass, against plain autograd over the whole 2B × 2B matrix (tiling, shifts, kernels, union,
    # BCE), in float64; the outputs enter as points, so that the gradient of the OA block, which
    # stands for OA and its transpose, is checked where it lands
    from manifex.losses.dlme import _KernelBCE

    def plain(d, rho, y, nu_p, nu_q, eps, alpha=1.0):
        shift = torch.cat([torch.zeros_like(rho), rho])
        dp = d.repeat(2, 2) + shift[:, None] + shift[None, :]
        dq = ((y[:, None] - y[None]) ** 2).sum(-1)
        kp, kq = t_kernel(dp, nu_p), t_kernel(dq, nu_q)
        p, q = fuzzy_union(kp), fuzzy_union(kq)
        return -(alpha * p * torch.log(q + eps) + (1 - p) * torch.log(1 - q + eps)).mean()

    def fused(d, rho, y, nu_p, nu_q, eps, alpha=1.0):
        yo, ya = y[:6], y[6:]
        rows, cols = torch.stack([yo, yo, ya]), torch.stack([yo, ya, ya])  # blocks OO, OA, AA
        dq = ((rows[:, :, None] - cols[:, None]) ** 2).sum(-1)
        return _KernelBCE.apply(d, rho, dq, nu_p, nu_q, eps, alpha)

    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 3, generator=g, dtype=torch.float64)
    d = squared_distances(a).double().detach().requires_grad_()
    rho = (torch.rand(6, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    y = (torch.rand(12, 2, generator=g, dtype=torch.float64) * 3).requires_grad_()
    settings = [(100.0, 0.01, 1.0), (1.0, 1.0, 1.0), (0.5, 3.0, 1.0)]
    settings += [(100.0, 0.01, 2.0), (100.0, 0.01, 0.5)]  # a weighted attraction (exaggeration)
    for nu_p, nu_q, alpha in settings:
        l1 = fused(d, rho, y, nu_p, nu_q, 1e-5, alpha)
        g1 = torch.autograd.grad(l1 * 1.7, (d, rho, y))
        l2 = plain(d, rho, y, nu_p, nu_q, 1e-5, alpha)
        g2 = torch.autograd.grad(l2 * 1.7, (d, rho, y))
        assert l1.item() == pytest.approx(l2.item(), rel=1e-10)
        for x, ref in zip(g1, g2):
            torch.testing.assert_close(x, ref, rtol=1e-6, atol=1e-12)
    # only the inputs that need a gradient get one
    l3 = fused(d.detach(), rho.detach(), y, 100.0, 0.01, 1e-5)
    (gy,) = torch.autograd.grad(l3, (y,))
    torch.testing.assert_close(
        gy, torch.autograd.grad(plain(d.detach(), rho.detach(), y, 100.0, 0.01, 1e-5), y)[0]
    )


def test_squared_distances_of_stacks():
    g = torch.Generator().manual_seed(1)
    for dim in (2, 12):  # coordinate differences, and the expansion
        a, b = torch.randn(3, 5, dim, generator=g), torch.randn(3, 4, dim, generator=g)
        got = squared_distances(a, b)
        assert got.shape == (3, 5, 4)
        for s in range(3):
            torch.testing.assert_close(got[s], torch.cdist(a[s], b[s]) ** 2, rtol=1e-4, atol=1e-4)
