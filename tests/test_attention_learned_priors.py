"""The learned (empirical-Bayes) and MAP-centred Dirichlet attention priors (issue 31, priors/attention_learned.py)."""
import math

import pyro
import pytest
import torch
from scipy import optimize, special
from torch.distributions import kl_divergence

import inference
import priors
import zoo
from inference.elbo import elbo_terms
from priors import KeyContext, MaskedDirichlet, PriorError, Site
from zoo.models.attention import SampledAttention, site_name
from zoo.models.errors import ModelError
from zoo.models.layers import layer_norm, linear
from padded_data import padded_batch

SIZES = dict(input_dim=3, d_model=8, depth=2, heads=2, max_len=16)


def tiny_model(attention_prior=None, bayes="attention"):
    torch.manual_seed(0)
    return zoo.TransformerClassifier(2, bayes=bayes, attention_prior=attention_prior, **SIZES)


@pytest.fixture
def map_weights(tmp_path):
    """A weights file of the tiny architecture (another seed's network: what matters is that it is not the model's)."""
    torch.manual_seed(7)
    net = zoo.Transformer(zoo.TransformerClassifier(2, bayes="none", **SIZES).cfg)
    path = tmp_path / "weights.pt"
    torch.save({n: p.detach() for n, p in net.named_parameters()}, path)
    return str(path)


def centred(path, strength=2.0, floor=0.1):
    return f"centred-dirichlet:path={path},strength={strength},floor={floor}"


def hand_kl(a, b):
    """KL(Dir(a) || Dir(b)) of one row, in float64 with scipy's special functions."""
    a, b = a.double().numpy(), b.double().numpy()
    return (special.gammaln(a.sum()) - special.gammaln(b.sum()) + (special.gammaln(b) - special.gammaln(a)).sum()
            + ((a - b) * (special.digamma(a) - special.digamma(a.sum()))).sum())


def padded_site(heads=3, reference=None):
    """A site of 2 sequences (5 tokens, and 3 real of 5), its posterior concentrations and pair mask."""
    torch.manual_seed(3)
    tokens = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    pairs = tokens[:, None, :, None] & tokens[:, None, None, :]
    keys = torch.randn(2, heads, 5, 4)
    site = Site("blocks.0.attn.weights", (heads, 5, 5), 5, "attention", context=KeyContext(keys, pairs, reference))
    return site, torch.rand(2, heads, 5, 5) * 4 + 0.05, pairs


def site_kl_by_hand(posterior, prior, mask):
    """Per sequence: the sum over real rows of each row's KL over its real keys."""
    b, h, t, _ = posterior.shape
    total = torch.zeros(b, dtype=torch.float64)
    for i in range(b):
        for j in range(h):
            for r in range(t):
                keys = mask[i, 0, r]
                if keys.any():
                    total[i] += hand_kl(posterior[i, j, r][keys], prior[i, j, r][keys])
    return total


def learned(init=1.0, heads=3, concentrations=None):
    prior = priors.LearnedDirichlet(init)
    prior.bind(["blocks.0.attn.weights"], heads)
    if concentrations is not None:
        with torch.no_grad():
            prior.log_concentration["blocks__0__attn__weights"].copy_(torch.tensor(concentrations).log()[:, None, None])
    return prior


# --- closed forms --------------------------------------------------------------------------------------------------

def test_the_learned_priors_kl_is_the_closed_form_with_one_concentration_per_head():
    site, a, pairs = padded_site()
    beta = [0.3, 1.0, 4.0]
    kl = kl_divergence(MaskedDirichlet(a, pairs).to_event(2), learned(concentrations=beta)(site))
    prior = torch.tensor(beta)[None, :, None, None].expand_as(a)
    assert torch.allclose(kl.double(), site_kl_by_hand(a, prior, pairs), rtol=1e-4)
    one = kl_divergence(MaskedDirichlet(a, pairs).to_event(2), learned(concentrations=[1.0, 1.0, 1.0])(site))
    assert not torch.allclose(one, kl, rtol=1e-2)  # each head's own concentration counts


def test_the_centred_priors_kl_is_the_closed_form_around_the_reference_rows(map_weights):
    torch.manual_seed(4)
    reference = torch.randn(2, 3, 5, 5).softmax(-1)
    site, a, pairs = padded_site(reference=reference)
    strength, floor = 2.0, 0.1
    prior = priors.parse(centred(map_weights, strength, floor))
    kl = kl_divergence(MaskedDirichlet(a, pairs).to_event(2), prior(site))
    real_keys = pairs.sum(-1, keepdim=True)  # n: 5 and 3 real keys
    assert torch.allclose(kl.double(), site_kl_by_hand(a, strength * real_keys * reference + floor, pairs), rtol=1e-4)


def stationarity(beta, posterior, mask):
    """sum_r K_r (psi(K_r beta) - psi(beta)) + sum_r sum_j (psi(a_rj) - psi(a_r0)) over one head's real rows: zero
    at the empirical-Bayes concentration of Dirichlet(beta) for fixed posterior rows Dirichlet(a_r)."""
    total = 0.0
    for row, keys in zip(posterior, mask):
        if keys.any():
            a, k = row[keys].double().numpy(), int(keys.sum())
            total += k * (special.digamma(k * beta) - special.digamma(beta))
            total += (special.digamma(a) - special.digamma(a.sum())).sum()
    return total


