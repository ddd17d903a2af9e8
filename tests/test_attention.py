"""Attention-space inference: masked Dirichlet rows, attention priors, the dirichlet and bam guides."""
import math

import pyro
import pytest
import torch
from pyro import poutine
from torch.distributions import Dirichlet, Gamma, Weibull, kl_divergence

import inference
import priors
import zoo
from inference.elbo import elbo_terms
from priors import MaskedDirichlet
from zoo.models.attention import site_name
from padded_data import padded_batch

torch.set_num_threads(2)


def tiny_model(bayes="attention", **kw):
    torch.manual_seed(0)
    return zoo.TransformerClassifier(2, input_dim=3, d_model=8, depth=2, heads=2, max_len=16, bayes=bayes, **kw)


def attention_trace(model, guide, x, mask, mean=False):
    run = guide.local(model, mean=mean) if guide is not None else model
    return poutine.trace(run).get_trace(x, None, mask)


# --- the masked Dirichlet ---------------------------------------------------------------------------------

def test_masked_dirichlet_matches_torch_dirichlet_on_the_real_entries():
    torch.manual_seed(0)
    a, b = torch.rand(6, 5) * 3 + 0.2, torch.rand(6, 5) * 2 + 0.5
    m = torch.tensor([True, True, False, True, False])
    p, q = MaskedDirichlet(a, m), MaskedDirichlet(b, m)
    x = p.rsample()
    assert torch.allclose(p.log_prob(x), Dirichlet(a[:, m]).log_prob(x[:, m]), atol=1e-5)
    assert torch.allclose(kl_divergence(p, q), kl_divergence(Dirichlet(a[:, m]), Dirichlet(b[:, m])), atol=1e-5)
    full_p, full_q = MaskedDirichlet(a), MaskedDirichlet(b)
    assert torch.allclose(kl_divergence(full_p, full_q), kl_divergence(Dirichlet(a), Dirichlet(b)), atol=1e-5)


def test_rows_sum_to_one_masked_keys_get_nothing_and_padding_rows_are_absent():
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False, True], [False, False, False, False]])
    d = MaskedDirichlet(torch.rand(2, 4) + 0.1, mask)
    x = d.rsample((500,))
    assert torch.allclose(x[:, 0].sum(-1), torch.ones(500))
    assert (x[:, 0, 2] == 0).all() and (x[:, 1] == 0).all()
    assert (d.log_prob(x)[:, 1] == 0).all() and (kl_divergence(d, MaskedDirichlet(torch.ones(2, 4), mask))[1] == 0)


