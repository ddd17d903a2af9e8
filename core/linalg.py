"""One Cholesky jitter policy for every kernel or covariance matrix the library factorizes.

A matrix is tried with each jitter of a ladder in increasing order, the jitter times the matrix's |mean diagonal|
added to its diagonal, and keeps the first with which it factorizes; in a batch each matrix keeps its own, so it
factorizes as it would alone. Callers choose the ladder and what a failure means: the GP attention priors and
guides raise an error naming the site (``priors.gp_attention.cholesky``), FSVI gives its KL up as NaN with a
warning (``inference.guides.fsvi``).
"""
import torch


class NotPositiveDefinite(FloatingPointError):
    """A matrix holds non-finite values (``jitter`` None), or no jitter of the ladder factorized it (``jitter``: the
    largest tried, relative to its mean diagonal)."""

    def __init__(self, jitter):
        super().__init__("the matrix holds non-finite values" if jitter is None else
                         f"the matrix is not positive definite even with jitter {jitter:g} x its mean diagonal")
        self.jitter = jitter


def tenfold(first, largest):
    """The ladder ``first``, 10 ``first``, 100 ``first``, ... while at most ``largest``."""
    ladder = [first]
    while ladder[-1] * 10 <= largest:
        ladder.append(ladder[-1] * 10)
    return tuple(ladder)


def cholesky(matrix, jitters):
    """Lower Cholesky factors of [..., n, n] ``matrix`` and the jitter each took, by the policy above.

    ``jitters`` is the ladder, increasing (0 first tries the matrix as it is); a matrix of finite values whose
    factor ``torch.linalg.cholesky_ex`` reports a success has a finite factor (LAPACK stops at a NaN pivot). Returns
    (factor, jitter [...]); raises ``NotPositiveDefinite`` when the matrix holds non-finite values or a matrix never
    factorizes. Differentiable through torch's own Cholesky (a caller with a faster backward factors under
    ``torch.no_grad``).
    """
    if not torch.isfinite(matrix.detach().sum()):
        raise NotPositiveDefinite(None)
    size = matrix.diagonal(dim1=-2, dim2=-1).mean(-1).abs().clamp_min(torch.finfo(matrix.dtype).tiny)

    def shifted(jitter):
        out = matrix.clone()
        out.diagonal(dim1=-2, dim2=-1).add_((jitter * size)[..., None])
        return out
    factor, used = None, torch.full_like(size.detach(), torch.nan)  # NaN: no jitter has worked yet
    for jitter in jitters:
        attempt, info = torch.linalg.cholesky_ex(shifted(jitter))
        take = (info == 0) & used.isnan()
        if take.all():  # every matrix factorizes with this jitter, and none did with a smaller one
            return attempt, torch.full_like(used, jitter)
        factor = attempt if factor is None else torch.where(take[..., None, None], attempt, factor)
        used = torch.where(take, jitter, used)
        if not used.isnan().any():
            break
    else:
        raise NotPositiveDefinite(jitters[-1])
    if matrix.requires_grad and torch.is_grad_enabled():  # a failed attempt, merged in, would put NaN in the gradient
        factor = torch.linalg.cholesky(shifted(used))
    return factor, used
