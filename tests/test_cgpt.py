"""Correlated-GP attention (CGPT, sparse CGPT): closed forms against NumPy/SciPy in float64, padding, the objective,
draws, persistence and one-line errors."""
import json
import math

import numpy as np
import pyro
import pytest
import scipy.linalg
import torch
from pyro import poutine
from scipy.spatial.distance import cdist

import inference
import priors
import zoo
from inference.elbo import elbo_terms
from priors.cgpt import full_conditional, sparse_conditional
from priors.gp_attention import lower_inverse, triangular_inverse
from zoo import cli
from zoo.models.gp_attention import site_name
from padded_data import padded_batch

FAMILIES = ("cgpt", "cgpt-sparse")
PRIOR = {"cgpt": None, "cgpt-sparse": "cgpt-sparse:inducing=3"}


def tiny_model(family, **kw):
    torch.manual_seed(0)
    return zoo.TransformerClassifier(2, input_dim=3, d_model=8, depth=2, heads=2, max_len=16,
                                     bayes=kw.pop("bayes", family),
                                     attention_prior=kw.pop("attention_prior", PRIOR[family]), **kw)


def inputs(heads=2, t=5, dims=3, inducing=4):
    """Float64 queries, keys, X0, values, inducing inputs and log scales (s_q s_k < 1 in the second head)."""
    g = torch.Generator().manual_seed(0)
    q, k, x0, v = (torch.randn(heads, t, dims, generator=g, dtype=torch.float64) * 0.8 for _ in range(4))
    z = torch.randn(heads, inducing, dims, generator=g, dtype=torch.float64) * 0.8
    return q, k, x0, v, z, torch.tensor([0.3, -0.6], dtype=torch.float64), torch.tensor([0.2, -0.4],
                                                                                      dtype=torch.float64)


def rbf(a, b):
    return np.exp(-0.5 * cdist(a, b, "sqeuclidean"))


def conditioned(joint, observed, value):
    """Mean and covariance of the first block of a zero-mean Gaussian ``joint`` given its last ``observed`` = value."""
    n = joint.shape[0] - observed
    gain = scipy.linalg.solve(joint[n:, n:], joint[n:, :n], assume_a="pos").T
    return gain @ value, joint[:n, :n] - gain @ joint[n:, :n]


# --- closed forms -------------------------------------------------------------------------------------------

def test_cross_covariance_and_conditional_equal_gaussian_conditioning_of_the_correlated_gps():
    """The joint of z_q(Q) and z_k(K) built from the shared GP (NumPy), conditioned by SciPy on z_k(K) = K_kk v."""
    q, k, x0, v, _, lq, lk = inputs()
    fn = full_conditional(q, k, x0, v, None, lq, lk, "site")
    for h in range(2):
        qn, kn, xn, vn = (t[h].numpy() for t in (q, k, x0, v))
        sq, sk = math.exp(lq[h]), math.exp(lk[h])
        project_q = scipy.linalg.solve(rbf(xn, xn), rbf(xn, qn), assume_a="pos").T  # k(Q, X0) K_0^-1
        project_k = scipy.linalg.solve(rbf(xn, xn), rbf(xn, kn), assume_a="pos").T
        cross = sq * sk * project_q @ rbf(xn, xn) @ project_k.T  # Cov(s_q P_q z_0, s_k P_k z_0)
        attention = rbf(qn, xn) @ np.linalg.inv(rbf(xn, xn)) @ rbf(xn, kn)
        assert np.allclose(cross, sq * sk * attention) and not np.allclose(attention, attention.T)
        joint = np.block([[sq ** 2 * rbf(qn, qn), cross], [cross.T, sk ** 2 * rbf(kn, kn)]])
        assert np.linalg.eigvalsh(joint).min() > -1e-10  # a covariance, though s_q s_k < 1 in head 1
        mean, cov = conditioned(joint, 5, sk ** 2 * rbf(kn, kn) @ vn)
        assert np.allclose(fn.mean[h].numpy(), mean, atol=1e-8)
        assert np.allclose(fn.covariance()[h].detach().numpy(), cov, atol=1e-8)
        m0 = sk * rbf(xn, kn) @ vn  # E[z_0(X0) | z_k(K) = K_kk v]
        assert np.isclose(0.5 * np.trace(m0.T @ np.linalg.solve(rbf(xn, xn), m0)),
                          full_conditional(q[h:h + 1], k[h:h + 1], x0[h:h + 1], v[h:h + 1], None, lq[h:h + 1],
                                           lk[h:h + 1], "site").cgp_loss.item())