def test_hand_written_kl_gradient_passes_gradcheck():
    from priors.attention import _DirichletKL

    torch.manual_seed(0)
    a = (torch.rand(2, 3, 5, dtype=torch.float64) * 3 + 0.2).requires_grad_()
    b = (torch.rand(3, 1, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    m = torch.rand(2, 3, 5) > 0.3
    for mask in (None, m):
        assert torch.autograd.gradcheck(lambda a, b: _DirichletKL.apply(a, b.expand(2, 3, 5), mask), (a, b))


@pytest.mark.parametrize("alpha,beta", [(0.3, 1.0), (5.0, 0.5), (0.1, 0.1)])
def test_closed_form_dirichlet_kl_agrees_with_monte_carlo(alpha, beta):
    torch.manual_seed(0)
    a = torch.tensor([alpha, 2 * alpha, 3.0, 0.5, 1.0], dtype=torch.float64)
    b = torch.full((5,), beta, dtype=torch.float64)
    m = torch.tensor([True, True, True, False, True])
    p, q = MaskedDirichlet(a, m), MaskedDirichlet(b, m)
    x = p.rsample((200_000,)).clamp_min(1e-300)  # float32 draws can round an entry to 0
    diff = p.log_prob(x) - q.log_prob(x)
    se = diff.std() / math.sqrt(diff.numel())
    assert abs(diff.mean() - kl_divergence(p, q)) < 4 * se


def test_closed_form_weibull_gamma_kl_agrees_with_monte_carlo():
    torch.manual_seed(0)
    p = Weibull(torch.tensor([0.05, 1.0], dtype=torch.float64), torch.tensor([10.0, 2.0], dtype=torch.float64))
    q = Gamma(torch.tensor([0.5, 3.0], dtype=torch.float64), torch.tensor([8.0, 1.5], dtype=torch.float64))
    x = p.sample((200_000,))
    diff = p.log_prob(x) - q.log_prob(x)
    se = diff.std(0) / math.sqrt(x.shape[0])
    assert ((diff.mean(0) - kl_divergence(p, q)).abs() < 4 * se).all()


def test_rsample_gradient_matches_torch_dirichlet_implicit_reparameterization():
    torch.manual_seed(0)
    a = (torch.rand(3, 6) * 2 + 0.1).requires_grad_()
    w = torch.randn(6)
    grads = []
    for draw in (lambda: MaskedDirichlet(a).rsample((20_000,)), lambda: Dirichlet(a).rsample((20_000,))):
        torch.manual_seed(1)
        (grad,) = torch.autograd.grad((draw() * w).pow(2).sum(-1).mean(), a)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-3, rtol=1e-2)


def test_sampling_runs_in_float32_for_any_dtype():
    for dtype in (torch.float64, torch.bfloat16):
        a = torch.full((4, 8), 0.1, dtype=dtype, requires_grad=True)
        x = MaskedDirichlet(a).rsample()
        assert x.dtype == dtype and torch.allclose(x.float().sum(-1), torch.ones(4), atol=1e-2)
        x.float().pow(2).sum().backward()
        assert torch.isfinite(a.grad).all()


# --- priors -----------------------------------------------------------------------------------------------

def test_attention_priors_parse_and_swap_without_model_code():
    assert isinstance(priors.parse("dirichlet:concentration=0.5"), priors.SymmetricDirichlet)
    assert isinstance(priors.parse("key-dirichlet:strength=2"), priors.KeyDirichlet)
    assert isinstance(priors.parse("bam-gamma:contextual=false"), priors.GammaAttention)
    x, mask, _ = padded_batch()
    for spec in ("dirichlet:concentration=0.5", "key-dirichlet"):
        model = tiny_model(attention_prior=spec)
        assert model.config()["attention_prior"] == priors.parse(spec).spec()
        trace = poutine.trace(model).get_trace(x, None, mask)  # no guide: prior draws of the rows
        w = trace.nodes[site_name(0)]["value"]
        assert w.shape == (2, 2, 7, 7) and torch.allclose(w[0].sum(-1), torch.ones(2, 7))


def test_key_dirichlet_depends_on_keys_not_queries():
    torch.manual_seed(0)
    keys = torch.randn(1, 2, 5, 4)
    site = priors.Site("a", (2, 5, 5), 5, "attention", context=priors.KeyContext(keys, None))
    alpha = priors.KeyDirichlet()(site).base_dist.concentration
    assert torch.allclose(alpha[..., 0, :], alpha[..., 3, :])  # the same for every query
    assert not torch.allclose(alpha[..., 0, 0], alpha[..., 0, 1])


def test_wrong_prior_family_and_weight_priors_are_refused():
    with pytest.raises(zoo.ModelError, match="does not serve"):
        tiny_model(attention_prior="gaussian")
    with pytest.raises(zoo.ModelError, match="does not serve dirichlet"):
        tiny_model(attention_prior="bam-gamma")
    with pytest.raises(zoo.ModelError, match="two attention families"):
        tiny_model(bayes="attention,bam")


# --- the model with the dirichlet guide -------------------------------------------------------------------

def test_sites_live_in_the_data_plate_and_rows_respect_masks():
    x, mask, _ = padded_batch()
    model = tiny_model()
    guide = inference.GUIDES["dirichlet"](model, x, None, mask)
    trace = attention_trace(model, guide, x, mask)
    for i in range(2):
        site = trace.nodes[site_name(i)]
        assert any(f.name == "data" for f in site["cond_indep_stack"])
        w = site["value"]
        assert torch.allclose(w[0].sum(-1), torch.ones(2, 7), atol=1e-5)
        assert torch.allclose(w[1, :, :4].sum(-1), torch.ones(2, 4), atol=1e-5)
        assert (w[1, :, :, 4:] == 0).all() and (w[1, :, 4:] == 0).all()


def test_variable_length_batch_equals_each_sequence_alone():
    x, mask, alone = padded_batch()
    model = tiny_model()
    guide = inference.GUIDES["dirichlet"](model, x, None, mask)
    def kl(trace):  # per sequence, per layer: closed-form KL(posterior || prior) of the rows
        return torch.stack([kl_divergence(trace.nodes[n]["infer"]["posterior"], trace.nodes[n]["fn"])
                            for n in model.attention_sites], -1)

    with torch.no_grad():
        batch = attention_trace(model, guide, x, mask, mean=True)  # posterior-mean rows: deterministic
        for i, (xi, mi) in enumerate(alone):
            one = attention_trace(model, guide, xi, mi, mean=True)
            assert torch.allclose(one.nodes["_RETURN"]["value"], batch.nodes["_RETURN"]["value"][i:i + 1], atol=1e-5)
            assert torch.allclose(kl(one), kl(batch)[i:i + 1], rtol=1e-5)


def test_predictions_converge_to_the_softmax_transformer_as_concentration_grows():
    x, mask, _ = padded_batch()
    model = tiny_model()
    plain = zoo.Transformer(model.cfg)
    plain.load_state_dict(model.net.state_dict())
    with torch.no_grad():
        target = plain(x, mask).softmax(-1)
        guide = inference.GUIDES["dirichlet"](model, x, None, mask, floor=0.1)
        post = inference.Posterior(model, "dirichlet", guide=guide)
        errors = []
        for c in (1e1, 1e3, 1e5, 1e7):
            for p in guide.log_param.values():
                p.fill_(math.log(c))
            pyro.set_rng_seed(0)
            errors.append((post.predict(x, 20, mask) - target).abs().max().item())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-4


def test_gradients_stay_finite_at_the_concentration_floor():
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model()
    guide = inference.GUIDES["dirichlet"](model, x, None, mask)
    with torch.no_grad():
        for p in guide.log_param.values():
            p.fill_(-30.0)  # c ~ 1e-13: every concentration sits at the floor
    for seed in range(5):
        pyro.set_rng_seed(seed)
        terms = elbo_terms(model, guide, x, y, mask, 2)
        model.zero_grad(), guide.zero_grad()
        terms.loss().backward()
        grads = [p.grad for p in [*model.parameters(), *guide.parameters()] if p.grad is not None]
        assert torch.isfinite(terms.loss()) and all(torch.isfinite(g).all() for g in grads)
        w = terms.model_trace.nodes[site_name(0)]["value"][0]
        assert (w.max(-1).values - w.min(-1).values > 1e-3).all()  # no row collapsed to uniform


@pytest.mark.parametrize("guide,bayes", [("dirichlet", "attention"), ("dirichlet", "attention,last-layer"),
                                         ("bam", "bam"), ("bam", "bam,last-layer")])
def test_fit_and_predict_with_attention_guides(guide, bayes):
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model(bayes)
    post = inference.fit(model, (x, y, mask), guide=guide, steps=3, lr=1e-2, num_particles=2, progress=False)
    assert all(math.isfinite(v) for v in post.info["losses"])
    probs = post.predict(x, 5, mask)
    assert probs.shape == (5, 2, 2) and torch.allclose(probs.sum(-1), torch.ones(5, 2))
    assert probs.std(0).max() > 0  # fresh attention rows per draw
    assert set(post.sample(4)) == set(model.sites)  # only global weight sites are drawn globally


def test_bam_posterior_stays_finite_for_extreme_unmasked_logits():
    # without a padding mask the guide does not clamp log-softmax: far-off keys get scales near exp(-400)
    x, mask, _ = padded_batch()
    model = tiny_model("bam")
    guide = inference.GUIDES["bam"](model, x, None, mask)
    logits = (torch.linspace(-400, 0, 7).expand(1, 2, 7, 7)).clone().requires_grad_()
    q = guide.posterior(site_name(0), priors.AttentionRecord("bam", None, logits=logits))
    prior = priors.MaskedGamma(torch.ones(1, 2, 7, 7), torch.ones(1, 2, 7, 7))
    w = q.rsample()
    loss = kl_divergence(q, prior).sum() + (w / w.sum(-1, keepdim=True)).pow(2).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_attention_guides_refuse_models_without_their_sites():
    x, mask, _ = padded_batch()
    with pytest.raises(inference.FitError, match="no dirichlet attention"):
        inference.fit(tiny_model("last-layer"), (x, torch.tensor([0, 1]), mask), guide="dirichlet", steps=1,
                      progress=False)


@pytest.mark.slow
def test_dirichlet_guide_on_italy_power_demand_matches_map():
    from zoo import data

    ds = data.load()
    results = {}
    for guide, bayes in (("map", "none"), ("dirichlet", "attention")):
        torch.manual_seed(0)
        model = zoo.TransformerClassifier(ds.num_classes, input_dim=1, bayes=bayes)
        post = inference.fit(model, ds.train, guide=guide, steps=1000, lr=3e-3, progress=False)
        pyro.set_rng_seed(1)
        results[guide] = inference.evaluate(post.predict(ds.test.x, 100, batch_size=256), ds.test.y)
    assert results["dirichlet"]["accuracy"] >= 0.93
    assert results["dirichlet"]["nll"] <= results["map"]["nll"]


def test_row_entropy_against_closed_forms():
    from inference.degeneracy import row_entropy

    t = 7
    assert abs(row_entropy(torch.full((3, 2, t, t), 1 / t, dtype=torch.float64)) - math.log(t)) < 1e-12  # uniform rows: log T
    assert row_entropy(torch.eye(t)[None].expand(4, t, t)) == 0.0  # one-hot rows
    padded = torch.cat([torch.full((2, t), 1 / t, dtype=torch.float64), torch.zeros(1, t, dtype=torch.float64)])  # an all-zero (padded) query row is left out
    assert abs(row_entropy(padded) - math.log(t)) < 1e-12
    assert abs(row_entropy(3 * padded) - math.log(t)) < 1e-12  # unnormalized weights (BAM) are normalized
    assert row_entropy(torch.randn(3, t)) is None  # not attention weights


@pytest.mark.parametrize("bayes, guide", [("attention", "dirichlet"), ("bam", "bam")])
def test_an_attention_fit_reports_its_kl_per_attention_number_and_attention_entropy(bayes, guide):
    from inference import degeneracy

    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model(bayes)
    post = inference.fit(model, (x, y, mask), guide=guide, steps=5, progress=False)
    found = degeneracy.check(post, x, mask).to_dict()
    assert found["kl_per_attention_number"] > 0 and 0 <= found["attention_entropy"] <= math.log(x.shape[1])


# --- remedies for a posterior on its prior (docs/attention.md) ----------------------------------------------

def remedy_terms(guide_name, bayes, **options):
    x, mask, _ = padded_batch()
    model = tiny_model(bayes)
    guide = inference.GUIDES[guide_name](model, x, None, mask, **options)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        return guide, elbo_terms(model, guide, x, torch.tensor([0, 1]), mask, 10)


@pytest.mark.parametrize("guide_name, bayes", [("dirichlet", "attention"), ("bam", "bam")])
def test_remedies_are_off_by_default_and_change_nothing_then(guide_name, bayes):
    guide, terms = remedy_terms(guide_name, bayes)
    _, same = remedy_terms(guide_name, bayes, free_bits=0.0, local_kl_weight=1.0)
    assert guide.remedy is None and terms.kl_objective is None and same.kl_objective is None
    assert torch.equal(terms.loss(0.5, 0.3), -terms.loglik / 0.5 + 0.3 * terms.kl)
    assert torch.equal(same.loss(), terms.loss())


def test_free_bits_and_the_local_weight_change_the_objective_as_documented():
    """By hand: each attention row's KL (torch's Dirichlet KL), floored at lambda, times w, times N / B."""
    _, plain = remedy_terms("dirichlet", "attention")
    site = plain.model_trace.nodes[site_name(0)]
    free_bits, weight = float(kl_divergence(site["infer"]["posterior"].base_dist, site["fn"].base_dist).median()), 0.3
    _, terms = remedy_terms("dirichlet", "attention", free_bits=free_bits, local_kl_weight=weight)
    assert torch.allclose(terms.kl, plain.kl)  # the reported KL is the true one
    expected, floored = 0.0, 0
    for name in (site_name(0), site_name(1)):
        site = terms.model_trace.nodes[name]
        q, p = site["infer"]["posterior"].base_dist, site["fn"].base_dist
        real = q.mask[..., 0] if q.mask is not None else torch.ones(q.concentration.shape[:-1], dtype=torch.bool)
        rows = torch.zeros(q.concentration.shape[:-1], dtype=torch.float64)
        for index in real.nonzero().tolist():  # each real row alone, over its real keys, by torch's Dirichlet
            keys = q.mask[tuple(index)] if q.mask is not None else slice(None)
            rows[tuple(index)] = kl_divergence(Dirichlet(q.concentration[tuple(index)][keys].double()),
                                               Dirichlet(p.concentration[tuple(index)][keys].double()))
        floored += int(((rows < free_bits) & real).sum())
        expected += site["scale"] * weight * torch.where(real, rows.clamp_min(free_bits), 0.0).sum()
    assert floored > 0  # the floor is active on some rows, so the check can tell it from no floor
    assert torch.allclose(terms.kl_objective.double(), torch.as_tensor(expected), rtol=1e-4)
    assert torch.allclose(terms.loss(1.0, 0.5), -terms.loglik + 0.5 * terms.kl_objective)


def test_a_local_weight_scales_the_attention_kl_alone_and_free_bits_need_rows():
    _, plain = remedy_terms("bam", "bam,last-layer")
    _, weighted = remedy_terms("bam", "bam,last-layer", local_kl_weight=0.25)
    local = sum(v for n, v in plain.kl_sites.items() if n in (site_name(0), site_name(1)))
    assert torch.allclose(weighted.kl_objective, plain.kl - 0.75 * local, rtol=1e-5)
    with pytest.raises(TypeError, match="free_bits needs a KL per attention row"):
        remedy_terms("bam", "bam", free_bits=0.1)
    with pytest.raises(TypeError, match="local_kl_weight must be a number >= 0"):
        remedy_terms("dirichlet", "attention", local_kl_weight=-1)
