"""Function-space VI: the regularized KL against dense formulas, the linearization against brute force."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

from inference import FitError, NonFiniteError, Posterior, elbo_terms, fit
from inference.guides import FSVI
from inference.guides.fsvi import KL_SITE, _cholesky, context_inputs, gaussian_kl, regularized_kl
from priors import GP, PriorError, parse
from zoo import TransformerClassifier


def dense_regularized_kl(mq, cq, mp, cp, gamma, m):
    """Quang's D^gamma written on the covariance operators (Gram / m on L2 of the m-point measure), numpy float64."""
    n = len(mq)
    a = cp / m + gamma * np.eye(n)  # C_p + gamma I
    b = cq / m + gamma * np.eye(n)  # C_q + gamma I
    d = mq - mp
    ratio = np.linalg.inv(a) @ b
    mean_term = d @ np.linalg.inv(a) @ d / m  # <d, (C_p + gamma I)^-1 d> in L2(rho_m): (1/m) sum over points
    return 0.5 * (mean_term + np.trace(ratio) - n - np.linalg.slogdet(ratio)[1])


def dense_kl(mq, cq, mp, cp):
    """The plain KL between two multivariate normals, numpy float64; +inf when cq is singular."""
    n = len(mq)
    sign, logdet_q = np.linalg.slogdet(cq)
    if sign <= 0:
        return math.inf
    d = mq - mp
    inv = np.linalg.inv(cp)
    return 0.5 * (np.trace(inv @ cq) + d @ inv @ d - n + np.linalg.slogdet(cp)[1] - logdet_q)


def gaussians(n=6, rank=None, seed=0):
    g = np.random.default_rng(seed)
    vq = g.normal(size=(n, rank or n))
    vp = g.normal(size=(n, n))
    return g.normal(size=n), vq @ vq.T, g.normal(size=n), vp @ vp.T + 0.1 * np.eye(n)


def t(*arrays):
    return [torch.as_tensor(a, dtype=torch.float64) for a in arrays]


@pytest.mark.parametrize("gamma,m", [(1e-3, 3), (0.1, 3), (1.0, 6)])
def test_regularized_kl_equals_the_dense_operator_formula(gamma, m):
    mq, cq, mp, cp = gaussians()
    got = regularized_kl(*t(mq, cq, mp, cp), gamma, m).item()
    assert got == pytest.approx(dense_regularized_kl(mq, cq, mp, cp, gamma, m), rel=1e-10)


def test_regularized_kl_is_finite_where_the_plain_kl_is_not():
    mq, cq, mp, cp = gaussians(rank=2)  # a degenerate (rank-2) covariance in 6 dimensions
    assert dense_kl(mq, cq, mp, cp) == math.inf
    values = [regularized_kl(*t(mq, cq, mp, cp), gamma, 3).item() for gamma in (1.0, 1e-2, 1e-4)]
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert values[0] < values[1] < values[2]  # and it grows without bound as gamma -> 0, as the plain KL is infinite


def test_regularized_kl_tends_to_the_plain_kl_as_gamma_goes_to_zero():
    mq, cq, mp, cp = gaussians(seed=1)
    plain = dense_kl(mq, cq, mp, cp)
    gaps = [abs(regularized_kl(*t(mq, cq, mp, cp), gamma, 3).item() - plain) for gamma in (1e-2, 1e-4, 1e-6, 1e-8)]
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-5 * plain
    assert gaussian_kl(*t(mq, cq, mp, cp)).item() == pytest.approx(plain, rel=1e-10)


def test_cholesky_retries_with_jitter_then_gives_up():
    v = torch.randn(5, 1, dtype=torch.float64)
    assert _cholesky(v @ v.T, "variational") is not None  # rank 1: positive definite once jitter is added
    with pytest.warns(UserWarning, match="not positive definite"):
        assert _cholesky(-torch.eye(5, dtype=torch.float64), "prior") is None
    with pytest.warns(UserWarning):
        assert math.isnan(gaussian_kl(*t(np.zeros(5), -np.eye(5), np.zeros(5), np.eye(5))).item())