def test_sparse_conditional_is_the_deterministic_training_conditional():
    """Nystrom Q_ab = k(a, Z) K_ZZ^-1 k(Z, b); DTC joint: Cov(z_k) = s_k^2 (Q_kk + nu I), queries Q_qq plus the
    diagonal residual, cross s_q s_k Q_qk; conditioned by SciPy on z_k(K) = Cov(z_k) v."""
    q, k, _, v, z, lq, lk = inputs()
    nu = 0.1
    fn = sparse_conditional(q, k, z, v, None, lq, lk, nu, "site")
    for h in range(2):
        qn, kn, zn, vn = (t[h].numpy() for t in (q, k, z, v))
        sq, sk = math.exp(lq[h]), math.exp(lk[h])

        def nystrom(a, b):
            return rbf(a, zn) @ scipy.linalg.solve(rbf(zn, zn), rbf(zn, b), assume_a="pos")
        qq = nystrom(qn, qn) + np.diag(1 - np.diag(nystrom(qn, qn)))
        kk = sk ** 2 * (nystrom(kn, kn) + nu * np.eye(5))
        joint = np.block([[sq ** 2 * qq, sq * sk * nystrom(qn, kn)], [sq * sk * nystrom(kn, qn), kk]])
        mean, cov = conditioned(joint, 5, kk @ vn)
        assert np.allclose(fn.mean[h].numpy(), mean, atol=1e-8)
        assert np.allclose(fn.covariance()[h].detach().numpy(), cov, atol=1e-8)
        m0 = sk * rbf(zn, kn) @ vn
        assert np.isclose(0.5 * np.trace(m0.T @ np.linalg.solve(rbf(zn, zn), m0)),
                          sparse_conditional(*(t[h:h + 1] for t in (q, k, z, v)), None, lq[h:h + 1], lk[h:h + 1],
                                             nu, "site").cgp_loss.item())


@pytest.mark.parametrize("family", FAMILIES)
def test_draws_have_the_closed_form_moments(family):
    q, k, x0, v, z, lq, lk = inputs()
    fn = (full_conditional(q, k, x0, v, None, lq, lk, "site") if family == "cgpt"
          else sparse_conditional(q, k, z, v, None, lq, lk, 0.1, "site"))
    torch.manual_seed(0)
    n = 20000
    centred = (fn.rsample((n,)) - fn.mean).detach().transpose(-1, -2)  # [n, H, D, T]
    cov = fn.covariance().detach()  # [H, T, T], the same for every output dimension
    var = cov.diagonal(dim1=-2, dim2=-1)
    assert (centred.mean(0).abs() < 4.5 * (var.unsqueeze(-2) / n).sqrt()).all()
    empirical = torch.einsum("nhdt,nhds->hdts", centred, centred) / n
    se = ((var[..., :, None] * var[..., None, :] + cov ** 2) / n).sqrt().unsqueeze(1)
    assert ((empirical - cov.unsqueeze(1)).abs() < 4.5 * se).all()


def test_lower_inverse_gradient_equals_autograd_through_the_block_recursion():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 20, 20, dtype=torch.float64)
    lower = (torch.tril(x, -1) * 0.3 + torch.diag_embed(torch.rand(3, 2, 20, dtype=torch.float64) + 1)).requires_grad_()
    w = torch.randn(3, 2, 20, 20, dtype=torch.float64)
    ours, = torch.autograd.grad((lower_inverse(lower) * w).sum(), lower)
    theirs, = torch.autograd.grad((triangular_inverse(lower) * w).sum(), lower)
    assert torch.allclose(ours, torch.tril(theirs), atol=1e-10)
    assert torch.autograd.gradcheck(lambda a: lower_inverse(torch.tril(a)), (lower[0, 0].detach().clone()
                                                                             .requires_grad_(),))


