"""The many-chain reference: closed forms, nested R-hat by its definition, superchains, bad input (MCLMC itself:
test_mclmc.py)."""
import math
import re

import numpy as np
import pytest
import torch

from inference import FitError, fit, function_space
from inference.mcmc import by_chain, chain_start, convergence, mode_variance, nested_rhat, predictive_distance
from inference.mcmc.potential import LogDensity
from inference.mcmc.reference import ensemble, member_seeds
from priors import Gaussian
from zoo import BayesianLinearRegression, TransformerClassifier
from zoo.models.linear import exact_posterior
from linear_data import assert_gaussian_moments, regression

pytestmark = pytest.mark.usefixtures("one_thread")


def ess_of(draws):
    """Bulk ESS of each coordinate of draws [C, S, D] (ArviZ, all chains together)."""
    return np.array([convergence(draws[..., i])["ess_bulk_min"] for i in range(draws.shape[-1])])


def nested_rhat_by_definition(chains):
    """Margossian et al. (2024), eq. 4-8, written out with loops, for one quantity: chains[k][m] = draws."""
    k_, m_, n_ = len(chains), len(chains[0]), len(chains[0][0])
    chain_mean = [[sum(c) / n_ for c in sup] for sup in chains]
    sup_mean = [sum(cm) / m_ for cm in chain_mean]
    overall = sum(sup_mean) / k_
    between = sum((s - overall) ** 2 for s in sup_mean) / (k_ - 1)
    within = 0.0
    for k in range(k_):
        b = sum((cm - sup_mean[k]) ** 2 for cm in chain_mean[k]) / (m_ - 1) if m_ > 1 else 0.0
        w = (sum(sum((v - chain_mean[k][m]) ** 2 for v in chains[k][m]) / (n_ - 1) for m in range(m_)) / m_
             if n_ > 1 else 0.0)
        within += (b + w) / k_
    return math.sqrt(1 + between / within)


@pytest.mark.parametrize("k,m,n", [(4, 3, 5), (3, 1, 6), (5, 4, 1)])
def test_nested_rhat_matches_its_definition(k, m, n):
    values = np.random.default_rng(0).normal(size=(k * m, n, 2))
    got = nested_rhat(values, k)
    for e in range(2):
        chains = [[list(values[s * m + j, :, e]) for j in range(m)] for s in range(k)]
        assert math.isclose(got[e], nested_rhat_by_definition(chains), rel_tol=1e-10)


def test_nested_rhat_flags_one_stuck_superchain():
    """Many short chains: all mixed gives nested R-hat about 1; one superchain stuck elsewhere is flagged."""
    rng = np.random.default_rng(1)
    mixed = rng.normal(size=(8 * 4, 20, 3))  # 8 superchains of 4 chains of 20 draws
    assert np.abs(nested_rhat(mixed, 8) - 1).max() < 0.02
    stuck = mixed.copy()
    stuck[:4] += 1.5  # superchain 0 never left its start
    assert nested_rhat(stuck, 8).min() > 1.05
    summary = convergence(stuck, superchains=8)
    assert summary["nrhat_max"] > 1.05 and summary["between_mode_share"] > 0.15
    assert convergence(mixed, superchains=8)["between_mode_share"] < 0.02
    with pytest.raises(ValueError):
        nested_rhat(mixed, 5)


def test_nested_rhat_of_iid_and_stuck_chains_matches_its_expectation():
    """E[R^2 - 1] = E[B] / E[W]: 1 / (M (N + 1)) for iid draws, plus delta^2 / K with one superchain shifted by delta.

    Averaged over 4000 iid entries; the tolerance is 4 Monte Carlo standard errors of
    that average (B is a variance of K superchain means: relative sd sqrt(2 / (K - 1))).
    """
    k, m, n, entries, delta = 8, 4, 20, 4000, 1.5
    mixed = np.random.default_rng(2).normal(size=(k * m, n, entries))
    tolerance = 4 * np.sqrt(2 / (k - 1) / entries)
    excess = nested_rhat(mixed, k) ** 2 - 1
    assert abs(excess.mean() * m * (n + 1) - 1) < tolerance
    stuck = mixed.copy()
    stuck[:m] += delta
    assert nested_rhat(stuck, k).min() > 1.05  # each entry flags the stuck superchain
    expected = (delta**2 / k + 1 / (m * n)) / (1 + 1 / n)
    assert abs((nested_rhat(stuck, k) ** 2 - 1).mean() / expected - 1) < tolerance  # the shift only narrows B's spread


