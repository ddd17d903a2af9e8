"""Gaussian-process attention (SGPA, decoupled SGPA, KEP-SVGP): closed forms in float64, masks, draws, fits, errors."""
import json
import math

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import kl_divergence

import inference
import priors
import zoo
from inference.elbo import elbo_terms
from inference.guides.gp import DecoupledPosterior, SGPAPosterior
from core.masks import restrict
from priors.gp_attention import GPPrior, cholesky, kernel_matrix
from zoo import cli
from zoo.models.gp_attention import site_name
from padded_data import padded_batch

FAMILIES = ("sgpa", "sgpa-decoupled", "kep-svgp")
PRIOR = {"sgpa": None, "sgpa-decoupled": "sgpa:kernel=ard", "kep-svgp": "kep:rank=3"}
OPTIONS = {"sgpa": {}, "sgpa-decoupled": {"inducing": 3}, "kep-svgp": {}}


def tiny_model(family, bayes=None, **kw):
    torch.manual_seed(0)
    return zoo.TransformerClassifier(2, input_dim=3, d_model=8, depth=2, heads=2, max_len=16, bayes=bayes or family,
                                     attention_prior=kw.pop("attention_prior", PRIOR[family]), **kw)


def tiny_guide(model, family, x, mask, **options):
    return inference.GUIDES[family](model, x, None, mask, **{**OPTIONS[family], **options})


def dense_kl(mean_q, cov_q, cov_p):
    """KL(N(mean_q, cov_q) || N(0, cov_p)) from the textbook formula, with dense solves and log-determinants."""
    n = cov_p.shape[-1]
    return 0.5 * (torch.linalg.solve(cov_p, cov_q).diagonal(dim1=-2, dim2=-1).sum(-1)
                  + (mean_q * torch.linalg.solve(cov_p, mean_q.unsqueeze(-1)).squeeze(-1)).sum(-1) - n
                  + torch.linalg.slogdet(cov_p)[1] - torch.linalg.slogdet(cov_q)[1])


def tiny_kernel(kind="exponential", heads=2, t=5, dims=3, inducing=4):
    """Float64 keys, inducing inputs, values and hyperparameters for one sequence."""
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(heads, t, dims, generator=g, dtype=torch.float64) * 0.7
    z = torch.randn(heads, inducing, dims, generator=g, dtype=torch.float64) * 0.7
    values = torch.randn(heads, t, dims, generator=g, dtype=torch.float64)
    log_ls = torch.randn(heads, dims, generator=g, dtype=torch.float64) * 0.2
    log_sf = torch.randn(heads, generator=g, dtype=torch.float64) * 0.2

    def k(a, b):
        return kernel_matrix(kind, a, b, log_ls, log_sf)
    return keys, z, values, k, g


# --- kernels and the GP prior ------------------------------------------------------------------------------

def test_kernels_match_their_definitions():
    keys, z, _, _, g = tiny_kernel()
    log_ls, log_sf = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, generator=g, dtype=torch.float64)
    ls, sf2 = log_ls.exp()[:, None, None, :], (2 * log_sf).exp()[:, None, None]
    a, b = keys[:, :, None, :] / ls, z[:, None, :, :] / ls
    assert torch.allclose(kernel_matrix("exponential", keys, z, log_ls, log_sf), sf2 * (a * b).sum(-1).exp())
    assert torch.allclose(kernel_matrix("ard", keys, z, log_ls, log_sf), sf2 * (-0.5 * (a - b).pow(2).sum(-1)).exp())


def test_gp_prior_density_is_the_multivariate_normal_on_real_tokens():
    keys, _, values, k, _ = tiny_kernel()
    mask = torch.tensor([True, True, True, False, True])
    cov = restrict(k(keys, keys), mask)
    prior = GPPrior(cov, 3, mask)
    value = values * mask[:, None]
    real = k(keys[:, mask], keys[:, mask])  # [H, 4, 4]
    mvn = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), real[:, None])
    expected = mvn.log_prob(value[:, mask].transpose(-1, -2)).sum()
    assert torch.allclose(prior.log_prob(value), expected)
    draw = prior.rsample((3,))
    assert draw.shape == (3, 2, 5, 3) and (draw[:, :, 3] == 0).all()