# --- the model and its objective ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_padding_changes_nothing(family, one_thread):
    """A padded batch gives each sequence its own mean attention, CGP loss, covariance and prediction."""
    x, mask, alone = padded_batch()
    model = tiny_model(family)
    guide = inference.GUIDES[family](model, x, None, mask)
    with torch.no_grad():
        for p in model.parameters():  # away from the initial values, so every parameter matters
            p.add_(0.05 * torch.randn_like(p))

    def run(xi, mi):
        trace = poutine.trace(guide.local(model, mean=True)).get_trace(xi, None, mi)
        return trace, [trace.nodes[n]["fn"] for n in model.attention_sites]

    with torch.no_grad():
        batch, batch_fns = run(x, mask)
        pyro.set_rng_seed(0)
        drawn = poutine.trace(guide.local(model)).get_trace(x, None, mask).nodes[site_name(0)]["value"]
        assert (drawn[1, :, 4:] == 0).all() and drawn[1, :, :4].abs().min() > 0
        for i, (xi, mi) in enumerate(alone):
            one, fns = run(xi, mi)
            t = mi.sum()
            assert torch.allclose(one.nodes["_RETURN"]["value"], batch.nodes["_RETURN"]["value"][i:i + 1], atol=1e-5)
            for a, b in zip(fns, batch_fns):
                assert torch.allclose(a.mean, b.mean[i:i + 1, :, :t], atol=1e-5)
                assert torch.allclose(a.cgp_loss, b.cgp_loss[i:i + 1], rtol=1e-4)
                assert torch.allclose(a.covariance(), b.covariance()[i:i + 1, :, :t, :t], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_objective_is_cross_entropy_plus_lambda_times_the_cgp_loss(family, one_thread):
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model(family)
    for weight in (0.0, 0.5):
        guide = inference.GUIDES[family](model, x, None, mask, cgp_weight=weight)
        pyro.set_rng_seed(0)
        with torch.no_grad():
            terms = elbo_terms(model, guide, x, y, mask, 10)
        losses = sum(terms.model_trace.nodes[n]["fn"].cgp_loss.sum() for n in model.attention_sites)
        assert losses > 0 and torch.allclose(terms.kl, weight * 10 / 2 * losses)
        ce = torch.nn.functional.cross_entropy(terms.model_trace.nodes["_RETURN"]["value"], y, reduction="sum")
        assert torch.allclose(terms.loglik, -10 / 2 * ce)


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_predict_save_load(family, tmp_path, one_thread):
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    post = inference.fit(tiny_model(family), (x, y, mask), guide=family, steps=3, lr=1e-2, num_particles=2,
                         progress=False, guide_options={"cgp_weight": 0.3})
    assert all(math.isfinite(v) for v in post.info["losses"])
    pyro.set_rng_seed(3)
    probs = post.predict(x, 4, mask)
    assert probs.shape == (4, 2, 2) and probs.std(0).max() > 0  # a fresh attention draw per prediction
    loaded = inference.Posterior.load(post.save(tmp_path / "post.pt"))
    assert loaded.guide.cgp_weight == 0.3
    pyro.set_rng_seed(3)
    assert torch.allclose(loaded.predict(x, 4, mask), probs, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_cgp_loss_is_not_read_as_a_kl_by_the_degeneracy_check(family, one_thread):
    """CGPT has no KL: a large lambda must not make the check call its attention 'off' or 'on' its prior."""
    from inference.degeneracy import check
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    post = inference.fit(tiny_model(family), (x, y, mask), guide=family, steps=2, lr=1e-2, progress=False,
                         guide_options={"cgp_weight": 10.0})
    found = check(post, x, mask)
    assert not any(name in found.kl for name in post.model.attention_sites)
    assert found.kl_per_attention_number is None and found.to_dict()["kl_per_attention_number"] is None


def test_command_line_fits_sparse_cgpt(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["fit", "--guide", "cgpt-sparse", "--bayes", "cgpt-sparse", "--option", "cgp_weight=0.01",
                     "--attention-prior", "cgpt-sparse:inducing=4", "--steps", "2", "--d-model", "8", "--depth", "1",
                     "--heads", "2", "--num-samples", "2", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())["config"]
    assert run["model"]["attention_prior"] == "cgpt-sparse:inducing=4,noise=0.1"
    assert inference.Posterior.load(out / "posterior.pt").guide.cgp_weight == 0.01


# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, error, words", [
    (lambda: tiny_model("cgpt-sparse", attention_prior="cgpt-sparse:inducing=0"), priors.PriorError, ["'inducing'"]),
    (lambda: tiny_model("cgpt-sparse", attention_prior="cgpt-sparse:noise=0"), priors.PriorError, ["'noise'"]),
    (lambda: tiny_model("cgpt", attention_prior="sgpa"), zoo.ModelError, ["does not serve cgpt"]),
    (lambda: tiny_model("cgpt", bayes="cgpt,sgpa"), zoo.ModelError, ["two attention families"]),
])
def test_bad_model_options_are_one_line_errors(build, error, words):
    with pytest.raises(error) as info:
        build()
    assert len(str(info.value).splitlines()) == 1 and all(w in str(info.value) for w in words)


@pytest.mark.parametrize("family, options, words", [
    ("cgpt", {"cgp_weight": -1}, ["cgp_weight", "-1"]),
    ("cgpt", {"cgp_weight": "big"}, ["cgp_weight"]),
    ("cgpt", {"weights": "cgpt"}, ["not a weight-space guide"]),
    ("cgpt-sparse", {"inducing": 3}, ["no option 'inducing'"]),
])
def test_guides_refuse_bad_options_naming_them(family, options, words):
    x, mask, _ = padded_batch()
    with pytest.raises(inference.FitError) as info:
        inference.fit(tiny_model(family), (x, torch.tensor([0, 1]), mask), guide=family, steps=1, progress=False,
                      guide_options=options)
    assert len(str(info.value).splitlines()) == 1 and all(w in str(info.value) for w in words)