def head_rows(a, pairs, head):
    return a[:, head].reshape(-1, a.shape[-1]), pairs.expand_as(a)[:, head].reshape(-1, a.shape[-1])


def test_the_kl_gradient_and_the_fitted_concentration_solve_the_digamma_equation():
    """The ELBO's gradient in beta (the fit's float32 kernels) is minus the stationarity residual, and minimizing the
    KL over beta (float64) lands on the root of the digamma equation that scipy finds."""
    site, a, pairs = padded_site(heads=2)
    a[:, 1] = a[:, 1] * 10  # a second head with more concentrated rows: a larger optimum
    q = MaskedDirichlet(a, pairs).to_event(2)
    prior = learned(concentrations=[0.7, 2.0], heads=2)
    kl_divergence(q, prior(site)).sum().backward()
    grad_beta = prior.log_concentration["blocks__0__attn__weights"].grad.flatten() / torch.tensor([0.7, 2.0])
    for head, beta in enumerate((0.7, 2.0)):
        assert grad_beta[head].item() == pytest.approx(-stationarity(beta, *head_rows(a, pairs, head)), rel=1e-4)

    fitted = learned(heads=2)
    fitted.double()
    site64 = Site(site.name, site.shape, site.fan_in, "attention",
                  context=KeyContext(site.context.keys.double(), pairs))
    q64 = MaskedDirichlet(a.double(), pairs).to_event(2)
    optim = torch.optim.LBFGS(fitted.parameters(), max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-20,
                              line_search_fn="strong_wolfe")

    def closure():
        optim.zero_grad()
        loss = kl_divergence(q64, fitted(site64)).sum()
        loss.backward()
        return loss
    optim.step(closure)
    found = fitted.concentration(site.name).flatten()
    for head in range(2):
        root = optimize.brentq(stationarity, 1e-3, 1e3, args=head_rows(a, pairs, head), xtol=1e-12)
        assert found[head].item() == pytest.approx(root, rel=1e-6)
    assert found[1] > 1.5 * found[0]  # the concentrated head's optimum is the larger


# --- off by default, padding, direction, save and load ----------------------------------------------------------

def test_the_priors_are_off_by_default_and_change_nothing_then():
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model()
    assert model.net.attend.reference is None and not model.net._forward_pre_hooks
    assert all(n.startswith("net.") for n, _ in model.named_parameters())

    def terms(m):
        guide = inference.GUIDES["dirichlet"](m, x, None, mask)
        pyro.set_rng_seed(0)
        with torch.no_grad():
            return elbo_terms(m, guide, x, y, mask, 10)
    installed = terms(model)
    model.net.attend = SampledAttention("dirichlet", model.net.attend.priors)  # the hook as it was built before
    before = terms(model)
    assert torch.equal(installed.loglik, before.loglik) and torch.equal(installed.kl, before.kl)
    eb = tiny_model("dirichlet-eb:init=1")  # the learned prior at its start is the plain Dirichlet(1)
    at_start = terms(eb)
    assert torch.equal(at_start.loglik, before.loglik) and torch.allclose(at_start.kl, before.kl, rtol=1e-6)


@pytest.mark.parametrize("kind", ["learned", "centred"])
def test_a_padded_batch_gives_each_sequence_what_it_gets_alone(kind, map_weights):
    x, mask, alone = padded_batch()
    model = tiny_model("dirichlet-eb:init=0.5" if kind == "learned" else centred(map_weights))
    guide = inference.GUIDES["dirichlet"](model, x, None, mask)

    def trace(xi, mi):
        return pyro.poutine.trace(guide.local(model, mean=True)).get_trace(xi, None, mi)

    def kl(t):
        return torch.stack([kl_divergence(t.nodes[n]["infer"]["posterior"], t.nodes[n]["fn"])
                            for n in model.attention_sites], -1)
    with torch.no_grad():
        batch = trace(x, mask)
        for i, (xi, mi) in enumerate(alone):
            one = trace(xi, mi)
            assert torch.allclose(kl(one), kl(batch)[i:i + 1], rtol=1e-5)
            n = mi.shape[1]
            p_one, p_batch = (t.nodes[site_name(1)]["fn"].base_dist for t in (one, batch))
            assert torch.allclose(p_one.mean[0], p_batch.mean[i, :, :n, :n], atol=1e-6)


def eb_direction(init_concentration, floor):
    """(beta per head of layer 0 after 10 steps from 1; each head's stationarity residual at the start)."""
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model("dirichlet-eb:init=1")
    options = {"init_concentration": init_concentration, "floor": floor}
    guide = inference.GUIDES["dirichlet"](model, x, None, mask, **options)
    with torch.no_grad():
        t = pyro.poutine.trace(guide.local(model, mean=True)).get_trace(x, None, mask)
    q = t.nodes[site_name(0)]["infer"]["posterior"].base_dist
    a, pairs = q.concentration, q.mask
    start = [stationarity(1.0, *head_rows(a, pairs, head)) for head in range(a.shape[1])]
    inference.fit(model, (x, y, mask), guide="dirichlet", steps=10, lr=1e-2, progress=False, guide_options=options)
    return model.attention_prior.concentration(site_name(0)).flatten(), torch.tensor(start)