def test_cholesky_jitters_only_the_matrices_that_need_it_and_names_the_site_when_it_fails():
    good = torch.eye(3, dtype=torch.float64) * 2
    singular = torch.ones(3, 3, dtype=torch.float64)  # rank 1: needs jitter
    factor = cholesky(torch.stack([good, singular]), "blocks.0.attn.gp")
    assert torch.equal(factor[0], cholesky(good, "x"))  # the healthy matrix factorizes as it would alone
    assert torch.allclose(factor[1] @ factor[1].T, singular, atol=1e-6)
    with pytest.raises(priors.CholeskyError, match="'blocks.1.attn.gp' is not positive definite"):
        cholesky(-good, "blocks.1.attn.gp")
    with pytest.raises(priors.CholeskyError, match="non-finite"):
        cholesky(torch.full((2, 2), math.inf), "blocks.1.attn.gp")


def test_cholesky_gradient_equals_torchs():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 20, 6, dtype=torch.float64)
    k = (x @ x.transpose(-1, -2) + 0.5 * torch.eye(20, dtype=torch.float64)).requires_grad_()
    w = torch.randn(3, 2, 20, 20, dtype=torch.float64)
    ours, = torch.autograd.grad((cholesky(k, "s") * w).sum(), k)
    theirs, = torch.autograd.grad((torch.linalg.cholesky(k) * w).sum(), k)
    assert torch.allclose(ours, theirs, atol=1e-10)
    assert torch.autograd.gradcheck(lambda a: cholesky(a + a.transpose(-1, -2), "s"), (k[0, 0].detach().clone()
                                                                                        .requires_grad_(),))


# --- closed forms in float64 ----------------------------------------------------------------------------

def test_sgpa_kl_per_head_equals_the_dense_gaussian_kl_and_its_moments_the_svgp_formulas():
    keys, _, values, k, g = tiny_kernel()
    cov = k(keys, keys)
    log_scale = torch.randn(values.shape, generator=g, dtype=torch.float64) * 0.3
    q = SGPAPosterior(GPPrior(cov, 3), values, log_scale)
    # Exact SVGP with the keys as inducing inputs: q(u_d) = N(K v_d, K S_d K), S_d = L^-T diag(a_d^2) L^-1.
    chol = torch.linalg.cholesky(cov)
    inv = torch.cholesky_inverse(chol)
    for h in range(2):
        kls = []
        for d in range(3):
            s = torch.cholesky_inverse(chol[h]) @ chol[h] @ torch.diag(log_scale[h, :, d].exp() ** 2) @ chol[h].T \
                @ torch.cholesky_inverse(chol[h])
            mean_u, cov_u = cov[h] @ values[h, :, d], cov[h] @ s @ cov[h]
            mean_f = cov[h] @ inv[h] @ mean_u  # K_qk K_kk^-1 m_u, queries = keys
            cov_f = cov[h] - cov[h] @ inv[h] @ cov[h] + cov[h] @ inv[h] @ cov_u @ inv[h] @ cov[h]
            assert torch.allclose(q.mean[h, :, d], mean_f, atol=1e-10)
            assert torch.allclose(q.covariance()[h, d], cov_f, atol=1e-8)
            kls.append(dense_kl(mean_u, cov_u, cov[h]))
        head = SGPAPosterior(GPPrior(cov[h:h + 1], 3), values[h:h + 1], log_scale[h:h + 1])
        assert torch.allclose(head.kl(), sum(kls), rtol=1e-8)
    assert torch.allclose(kl_divergence(q, q.prior), q.kl())


