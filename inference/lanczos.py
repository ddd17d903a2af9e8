"""Lanczos with full reorthogonalization: the leading eigenpairs of a symmetric operator known only by products.

``top_eigenpairs(matvec, dim, steps)`` never forms the matrix: it needs ``steps`` products
with it. The Krylov space starts from ``matvec`` of a random vector, so it lies in the
operator's range; when it becomes invariant before ``steps`` (the range is exhausted, or a
block of the spectrum is), it restarts from a fresh vector orthogonal to the basis so far.
For a positive semi-definite operator of rank r, ``steps >= r`` gives its exact nonzero
eigenpairs (up to round-off), which is what FSP-Laplace needs of its prior precision.
"""
import torch

BREAKDOWN = 1e-10  # relative size of a new Krylov vector below which the space is taken as invariant


def lanczos(matvec, dim, steps, generator=None, dtype=torch.float64, device=None):
    """Orthonormal basis Q [dim, k] (k <= steps) and symmetric tridiagonal T [k, k] with Q^T A Q = T."""
    basis, alphas, betas = [], [], []
    q = _fresh(matvec, basis, dim, generator, dtype, device)
    scale = 0.0
    while q is not None and len(basis) < steps:
        basis.append(q)
        w = matvec(q).to(dtype)
        alpha = torch.dot(q, w)
        q_mat = torch.stack(basis, 1)
        for _ in range(2):  # full reorthogonalization, twice (Kahan: twice is enough)
            w = w - q_mat @ (q_mat.T @ w)
        beta = torch.linalg.vector_norm(w)
        scale = max(scale, abs(alpha.item()), beta.item())
        alphas.append(alpha)
        if len(basis) == steps:
            break
        if beta <= BREAKDOWN * max(scale, 1e-300):  # invariant subspace: start a new block
            betas.append(torch.zeros((), dtype=dtype, device=device))
            q = _fresh(matvec, basis, dim, generator, dtype, device, scale)
        else:
            betas.append(beta)
            q = w / beta
    k = len(basis)
    if k == 0:
        return torch.zeros(dim, 0, dtype=dtype, device=device), torch.zeros(0, 0, dtype=dtype, device=device)
    off = torch.stack(betas[:k - 1]) if k > 1 else torch.zeros(0, dtype=dtype, device=device)
    t = torch.diag(torch.stack(alphas)) + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.stack(basis, 1), t


def _fresh(matvec, basis, dim, generator, dtype, device, scale=None):
    """A unit vector in the operator's range orthogonal to ``basis``, or None if the range holds none."""
    g = torch.randn(dim, generator=generator, dtype=dtype).to(device)
    v = matvec(g).to(dtype)
    size = torch.linalg.vector_norm(v)
    if basis:
        q_mat = torch.stack(basis, 1)
        for _ in range(2):
            v = v - q_mat @ (q_mat.T @ v)
    floor = BREAKDOWN * (scale if scale else size.item()) * torch.linalg.vector_norm(g).item()
    norm = torch.linalg.vector_norm(v)
    return None if norm.item() <= max(floor, 1e-300) else v / norm


def top_eigenpairs(matvec, dim, steps, generator=None, device=None, relative_floor=1e-7):
    """Eigenvalues (descending) and eigenvectors [dim, r] of the operator's Ritz pairs above
    ``relative_floor`` x the largest: the operator's leading eigenpairs, exact when ``steps`` >= its rank."""
    q, t = lanczos(matvec, dim, steps, generator, device=device)
    if q.shape[1] == 0:
        return q.new_zeros(0), q
    values, vectors = torch.linalg.eigh(t)
    values, vectors = values.flip(0), vectors.flip(1)
    keep = values > relative_floor * values[0].clamp_min(0)
    return values[keep], q @ vectors[:, keep]