def test_the_learned_concentration_moves_toward_the_posterior():
    """Concentrated posterior rows (c = 100) pull beta above 1, sparse ones (c = 0.5, floor 0.01) below: each the
    side on which the start's stationarity residual puts the optimum (its first sum falls with beta, so a residual
    above 0 at beta = 1 puts the optimum above 1)."""
    up, residual_up = eb_direction(100.0, 0.1)
    down, residual_down = eb_direction(0.5, 0.01)
    assert (residual_up > 0).all() and (up > 1.05).all()
    assert (residual_down < 0).all() and (down < 0.95).all()


@pytest.mark.parametrize("kind", ["learned", "centred"])
def test_save_then_load_gives_the_same_predictions(kind, map_weights, tmp_path):
    x, mask, _ = padded_batch()
    y = torch.tensor([0, 1])
    model = tiny_model("dirichlet-eb:init=0.5" if kind == "learned" else centred(map_weights))
    post = inference.fit(model, (x, y, mask), guide="dirichlet", steps=5, lr=5e-2, progress=False)
    post.save(tmp_path / "posterior.pt")
    loaded = inference.Posterior.load(tmp_path / "posterior.pt")
    pyro.set_rng_seed(0)
    before = post.predict(x, 4, mask)
    pyro.set_rng_seed(0)
    assert torch.equal(loaded.predict(x, 4, mask), before)
    if kind == "learned":
        fitted = model.attention_prior.concentration(site_name(1))
        assert not torch.allclose(fitted, torch.full_like(fitted, 0.5))  # fitted, so the load has something to keep

    def prior(m):  # predictions draw from the posterior alone: the prior is compared by itself
        with torch.no_grad():
            return pyro.poutine.trace(m).get_trace(x, None, mask).nodes[site_name(1)]["fn"].base_dist.concentration
    assert torch.equal(prior(loaded.model), prior(model))


# --- the centred prior: the MAP network's attention, a prior proper ----------------------------------------------

def test_the_centred_prior_is_the_map_networks_attention_and_ignores_the_fitted_weights(map_weights):
    x, mask, _ = padded_batch()
    model = tiny_model(centred(map_weights, strength=1.0, floor=1e-6))

    def prior_mean():
        with torch.no_grad():
            t = pyro.poutine.trace(model).get_trace(x, None, mask)
        return t.nodes[site_name(0)]["fn"].base_dist.mean
    mean = prior_mean()
    w = torch.load(map_weights)  # layer 0's softmax rows of the MAP network, by hand
    h = linear(x, w["embed.weight"], w["embed.bias"]) + model.net.pos[:7]
    q, k, _ = linear(layer_norm(h, w["blocks.0.ln1.weight"], w["blocks.0.ln1.bias"]),
                     w["blocks.0.attn.qkv.weight"], w["blocks.0.attn.qkv.bias"]).split(8, -1)
    q, k = (z.reshape(2, 7, 2, 4).transpose(1, 2) for z in (q, k))
    scores = (q @ k.transpose(-1, -2) / 2).masked_fill(~mask[:, None, None, :], -math.inf)
    rows = scores.softmax(-1) * mask[:, None, :, None]
    assert torch.allclose(mean, rows, atol=1e-5)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(torch.randn_like(p))
    assert torch.equal(prior_mean(), mean)  # proper: the model's own weights do not move it


@pytest.mark.parametrize("make, error, match", [
    (lambda w: priors.parse("dirichlet-eb:init=0"), PriorError, "'init' must be positive"),
    (lambda w: priors.parse(centred(w, strength=-1)), PriorError, "'strength' must be positive"),
    (lambda w: priors.parse("centred-dirichlet:strength=2"), PriorError, "takes path=FILE"),
    (lambda w: priors.parse("centred-dirichlet:path=missing.pt"), PriorError, "'missing.pt' does not exist"),
    (lambda w: tiny_model({"blocks.0.*": "dirichlet-eb", "*": "dirichlet"}), ModelError, "only attention prior"),
    (lambda w: zoo.TransformerClassifier(2, bayes="attention", attention_prior=centred(w), mlp_ratio=3, **SIZES),
     ModelError, "do not fit this model's network"),
])
def test_bad_input_is_one_line_naming_the_problem(make, error, match, map_weights):
    with pytest.raises(error, match=match) as caught:
        make(map_weights)
    assert "\n" not in str(caught.value)


def test_a_learned_prior_serves_one_model_and_a_centred_one_needs_the_reference(map_weights):
    prior = priors.LearnedDirichlet()
    tiny_model(prior)
    with pytest.raises(PriorError, match="already serves a model"):
        tiny_model(prior)
    site, _, _ = padded_site()
    with pytest.raises(PriorError, match="needs the MAP network's attention rows"):
        priors.parse(centred(map_weights))(site)