def test_decoupled_sgpa_equals_an_svgp_over_keys_and_global_inducing_points():
    """Orthogonally decoupled = a standard SVGP with inducing inputs Z = (keys, global points), mean K_ZZ c and
    covariance K_ZZ + K_ZZ P^T A P K_ZZ; its KL and its moments at the queries must match that SVGP's."""
    keys, z, values, k, g = tiny_kernel("ard")
    m = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    s = torch.tril(torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * 0.3, -1) \
        + torch.diag_embed(torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.5)
    q = DecoupledPosterior(GPPrior(k(keys, keys), 3), values, k(keys, z), k(z, z), m, s, "site")
    big = torch.cat([keys, z], -2)
    k_zz, k_qz = k(big, big), k(keys, big)
    for h in range(2):
        kls = []
        kb = k(z, z)[h]
        lb = torch.linalg.cholesky(kb)
        for d in range(3):
            c = torch.cat([values[h, :, d], m[h, :, d] - torch.linalg.solve(kb, k(z, keys)[h] @ values[h, :, d])])
            a = torch.linalg.solve(kb, torch.linalg.solve(kb, lb @ s[h, d] @ s[h, d].T @ lb.T - kb).T).T
            p = torch.cat([torch.zeros(4, 5, dtype=torch.float64), torch.eye(4, dtype=torch.float64)], 1)
            mean_u, cov_u = k_zz[h] @ c, k_zz[h] + k_zz[h] @ p.T @ a @ p @ k_zz[h]
            proj = torch.linalg.solve(k_zz[h], k_qz[h].T).T
            assert torch.allclose(q.mean[h, :, d], proj @ mean_u, atol=1e-8)
            cov_f = k(keys, keys)[h] - proj @ k_qz[h].T + proj @ cov_u @ proj.T
            assert torch.allclose(q.covariance()[h, d], cov_f, atol=1e-7)
            kls.append(dense_kl(mean_u, cov_u, k_zz[h]))
        assert torch.allclose(torch.stack(kls).sum(), _decoupled_head_kl(q, h), rtol=1e-6)
    assert torch.allclose(q.kl(), sum(_decoupled_head_kl(q, h) for h in range(2)))


def _decoupled_head_kl(q, h):
    one = slice(h, h + 1)
    return DecoupledPosterior(GPPrior(q.prior.covariance[one], 3), q.values[one], q.cross[one],
                              q.inducing_covariance[one], q.inducing_values[one], q.scale_tril[one], "site").kl()


def random_kep():
    """A float64 KEP-SVGP model on the padded batch, its guide drawn N(0, 0.3^2): (x, mask, model, guide)."""
    x, mask, _ = padded_batch()
    model = tiny_model("kep-svgp").double()
    guide = tiny_guide(model, "kep-svgp", x.double(), mask).double()
    with torch.no_grad():
        for p in guide.parameters():
            p.normal_(0, 0.3)
    return x, mask, model, guide


def test_kep_kl_is_the_dense_kl_to_the_singular_value_prior():
    x, mask, model, guide = random_kep()
    with torch.no_grad():
        trace = poutine.trace(guide.local(model)).get_trace(x.double(), None, mask)
    site = trace.nodes[site_name(0)]
    q, p = site["infer"]["posterior"], site["fn"]
    lam = model.net.blocks[0].attn.kep.log_singular.exp()  # [H, r]
    loc, tril = guide.loc["blocks__0__attn__gp"], guide.scale_tril(site_name(0))
    expected = sum(dense_kl(loc[h, d], tril[h, d] @ tril[h, d].T, torch.diag(lam[h] ** 2))
                   for h in range(2) for d in range(3))
    assert torch.allclose(q.global_kl(), expected.expand(2), rtol=1e-8)
    assert torch.allclose(kl_divergence(q, p), expected.expand(2) / 2, rtol=1e-8)  # each of the 2 sequences: half