def test_mode_variance_splits_the_total_variance_between_and_within_superchains():
    """Two superchains at -a and +a, each spreading +-s around its centre: between a^2, within s^2, exactly."""
    a, s = 0.3, 0.1
    draws = np.array([[-a - s, -a + s], [-a + s, -a - s], [a - s, a + s], [a + s, a - s]])[..., None]  # [C=4, D=2, 1]
    split = mode_variance(draws, 2)
    assert math.isclose(split["between_mode"], a**2) and math.isclose(split["within_mode"], s**2)
    assert math.isclose(split["between_mode_share"], a**2 / (a**2 + s**2))
    # on random draws [C, D, N, K] the two parts add up to the variance of all draws, entry by entry averaged
    values = np.random.default_rng(3).normal(size=(6, 5, 4, 2)) + 3 * (np.arange(6)[:, None, None, None] // 2)
    split = mode_variance(values, 3)
    assert math.isclose(split["between_mode"] + split["within_mode"],
                        values.reshape(30, -1).var(axis=0).mean(), rel_tol=1e-12)
    assert split["between_mode_share"] > 0.7  # superchain means 0, 3, 6 (variance 6), draws spread 1: share ~6/7
    with pytest.raises(ValueError, match="superchains"):
        mode_variance(values, 4)


def test_reference_matches_the_conjugate_posterior_within_monte_carlo_error():
    """MCLMC from a two-member ensemble, 8 chains: mean within 4 MCSE, covariance within 5 standard errors."""
    x, y = regression()
    model = BayesianLinearRegression(3, noise_scale=0.5, prior=Gaussian(1.0))
    post = fit(model, (x, y), guide="reference", steps=100, num_members=2, num_chains=8, warmup=200,
               num_samples=100, thin=2, progress=False)
    mean, cov = exact_posterior(x, y, 0.5, 1.0)
    w = post.draws["weight"].double()
    assert w.shape == (8 * 100, 3) and post.info["superchains"] == 2 and post.info["chains"] == 8
    ess = ess_of(by_chain(w, 8))
    assert ess.min() > 200
    assert_gaussian_moments(w, mean, cov, ess)


def test_the_batched_ensemble_is_each_members_map_fit():
    """All members in one batch: the conjugate MAP (the posterior mean), and the same path as ``fit(guide="map")``."""
    x, y = regression()
    linear = BayesianLinearRegression(3, noise_scale=0.5)
    options = {"seed": 0, "num_members": 2, "steps": 400, "lr": 0.05, "progress": False, "temperature": 1.0}
    members = ensemble(linear, LogDensity(linear, (x, y, None)), options)
    assert torch.allclose(members.double(), exact_posterior(x, y, 0.5, 1.0)[0].expand(2, 3), atol=1e-3)
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8)
    xt, yt = torch.randn(12, 8, 1), torch.randint(0, 2, (12,))
    density = LogDensity(model, (xt, yt, None))
    options.update(seed=3, steps=20, lr=1e-2)
    batched = ensemble(model, density, options)
    for k, s in enumerate(member_seeds(3, 2)):
        alone = chain_start(model, (xt, yt, None), "map", 20, 1e-2, 1.0, s)
        assert torch.allclose(batched[k], density.flatten({n: v[None] for n, v in alone.items()})[0], atol=1e-4)


@pytest.mark.parametrize("sampler", ["mclmc", "nuts"])
def test_reference_on_a_transformer_records_superchains(sampler):
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8)
    x, y = torch.randn(12, 8, 1), torch.randint(0, 2, (12,))
    options = {"mclmc": dict(warmup=40, num_samples=5, thin=2), "nuts": dict(warmup=3, num_samples=5, max_tree_depth=2,
                                                                             dense_mass=False, jit_compile=False)}
    post = fit(model, (x, y), guide="reference", steps=5, num_members=2, num_chains=4, sampler=sampler,
               progress=False, **options[sampler])
    assert post.method == "reference" and post.info["sampler"] == sampler
    assert post.info["chains"] == 4 and post.info["superchains"] == 2 and post.info["chains_per_superchain"] == 2
    assert set(post.draws) == set(model.sites) and post.draws["head.weight"].shape == (20, 2, 4)
    assert post.info["sample_stats"]["diverging"].shape == (4, 5)
    diag = function_space(post, x)
    p1 = post.predict(x)[..., 1].double().reshape(4, 5, 12)  # p(class 1) [chain, draw, point], chains stored in turn
    by_definition = [nested_rhat_by_definition([[p1[c, :, e].tolist() for c in (2 * k, 2 * k + 1)] for k in (0, 1)])
                     for e in range(12)]
    assert diag["entries"] == 12 and diag["nrhat_max"] == pytest.approx(max(by_definition), rel=1e-9)
    assert math.isclose(diag["between_mode"] + diag["within_mode"],
                        post.predict(x)[..., 1].double().var(0, unbiased=False).mean().item(), rel_tol=1e-4)
    idata = post.to_arviz(x, y)
    assert idata.posterior.sizes["chain"] == 4
    assert idata.posterior_predictive["superchain"].values.tolist() == [0, 0, 1, 1]
    assert idata.sample_stats["superchain"].values.tolist() == [0, 0, 1, 1]


