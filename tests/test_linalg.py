"""The one Cholesky jitter policy (core.linalg.cholesky) on matrices whose needed jitter is known in closed form.

``ones(n, n) - delta I`` has eigenvalues n - delta and -delta (n - 1 times) and mean diagonal 1 - delta: with
jitter j x its mean diagonal it is positive definite exactly when j (1 - delta) > delta.
"""
import math
import warnings

import pytest
import torch

from core import linalg
from core.linalg import NotPositiveDefinite, tenfold
from inference.guides.fsvi import CHOLESKY_JITTER, _cholesky
from priors import CholeskyError
from priors.gp_attention import cholesky as gp_cholesky

LADDER = tenfold(1e-9, 1e-2)  # 1e-9, 1e-8, ..., 1e-2


def short_of(delta, n=3):
    """ones(n, n) - delta I: rank-deficient PSD at delta = 0, indefinite for delta > 0."""
    return torch.ones(n, n, dtype=torch.float64) - delta * torch.eye(n, dtype=torch.float64)


def test_the_ladder_grows_tenfold_to_its_largest():
    assert len(LADDER) == 8 and LADDER[0] == 1e-9 and LADDER[-1] == pytest.approx(1e-2)
    assert all(b == 10 * a for a, b in zip(LADDER, LADDER[1:]))


def test_each_matrix_gets_the_smallest_jitter_that_works_as_it_would_alone():
    delta = 3e-6  # needs j > 3.00001e-6: 1e-6 is too small, 1e-5 the smallest rung that works
    batch = torch.stack([2 * torch.eye(3, dtype=torch.float64), short_of(delta), short_of(0.0)])
    factor, used = linalg.cholesky(batch, LADDER)
    assert used.tolist() == [LADDER[0], LADDER[4], LADDER[0]]
    for k, matrix in enumerate(batch):
        alone, jitter = linalg.cholesky(matrix, LADDER)
        assert torch.equal(factor[k], alone) and jitter == used[k]
        mean_diagonal = matrix.diagonal().mean()
        target = matrix + used[k] * mean_diagonal * torch.eye(3, dtype=torch.float64)
        assert torch.allclose(factor[k] @ factor[k].T, target, rtol=0, atol=1e-14)
    assert linalg.cholesky(short_of(0.0), (0.0, *LADDER))[1] == LADDER[0]  # singular: jitter 0 is not enough
    assert linalg.cholesky(2 * torch.eye(3, dtype=torch.float64), (0.0, *LADDER))[1] == 0.0  # none is needed


def test_a_hopeless_matrix_raises_with_the_largest_jitter_tried():
    with pytest.raises(NotPositiveDefinite) as error:
        linalg.cholesky(short_of(0.1), LADDER)  # needs j > 0.111, beyond the ladder
    assert error.value.jitter == LADDER[-1]
    with pytest.raises(NotPositiveDefinite) as error:
        linalg.cholesky(torch.full((2, 2), math.nan, dtype=torch.float64), LADDER)
    assert error.value.jitter is None


def test_each_caller_keeps_its_own_failure():
    hopeless = short_of(0.1)  # beyond the GP's MAX_JITTER = 1e-2 and FSVI's 1e-4 alike
    with pytest.raises(CholeskyError, match=r"site 'blocks.0.attn.gp' is not positive definite even with jitter "
                                            r"2e-03 x its mean diagonal"):
        gp_cholesky(hopeless, "blocks.0.attn.gp")  # 10 float64 epsilons, tenfold: 2.2e-3 is the last rung
    with pytest.warns(UserWarning, match=f"not positive definite even with jitter {CHOLESKY_JITTER[-1]:g}"):
        assert _cholesky(hopeless, "prior") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(_cholesky(short_of(3e-6), "prior"), linalg.cholesky(short_of(3e-6), (1e-4,))[0])


def test_a_batch_that_mixes_jitters_has_each_matrixs_own_gradient():
    """A failed attempt must not reach the gradient: each matrix's gradient is the one it has alone."""
    ladder = (0.0, *LADDER)  # the singular matrix's failed attempt at 0 has a zero pivot: L^-1 is infinite
    batch = torch.stack([2 * torch.eye(3, dtype=torch.float64), short_of(0.0)]).requires_grad_()
    weights = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    factor, used = linalg.cholesky(batch, ladder)
    assert used.tolist() == [0.0, LADDER[0]]
    gradient, = torch.autograd.grad((factor * weights).sum(), batch)
    for k in range(2):
        matrix = batch[k].detach().clone().requires_grad_()
        alone, = torch.autograd.grad((linalg.cholesky(matrix, ladder)[0] * weights[k]).sum(), matrix)
        assert torch.isfinite(alone).all() and torch.equal(gradient[k], alone)