@pytest.mark.parametrize("family", ["sgpa", "sgpa-decoupled"])
def test_draws_have_the_closed_form_moments(family):
    keys, z, values, k, g = tiny_kernel()
    log_scale = torch.randn(values.shape, generator=g, dtype=torch.float64) * 0.3
    if family == "sgpa":
        q = SGPAPosterior(GPPrior(k(keys, keys), 3), values, log_scale)
    else:
        q = DecoupledPosterior(GPPrior(k(keys, keys), 3), values, k(keys, z), k(z, z), values[:, :4],
                               torch.diag_embed(torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.5), "site")
    torch.manual_seed(0)
    n = 20000
    draws = q.rsample((n,)).transpose(-1, -2)  # [n, H, D, T]
    centred = draws - q.mean.transpose(-1, -2)
    se = (q.covariance().diagonal(dim1=-2, dim2=-1) / n).sqrt()
    assert (centred.mean(0).abs() < 4.5 * se).all()
    empirical = torch.einsum("nhdt,nhds->hdts", centred, centred) / n
    var = q.covariance().diagonal(dim1=-2, dim2=-1)
    se_cov = ((var[..., :, None] * var[..., None, :] + q.covariance() ** 2) / n).sqrt()  # Gaussian: Var(x_i x_j)
    assert ((empirical - q.covariance()).abs() < 4.5 * se_cov).all()


def test_decoupled_inducing_outputs_are_one_draw_shared_by_the_batch():
    """Two sequences of a batch share the global inducing outputs: their draws covary by B S B^T, the global part's
    covariance, and each alone keeps its full covariance."""
    keys, z, values, k, g = tiny_kernel()
    s = torch.diag_embed(torch.rand(2, 3, 4, generator=g, dtype=torch.float64) + 0.5)
    two = [t.expand(2, *t.shape) for t in (k(keys, keys), values, k(keys, z), k(z, z))]
    q = DecoupledPosterior(GPPrior(two[0], 3), two[1], two[2], two[3], values[:, :4], s, "site", share=0.5)
    torch.manual_seed(0)
    n = 20000
    centred = (q.rsample((n,)) - q.mean).transpose(-1, -2)  # [n, 2, H, D, T]
    shared = q.projection[0].unsqueeze(-3) @ s  # [H, D, T, M]
    expected = shared @ shared.transpose(-1, -2)
    empirical = torch.einsum("nhdt,nhds->hdts", centred[:, 0], centred[:, 1]) / n
    var = q.covariance()[0].diagonal(dim1=-2, dim2=-1)
    se = ((var[..., :, None] * var[..., None, :] + expected ** 2) / n).sqrt()
    assert ((empirical - expected).abs() < 4.5 * se).all() and (expected.abs() > 10 * se).any()  # independent: ~0
    assert torch.allclose(q.kl(), q.local_kl() + 0.5 * q.global_kl())