def tiny(bayes="weights", **kwargs):
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=1, d_model=4, depth=1, heads=1, bayes=bayes, max_len=8, **kwargs)


def test_linearized_covariance_is_J_S_JT_by_brute_force():
    """Mean f(X; m) and covariance J S J^T against central finite differences, one weight at a time (float64)."""
    model = tiny().double()
    x = torch.randn(3, 7, 1, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    guide = FSVI(model, x[:2], torch.zeros(2, dtype=torch.long), mask[:2])
    with torch.no_grad():
        for rho in guide.rho.values():
            rho.uniform_(-5, 0)
    mean, cov = guide.linearized(x, mask)
    names, scales = guide.names, guide.scales()
    loc = {n: guide.loc[n.replace(".", "__")].detach() for n in names}

    def logits(params):  # class-major, as linearized() orders them
        return model.net(x, mask, params).transpose(-1, -2).reshape(*params[names[0]].shape[:-2], -1)

    with torch.no_grad():  # every weight moved by +-h in its own draw: one vectorized pass of 2P draws
        flat = torch.cat([loc[n].reshape(-1) for n in names])
        h, p = 1e-5, flat.numel()
        moved = torch.cat([flat + h * torch.eye(p, dtype=flat.dtype), flat - h * torch.eye(p, dtype=flat.dtype)])
        sizes = [loc[n].numel() for n in names]
        draws = {n: v.reshape(2 * p, *loc[n].shape) for n, v in zip(names, moved.split(sizes, -1))}
        f = logits(draws)
        jac = ((f[:p] - f[p:]) / (2 * h)).T  # [K M, P]
        variances = torch.cat([scales[n].detach().reshape(-1) for n in names]) ** 2
        brute = jac @ torch.diag(variances) @ jac.T
        assert torch.allclose(mean.reshape(-1), logits(loc), atol=1e-12)
    assert torch.allclose(cov, brute, rtol=1e-6, atol=1e-9 * brute.abs().max())
    # padded steps do not move the function: changing what the padding holds changes nothing
    x2 = x.clone()
    x2[1, 5:] = 100.0
    mean2, cov2 = guide.linearized(x2, mask)
    assert torch.allclose(mean2, mean) and torch.allclose(cov2, cov)


def test_the_jacobian_is_a_constant_of_the_step_unless_asked():
    """Same KL and scale gradients either way; by default the means' gradient is that of the KL with J S J^T
    held fixed (through f(X; m) alone), and jacobian_grad=True adds the path through J."""
    model = tiny().double()
    x = torch.randn(3, 7, 1, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[2, 4:] = False
    prior_cov = torch.as_tensor(gaussians(n=6)[3], dtype=torch.float64)

    def kl(mean, cov):
        return regularized_kl(mean.reshape(-1), cov, torch.zeros(6, dtype=torch.float64), prior_cov, 0.1, 3)

    grads, values = {}, {}
    for flag in (False, True):
        guide = FSVI(model, x[:2], torch.zeros(2, dtype=torch.long), mask[:2], jacobian_grad=flag)
        torch.manual_seed(1)
        with torch.no_grad():
            for rho in guide.rho.values():
                rho.uniform_(-3, 0)
        mean, cov = guide.linearized(x, mask)
        values[flag] = kl(mean, cov)
        grads[flag] = dict(zip(["loc", "rho"], [torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            values[flag], list(part.values()), retain_graph=True)]) for part in (guide.loc, guide.rho)]))
        if not flag:  # the KL with the covariance held fixed, differentiated through the mean function alone
            params = {n: guide.loc[n.replace(".", "__")] for n in guide.names}
            fixed = kl(model.net(x, mask, params).T, cov.detach())
            mean_only = torch.cat([g.reshape(-1) for g in torch.autograd.grad(fixed, list(guide.loc.values()))])
    assert torch.allclose(values[False], values[True], rtol=1e-12)
    assert torch.allclose(grads[False]["rho"], grads[True]["rho"], rtol=1e-9, atol=1e-12)
    assert torch.allclose(grads[False]["loc"], mean_only, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(grads[False]["loc"], grads[True]["loc"], rtol=1e-3)


def test_gp_kernels_respect_masks_and_sequence_structure():
    x = torch.randn(4, 12, 2)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[2, 9:] = False
    noisy = x.clone()
    noisy[2, 9:] = 50.0
    for features in ("series", "patch-mean", "spectrum"):
        for kernel in ("rbf", "matern12", "matern32", "matern52"):
            gp = GP(kernel=kernel, features=features, lengthscale=0.7, variance=2.0, segments=3)
            k = gp.gram(x.double(), mask)
            assert torch.allclose(k, k.T) and torch.allclose(k.diagonal(), torch.full((4,), 2.0, dtype=k.dtype))
            assert torch.linalg.eigvalsh(k).min() > 0
            assert torch.allclose(gp.gram(noisy.double(), mask), k)
    shifted = torch.roll(x, 5, dims=1)
    spectrum = GP(features="spectrum")
    assert torch.allclose(spectrum.embed(shifted), spectrum.embed(x), atol=1e-6)
    assert not torch.allclose(GP().embed(shifted), GP().embed(x))
    within = x.clone()
    within[:, [0, 1]] = within[:, [1, 0]]  # swap two steps inside the first of three patches
    paa = GP(features="patch-mean", segments=3)
    assert torch.allclose(paa.embed(within), paa.embed(x), atol=1e-6)


def test_gp_spec_round_trips():
    for spec in ("gp:kernel=rbf,lengthscale=1", "gp:kernel=matern32,features=patch-mean,segments=4,variance=3",
                 "gp:features=spectrum,lengthscale=0.5"):
        prior = parse(spec)
        assert isinstance(prior, GP) and parse(prior.spec()).spec() == prior.spec()


@pytest.mark.parametrize("spec,option", [("gp:kernel=cosine", "kernel"), ("gp:lengthscale=0", "lengthscale"),
                                         ("gp:lengthscale=-1", "lengthscale"), ("gp:variance=0", "variance"),
                                         ("gp:features=wavelet", "features")])
def test_bad_gp_parameters_are_refused_in_one_line(spec, option):
    with pytest.raises(PriorError, match=option) as error:
        parse(spec)
    assert "\n" not in str(error.value)


def data(n=12, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, 1, generator=g)
    y = (x[:, :3, 0].mean(1) > 0).long()
    return x, y


@pytest.mark.parametrize("options,word", [
    ({"gamma": 0}, "gamma"), ({"gamma": -1.0}, "gamma"), ({"context_points": 0}, "context_points"),
    ({"batch_points": -1}, "batch_points"), ({"context": "grid"}, "context"),
    ({"divergence": "wasserstein"}, "divergence"), ({"jacobian_grad": "yes"}, "jacobian_grad"),
    ({"prior": "gaussian:scale=1"}, "weight prior"),
    ({"prior": GP()}, "spec string")])
def test_bad_fsvi_options_are_refused_in_one_line(options, word):
    with pytest.raises(FitError, match=word) as error:
        fit(tiny(), data(), guide="fsvi", steps=1, progress=False, guide_options=options)
    assert "\n" not in str(error.value)


def test_a_gp_prior_has_no_meaning_for_a_weight_site(one_thread):
    with pytest.raises(FitError, match="weight site 'embed.weight'.*guide='fsvi'") as error:
        fit(tiny(prior="gp:kernel=rbf"), data(), guide="mean_field", steps=1, progress=False)
    assert str(error.value).splitlines()[0].endswith("guide='fsvi'")
    with pytest.raises(FitError, match="bayes='none'"):
        fit(tiny(bayes="none"), data(), guide="fsvi", steps=1, progress=False)
    with pytest.raises(FitError, match="prior_scale"):
        fit(tiny(prior="hierarchical"), data(), guide="fsvi", steps=1, progress=False)


def test_the_elbo_kl_is_the_function_space_kl_alone(one_thread):
    """The weight sites add exactly 0 to the ELBO's KL: it is the guide's D^gamma site alone."""
    model, (x, y) = tiny(), data()
    guide = FSVI(model, x[:2], y[:2], None, gamma=0.1)
    terms = elbo_terms(model, guide, x, y, None, 12, num_particles=3)
    site = terms.guide_trace.nodes[KL_SITE]
    assert site["infer"]["is_auxiliary"] and terms.kl > 0
    assert torch.allclose(terms.kl, site["fn"].log_density.reshape(-1)[0], rtol=1e-6)
    for name in guide.names:
        q, p = terms.guide_trace.nodes[name]["fn"], terms.model_trace.nodes[name]["fn"]
        assert torch.equal(kl_divergence(q, p), torch.zeros(3, 1))


def test_degeneracy_counts_a_function_space_kl_per_function_value(one_thread):
    """fsvi's KL compares K logits on M context points, not weights: the on-the-prior check divides it by K M."""
    from inference.degeneracy import kl_by_site

    posterior = fit(tiny(), data(), guide="fsvi", steps=3, progress=False, guide_options={"context_points": 5})
    kl, numbers, _ = kl_by_site(posterior, data()[0])
    assert list(numbers.values()) == [2 * 5] and list(kl.values())[0] > 0


def test_context_inputs_mix_and_box(one_thread):
    x = torch.randn(5, 6, 2)
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[0, 4:] = False
    for kind in ("mix", "uniform"):
        xc, mc = context_inputs(x, mask, 7, kind)
        assert xc.shape == (12, 6, 2) and mc.shape == (12, 6) and torch.equal(xc[:5], x)
        real = mask[..., None].expand_as(x)
        low = x.masked_fill(~real, math.inf).amin(0)
        high = x.masked_fill(~real, -math.inf).amax(0)
        assert ((xc[5:] >= low - 1e-6) & (xc[5:] <= high + 1e-6)).all()  # mixes and box draws stay in the range


def test_fsvi_fits_predicts_saves_and_loads(tmp_path, one_thread):
    model, (x, y) = tiny(bayes="last-layer", prior="gp:kernel=matern52,features=patch-mean,segments=3"), data()
    post = fit(model, (x, y), guide="fsvi", steps=30, lr=3e-2, progress=False,
               guide_options={"gamma": 0.05, "context_points": 4})
    assert isinstance(post, Posterior) and len(post.info["losses"]) == 30
    assert post.guide.prior.spec() == model.prior.spec()
    draws = post.sample(8)
    probs = post.predict(x, draws=draws)
    assert probs.shape == (8, 12, 2) and torch.allclose(probs.sum(-1), torch.ones(8, 12))
    assert probs.std(0).max() > 0  # draws differ: the weights are drawn from q
    loaded = Posterior.load(post.save(tmp_path / "fsvi.pt"))
    assert loaded.method == "fsvi" and loaded.guide.prior.spec() == model.prior.spec()
    assert torch.allclose(loaded.predict(x, draws=draws), probs, atol=1e-6)
    idata = post.to_arviz(x, y, num_samples=4)
    assert "head.weight" in idata.posterior and idata.posterior["loglik"].shape == (1, 4)


def test_a_failed_cholesky_stops_the_fit_naming_the_site_and_keeps_the_last_good_state(monkeypatch, one_thread):
    real = FSVI.linearized
    calls = []

    def breaks_at_step_3(self, x, mask=None):
        calls.append(1)
        mean, cov = real(self, x, mask)
        return mean, cov * math.nan if len(calls) >= 4 else cov

    monkeypatch.setattr(FSVI, "linearized", breaks_at_step_3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteError, match=f"step 3.*'{KL_SITE}'") as error:
            fit(tiny(bayes="last-layer"), data(), guide="fsvi", steps=10, progress=False)
    assert len(error.value.posterior.info["losses"]) == 3
