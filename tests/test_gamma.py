"""priors.gamma: threaded Gamma draws are Gamma draws, follow the seed not the thread count, and keep torch's gradient."""
import pytest
import scipy.stats
import torch

from priors.gamma import CHUNK, standard_gamma, standard_gamma_grad


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("alpha", [0.1, 0.7, 3.0])
def test_threaded_draws_match_scipy_gamma(alpha):
    torch.manual_seed(0)
    n = 2 * CHUNK + 17  # three chunks, one ragged
    g = standard_gamma(torch.full((n,), alpha))
    # Independent chunks: a KS test on each chunk and on the whole sample (fixed seed, so the p-values are fixed too).
    for part in (g, *g.split(CHUNK)):
        assert scipy.stats.kstest(part.numpy(), scipy.stats.gamma(alpha).cdf).pvalue > 1e-3


def test_chunks_are_independent_streams():
    torch.manual_seed(0)
    a, b, _ = standard_gamma(torch.full((3 * CHUNK,), 2.0)).split(CHUNK)
    assert not torch.equal(a, b)
    assert abs(scipy.stats.pearsonr(a.numpy(), b.numpy()).statistic) < 4 / CHUNK ** 0.5  # 4 standard errors


def test_draws_follow_the_seed_not_the_thread_count(threads):
    alpha = torch.rand(3, CHUNK) * 2 + 0.1
    draws = []
    for n in (1, 2, 2):
        threads(n)
        torch.manual_seed(5)
        draws.append(standard_gamma(alpha))
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[1], draws[2])


def test_threaded_gradient_is_torchs_implicit_gradient(threads):
    threads(2)
    torch.manual_seed(0)
    alpha = torch.rand(2, CHUNK + 3) * 5 + 0.05
    g = torch._standard_gamma(alpha)
    assert torch.equal(standard_gamma_grad(alpha, g), torch._standard_gamma_grad(alpha, g))