# --- the model with the guides --------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_sites_are_local_and_padding_is_exact(family, one_thread):
    x, mask, alone = padded_batch()
    model = tiny_model(family)
    guide = tiny_guide(model, family, x, mask)
    with torch.no_grad():
        for p in guide.parameters():  # away from the initial values, so every part of the posterior matters
            p.add_(0.1 * torch.randn_like(p))

    def run(xi, mi, mean):  # per sequence, its local KL and the global KL (whole), each [B, layers]
        trace = poutine.trace(guide.local(model, mean=mean)).get_trace(xi, None, mi)
        posteriors = [trace.nodes[n]["infer"]["posterior"] for n in model.attention_sites]
        kl = torch.stack([torch.stack([q.local_kl() for q in posteriors], -1),
                          torch.stack([q.global_kl() for q in posteriors], -1)])
        return trace, kl

    with torch.no_grad():
        pyro.set_rng_seed(0)
        batch, _ = run(x, mask, mean=False)
        for name in model.attention_sites:
            site = batch.nodes[name]
            assert any(f.name == "data" for f in site["cond_indep_stack"])
            if family != "kep-svgp":  # the site is the attention output: padding tokens draw exactly 0
                assert (site["value"][1, :, 4:] == 0).all() and site["value"][1, :, :4].abs().min() > 0
        batch_mean, batch_kl = run(x, mask, mean=True)  # posterior-mean attention: deterministic
        for i, (xi, mi) in enumerate(alone):
            one, one_kl = run(xi, mi, mean=True)
            assert torch.allclose(one.nodes["_RETURN"]["value"], batch_mean.nodes["_RETURN"]["value"][i:i + 1],
                                  atol=1e-5)
            assert torch.allclose(one_kl, batch_kl[:, i:i + 1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_global_kl_counts_once_whatever_the_data_size_and_the_local_kl_scales_with_it(family, one_thread):
    """The ELBO's KL at each site, for the same batch of 2 from N = 10 and N = 1000 sequences: N/2 local KLs + the
    global KL once. KEP is global only (equal at both sizes), SGPA local only (100 times larger at N = 1000)."""
    x, mask, _ = padded_batch()
    model = tiny_model(family)
    guide = tiny_guide(model, family, x, mask)
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))

    def kl_sites(n):
        pyro.set_rng_seed(0)  # the same draws at both sizes
        with torch.no_grad():
            terms = elbo_terms(model, guide, x, torch.tensor([0, 1]), mask, n)
        return terms.kl_sites, terms.model_trace

    (small, trace), (large, _) = kl_sites(10), kl_sites(1000)
    for name in model.attention_sites:
        q = trace.nodes[name]["infer"]["posterior"]
        local, whole = q.local_kl().sum(), q.global_kl()[0]
        assert torch.allclose(small[name], 5 * local + whole) and torch.allclose(large[name], 500 * local + whole)
        if family == "kep-svgp":
            assert torch.allclose(small[name], large[name]) and small[name] > 0
        if family == "sgpa":
            assert torch.allclose(large[name], 100 * small[name]) and small[name] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_draws_vectorized_over_samples_equal_a_loop_over_single_draws(family, one_thread):
    x, mask, _ = padded_batch()
    model = tiny_model(family, bayes=f"{family},last-layer")
    guide = tiny_guide(model, family, x, mask)
    s = 3
    with torch.no_grad():
        with pyro.plate("samples", s, dim=-2):
            weights = poutine.trace(guide).get_trace(x, None, mask)
            run = poutine.replay(guide.local(model), trace=weights)
            trace = poutine.trace(run).get_trace(x, None, mask)
        logits = trace.nodes["_RETURN"]["value"]
        assert logits.shape == (s, 2, 2)
        assert not torch.allclose(logits[0], logits[1])  # fresh attention per draw
        for i in range(s):
            values = {n: trace.nodes[n]["value"][i, 0] if n in model.sites else trace.nodes[n]["value"][i]
                      for n in [*model.sites, *model.attention_sites]}
            single = poutine.condition(model, values)(x, None, mask)
            assert torch.allclose(single, logits[i], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_predict_save_load_and_arviz(family, tmp_path, one_thread):
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model(family)
    post = inference.fit(model, (x, y, mask), guide=family, steps=3, lr=1e-2, num_particles=2, progress=False,
                         guide_options=OPTIONS[family])
    assert all(math.isfinite(v) for v in post.info["losses"])
    pyro.set_rng_seed(3)
    probs = post.predict(x, 4, mask)
    assert probs.shape == (4, 2, 2) and probs.std(0).max() > 0
    assert post.sample(4) == {}  # attention-only: no global sites
    path = post.save(tmp_path / "post.pt")
    loaded = inference.Posterior.load(path)
    pyro.set_rng_seed(3)
    assert torch.allclose(loaded.predict(x, 4, mask), probs, atol=1e-6)
    idata = post.to_arviz(x, y, mask, num_samples=4)
    assert idata.posterior_predictive["probs"].shape == (1, 4, 2, 2)


def test_kernel_hyperparameters_are_sites_a_prior_map_reaches():
    x, mask, _ = padded_batch()
    prior = {"blocks.*.attn.kernel.log_lengthscale": "gaussian:scale=0.5", "*": "gaussian:scale=2"}
    model = tiny_model("sgpa", bayes="sgpa,blocks.*.attn.kernel.*", prior=prior)
    assert model.sites["blocks.0.attn.kernel.log_lengthscale"].role == "kernel"
    assert model.priors["blocks.1.attn.kernel.log_lengthscale"].scale == 0.5
    assert model.priors["blocks.1.attn.kernel.log_scale"].scale == 2
    post = inference.fit(model, (x, torch.tensor([0, 1]), mask), guide="sgpa", steps=2, progress=False)
    draws = post.sample(5)
    assert draws["blocks.0.attn.kernel.log_lengthscale"].shape == (5, 2, 4)
    assert post.predict(x, 5, mask).shape == (5, 2, 2)


def test_exponential_kernel_mean_is_softmax_free_kernel_attention():
    """With a unit signal scale and lengthscale dh^(1/4), the posterior mean is exp(k k^T / sqrt(dh)) v."""
    x, _, _ = padded_batch()
    model = tiny_model("sgpa", attention_prior="sgpa:scale=1")
    guide = tiny_guide(model, "sgpa", x, None)
    with torch.no_grad():
        trace = poutine.trace(guide.local(model, mean=True)).get_trace(x, None, None)
    context = trace.nodes[site_name(0)]["infer"]["attention"]
    k, v = context.keys, context.values
    expected = ((k @ k.transpose(-1, -2)) / math.sqrt(k.shape[-1])).exp() @ v
    assert torch.allclose(trace.nodes[site_name(0)]["value"], expected, rtol=1e-5)


def test_kep_adds_its_ksvd_regularizer_and_its_rank_shapes_the_sites():
    x, mask, _ = padded_batch()
    model = tiny_model("kep-svgp", attention_prior="kep:rank=2,ksvd=0.5")
    trace = poutine.trace(tiny_guide(model, "kep-svgp", x, mask).local(model)).get_trace(x, None, mask)
    u = trace.nodes[site_name(0)]["value"]
    assert u.shape == (2, 2, 2, 2) and torch.equal(u[0], u[1])  # global: one draw shared by the batch
    factor = trace.nodes["blocks.0.attn.ksvd"]
    assert factor["is_observed"] and factor["fn"].log_prob(factor["value"]).shape == (2,)
    assert "blocks.0.attn.ksvd" not in poutine.trace(tiny_model("kep-svgp", attention_prior="kep:rank=2,ksvd=0"))\
        .get_trace(x, None, mask).nodes


# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, error, words", [
    (lambda: tiny_model("sgpa", attention_prior="sgpa:kernel=matern"), priors.PriorError, ["kernel 'matern'", "ard"]),
    (lambda: tiny_model("sgpa", attention_prior="sgpa:lengthscale=0"), priors.PriorError, ["'lengthscale'", "0"]),
    (lambda: tiny_model("sgpa", attention_prior="sgpa:lengthscale=-1"), priors.PriorError, ["'lengthscale'"]),
    (lambda: tiny_model("kep-svgp", attention_prior="kep:rank=17"), zoo.ModelError, ["rank=17", "16 tokens"]),
    (lambda: tiny_model("sgpa", attention_prior="kep"), zoo.ModelError, ["does not serve sgpa"]),
    (lambda: tiny_model("sgpa", bayes="sgpa,attention"), zoo.ModelError, ["two attention families"]),
])
def test_bad_options_are_one_line_errors_naming_the_option(build, error, words):
    with pytest.raises(error) as info:
        build()
    message = str(info.value)
    assert len(message.splitlines()) == 1 and all(w in message for w in words)