def test_two_members_start_different_superchains_and_seeds_change_the_ensemble():
    torch.manual_seed(0)
    x, y = torch.randn(12, 8, 1), torch.randint(0, 2, (12,))
    options = dict(steps=5, num_members=2, num_chains=2, warmup=0, num_samples=1, thin=1, progress=False)

    def first_draws(seed):
        model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8)
        return fit(model, (x, y), guide="reference", seed=seed, **options).draws["head.weight"]
    a, b = first_draws(0), first_draws(1)
    assert not torch.allclose(a[0], a[1], atol=1e-2)  # members differ
    assert not torch.allclose(a, b, atol=1e-2)  # runs with different seeds share no member


@pytest.mark.parametrize("option,named", [
    (dict(num_members=2, num_chains=3), "num_chains"), (dict(num_members=4, num_chains=2), "num_chains"),
    (dict(num_members=1, num_chains=4), "num_members"), (dict(step_size=0.0), "step_size"),
    (dict(step_size=-1e-3), "step_size"), (dict(num_samples=0), "num_samples"), (dict(thin=0), "thin"),
    (dict(warmup=-1), "warmup"), (dict(sampler="hmc"), "sampler"), (dict(integrator="euler"), "integrator"),
    (dict(max_memory=1000), "max_memory"),
    (dict(sampler="nuts", max_memory=38500), "dense_mass"),  # 38,400 bytes of draws fit; the dense mass does not
])
def test_reference_rejects_bad_input_in_one_line_naming_the_option(option, named):
    x, y = regression()
    with pytest.raises(FitError) as error:
        fit(BayesianLinearRegression(3), (x, y), guide="reference", progress=False, **option)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_reference_refuses_attention_sites():
    model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8, bayes="attention")
    x, y = torch.randn(6, 8, 1), torch.randint(0, 2, (6,))
    with pytest.raises(FitError, match="local sites"):
        fit(model, (x, y), guide="reference", steps=2, progress=False)


@pytest.mark.slow
def test_superchains_in_worker_processes_match_one_process():
    """``workers=2`` splits the superchains over processes; each keeps its own random numbers: the same draws."""
    x, y = regression()
    options = dict(guide="reference", steps=50, num_members=2, num_chains=4, warmup=30, num_samples=5, thin=2,
                   progress=False)
    one = fit(BayesianLinearRegression(3, noise_scale=0.5), (x, y), **options)
    two = fit(BayesianLinearRegression(3, noise_scale=0.5), (x, y), workers=2, **options)
    assert torch.allclose(one.draws["weight"], two.draws["weight"], atol=1e-6)


def test_distance_to_the_reference_takes_posteriors_and_inputs():
    """``predictive_distance(posterior, reference, x)``: the column every study method gets."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 8, 1), torch.randint(0, 2, (10,))
    model = TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8)
    reference = fit(model, (x, y), guide="reference", steps=5, num_members=2, num_chains=2, warmup=0, num_samples=3,
                    thin=1, progress=False)
    point = fit(TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, max_len=8), (x, y), guide="map",
                steps=5, progress=False)
    d = predictive_distance(point, reference, x)
    assert d == predictive_distance(point.predict(x), reference.predict(x))
    assert d["tv"] > 0 and d["kl"] > 0 and predictive_distance(reference, reference, x)["tv"] == 0.0
    with pytest.raises(ValueError, match="inputs x"):
        predictive_distance(point, reference)


@pytest.mark.slow
def test_bench_reference_prints_its_figures(capsys):
    """``bzoo bench reference`` on a tiny budget: two runs, and every figure of the issue as name=value."""
    from benchmarks.reference import main
    assert main(["--d-model", "4", "--heads", "1", "--members", "2", "--chains", "4", "--warmup", "20", "--draws",
                 "5", "--thin", "1", "--map-steps", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    figures = {k: float(v) for k, v in (line.split("=") for line in out.splitlines() if line.count("=") == 1
                                        and " " not in line)}
    assert {"rhat", "ess", "agreement", "wall", "cpu", "load"} <= set(figures)
    # rhat is run 1's worst nested R-hat; agreement compares two seeds' ensembles, whose predictions differ
    assert figures["rhat"] == pytest.approx(float(re.search(r"run 1: function space: nested R-hat max (\S+) ", out)[1]),
                                            rel=1e-3)
    assert figures["agreement"] > 0
    met = re.search(r"; met: (.*)$", out, re.MULTILINE)[1].split(", ")
    assert ("rhat" in met) == (figures["rhat"] <= 1.05) and ("agreement" in met) == (figures["agreement"] <= 0.01)