@pytest.mark.parametrize("family, options, words", [
    ("sgpa-decoupled", {"inducing": 8}, ["inducing=8", "7 tokens"]),
    ("sgpa-decoupled", {"inducing": 0}, ["inducing"]),
    ("kep-svgp", {}, ["rank=8", "7 tokens"]),
    ("sgpa", {"init_scale": 0}, ["init_scale"]),
    ("sgpa", {"weights": "sgpa"}, ["not a weight-space guide"]),
])
def test_guides_refuse_bad_options_naming_them(family, options, words):
    x, mask, _ = padded_batch()
    model = tiny_model(family, attention_prior="kep:rank=8" if family == "kep-svgp" else None)
    with pytest.raises(inference.FitError) as info:
        inference.fit(model, (x, torch.tensor([0, 1]), mask), guide=family, steps=1, progress=False,
                      guide_options=options)
    assert len(str(info.value).splitlines()) == 1 and all(w in str(info.value) for w in words)


def test_a_kernel_that_cannot_be_factorized_stops_the_fit_naming_the_site_and_keeping_the_last_state(one_thread):
    x, mask, _ = padded_batch()
    data = (x, torch.tensor([0, 1]), mask)
    one_step = inference.fit(tiny_model("sgpa"), data, guide="sgpa", steps=1, lr=1e3, progress=False)
    with pytest.raises(inference.NonFiniteError, match=r"'blocks\.\d\.attn\.gp'.*step 1") as info:
        inference.fit(tiny_model("sgpa"), data, guide="sgpa", steps=3, lr=1e3, progress=False)  # the step explodes
    kept, good = info.value.posterior, one_step
    for a, b in ((kept.model, good.model), (kept.guide, good.guide)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_command_line_fits_gp_attention_and_refuses_a_bad_kernel_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["fit", "--guide", "sgpa-decoupled", "--bayes", "sgpa-decoupled", "--option", "inducing=4",
                     "--attention-prior", "sgpa:kernel=ard", "--steps", "2", "--d-model", "8", "--depth", "1",
                     "--heads", "2", "--num-samples", "2", "--out", str(out)]) == 0
    assert "sgpa:kernel=ard" in json.loads((out / "run.json").read_text())["config"]["model"]["attention_prior"]
    assert inference.Posterior.load(out / "posterior.pt").method == "sgpa-decoupled"
    capsys.readouterr()
    assert cli.main(["fit", "--guide", "sgpa", "--bayes", "sgpa", "--attention-prior", "sgpa:kernel=rbf",
                     "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kernel 'rbf'" in err


@pytest.mark.slow
def test_sgpa_on_italy_power_demand_beats_map_nll():
    from zoo import data, recipes

    ds = data.load()
    results = {}
    for row in [r for r in recipes.STUDY if r["label"] in ("map", "sgpa attention")]:
        torch.manual_seed(0)
        model = zoo.TransformerClassifier(ds.num_classes, input_dim=1, **row.get("model", {}),
                                          bayes=row.get("bayes", "weights"), prior=row.get("prior", recipes.PRIOR))
        post = inference.fit(model, ds.train, guide=row["guide"], progress=False,
                             **recipes.fit_options(row["guide"], **row.get("options", {})))
        pyro.set_rng_seed(1)
        results[row["guide"]] = inference.evaluate(post.predict(ds.test.x, 100, batch_size=256), ds.test.y)
    assert results["sgpa"]["accuracy"] >= 0.95
    assert results["sgpa"]["nll"] < results["map"]["nll"]


def test_a_global_latent_counts_its_numbers_and_its_kl_once_per_fit():
    """KEP's u is one draw shared by the batch: the degeneracy check divides its (whole) KL by H r D numbers,
    not by B copies of them, so a fit's KL per attention number does not shrink with the batch."""
    from inference.degeneracy import kl_by_site
    x, mask, model, guide = random_kep()
    posterior = inference.Posterior(model, "kep-svgp", guide=guide)
    kl, numbers, _ = kl_by_site(posterior, x.double(), mask)
    heads, rank, dims = guide.loc["blocks__0__attn__gp"].shape
    assert numbers[site_name(0)] == heads * rank * dims
    trace = poutine.trace(guide.local(model)).get_trace(x.double(), None, mask)
    assert kl[site_name(0)] == pytest.approx(float(trace.nodes[site_name(0)]["infer"]["posterior"].global_kl()[0].detach()),
                                             rel=1e-6)
