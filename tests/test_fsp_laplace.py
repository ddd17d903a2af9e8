"""FSP-Laplace: the precision in closed form on a linear model, Lanczos against a dense eigendecomposition,
the stopping rule, padding, save -> load, and the refusal of bad options."""
import pytest
import torch

import inference.fsp_laplace as fsp
from inference import FitError, Posterior, fit
from inference.lanczos import top_eigenpairs
from priors import GP
from zoo import TransformerClassifier
from padded_data import padded_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def linear_logits(theta, x, mask):
    """A linear classifier's logits: x [N, D, 1] -> [N, K], theta the flat [D, K] weights."""
    return x[..., 0] @ theta.reshape(x.shape[1], -1)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_covariance_is_the_inverse_of_the_dense_precision_on_a_linear_model(temperature):
    """J_C^T K^-1 J_C + GGN / T built densely; the matrix-free columns S give S S^T = its inverse."""
    torch.manual_seed(0)
    d, k = 3, 2
    theta = torch.randn(d * k, dtype=torch.float64)
    x, xc = torch.randn(20, d, 1, dtype=torch.float64), torch.randn(5, d, 1, dtype=torch.float64)
    gram = GP(lengthscale=2.0).gram(xc)
    columns, found = fsp.covariance_columns(linear_logits, theta, xc, None, gram, x, None, temperature,
                                            generator=torch.Generator().manual_seed(0))
    gram = gram + fsp.JITTER * gram.diagonal().mean() * torch.eye(5, dtype=gram.dtype)
    jc = torch.autograd.functional.jacobian(lambda t: linear_logits(t, xc, None), theta)  # [M, K, P]
    jn = torch.autograd.functional.jacobian(lambda t: linear_logits(t, x, None), theta)  # [N, K, P]
    p = linear_logits(theta, x, None).softmax(-1)
    hess = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    precision = (torch.einsum("mkp,mn,nkq->pq", jc, torch.linalg.inv(gram), jc)
                 + torch.einsum("nkp,nkl,nlq->pq", jn, hess, jn) / temperature)
    assert found["rank"] == found["prior_rank"] == d * k
    assert torch.allclose(columns @ columns.T, torch.linalg.inv(precision), rtol=1e-6, atol=1e-9)


def test_lanczos_finds_a_dense_eigendecomposition_s_leading_directions():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    spectrum = torch.zeros(30, dtype=torch.float64)
    spectrum[:4] = torch.tensor([9.0, 5.0, 2.0, 0.5])
    low_rank = (q * spectrum) @ q.T  # rank 4: four steps find it exactly
    values, vectors = top_eigenpairs(lambda v: low_rank @ v, 30, 4, torch.Generator().manual_seed(1))
    dense_values, dense_vectors = torch.linalg.eigh(low_rank)
    assert torch.allclose(values, dense_values.flip(0)[:4], rtol=1e-10)
    overlap = (vectors.T @ dense_vectors.flip(1)[:, :4]).abs().diagonal()
    assert torch.allclose(overlap, torch.ones(4, dtype=torch.float64))
    full = (q * torch.logspace(2, -3, 30, dtype=torch.float64)) @ q.T  # full rank, separated: top 5 after 30 steps
    values, vectors = top_eigenpairs(lambda v: full @ v, 30, 30, torch.Generator().manual_seed(1))
    dense_values, dense_vectors = torch.linalg.eigh(full)
    assert torch.allclose(values[:5], dense_values.flip(0)[:5], rtol=1e-8)
    assert torch.allclose((vectors[:, :5].T @ dense_vectors.flip(1)[:, :5]).abs().diagonal(),
                          torch.ones(5, dtype=torch.float64), atol=1e-8)


def test_truncation_stops_at_the_first_column_that_would_exceed_the_prior_variance():
    context_jvp = torch.zeros(4, 3, 2)
    context_jvp[:, 1, 0] = torch.tensor([0.5, 0.5, 0.8, 0.1])  # cumulative variance 0.25, 0.5, 1.14: over at 2
    assert fsp.truncate(context_jvp, torch.ones(3, 2)) == 2
    assert fsp.truncate(context_jvp, torch.full((3, 2), 2.0)) == 4


def tiny_model():
    return TransformerClassifier(2, input_dim=3, d_model=4, depth=1, heads=1, max_len=7)


def series(n=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 7, 3, generator=generator)
    lengths = torch.randint(3, 8, (n,), generator=generator)
    mask = torch.arange(7)[None] < lengths[:, None]
    return x, (x[:, :, 0].sum(1) > 0).long(), mask


def fitted(x, y, mask, **options):
    torch.manual_seed(0)
    return fit(tiny_model(), (x, y, mask), guide="fsp-laplace", steps=30, lr=1e-2, context_points=6, seed=0,
               progress=False, **options)


def test_the_predictive_variance_at_context_points_never_exceeds_the_prior_s():
    x, y, mask = series()
    posterior = fitted(x, y, mask, prior="gp:kernel=rbf,lengthscale=0.5,variance=0.3")
    net, values = posterior.model.net, {n: v.mean(0) for n, v in posterior.draws.items()}
    fn, gp = fsp.SiteFunction(net, values), GP(lengthscale=0.5, variance=0.3)
    theta = torch.cat([v.reshape(-1) for v in values.values()])
    xc, mc = fsp.context_inputs(x, mask, 6, "uniform", 0)
    columns, found = fsp.covariance_columns(fn, theta, xc, mc, gp.gram(xc.double(), mc), x, mask)
    variance = fsp.jvp_columns(fn, theta, xc, mc, columns).double().square().sum(0)
    assert found["rank"] > 0 and variance.max() <= 0.3 * (1 + fsp.JITTER)
    assert posterior.info["curvature_points"] == 12 + 6  # every training input joins the context points
    assert 0 < posterior.info["rank"] <= posterior.info["prior_rank"] <= (12 + 6) * 2


@pytest.mark.parametrize("context", ["uniform", "mix"])
def test_padding_values_change_neither_the_fit_nor_a_prediction(context):
    x, y, mask = series()
    filled = [x.masked_fill(~mask[..., None], value) for value in (100.0, -7.0)]
    first, second = (fitted(xf, y, mask, context=context) for xf in filled)
    for name, draws in first.draws.items():
        assert torch.allclose(draws, second.draws[name], atol=1e-5), name
    xb, mb, alone = padded_batch()
    together = first.predict(xb, 5, mb)
    for i, (xi, mi) in enumerate(alone):
        assert torch.allclose(together[:, i], first.predict(xi, 5, mi)[:, 0], atol=1e-5)


def test_save_then_load_predicts_the_same(tmp_path):
    x, y, mask = series()
    posterior = fitted(x, y, mask, num_draws=20)
    loaded = Posterior.load(posterior.save(tmp_path / "fsp.pt"))
    assert loaded.method == "fsp-laplace" and loaded.info["rank"] == posterior.info["rank"]
    probs = posterior.predict(x, 20, mask)
    assert not torch.allclose(probs[0], probs[1])  # draws differ
    assert torch.equal(loaded.predict(x, 20, mask), probs)


@pytest.mark.parametrize("options, words", [
    ({"context": "grid"}, "context must be one of"),
    ({"context_points": 0}, "context_points must be an integer"),
    ({"batch_points": -1}, "batch_points must be an integer"),
    ({"num_draws": 1.5}, "num_draws must be an integer"),
    ({"lanczos_steps": 0}, "lanczos_steps must be an integer"),
    ({"prior": "gaussian:scale=1"}, "weight prior"),
    ({"model": {"bayes": "none"}}, "with weight sites"),
    ({"model": {"dropout": 0.1}}, "deterministic"),
])
def test_bad_options_are_refused_in_one_line_before_any_work(options, words):
    x, y, mask = series()
    model = TransformerClassifier(2, input_dim=3, d_model=4, depth=1, heads=1, max_len=7, **options.pop("model", {}))
    with pytest.raises(FitError, match=words) as error:
        fit(model, (x, y, mask), guide="fsp-laplace", steps=10**9, progress=False, **options)  # no work: instant
    assert "\n" not in str(error.value)


def test_the_predictive_is_the_network_linearized_at_the_map():
    """At the MAP the linearized logits are the network's, they move linearly along a draw's step (half the step,
    half the change), and predict() gives their softmax."""
    from inference.posterior import linearized_logits
    x, y, mask = series()
    posterior = fitted(x, y, mask, num_draws=4)
    net, center, draws = posterior.model.net, posterior.info["linearized_at"], posterior.draws
    with torch.no_grad():
        exact = net(x, mask, center)
        at_map = linearized_logits(net, x, mask, center, {n: c[None] for n, c in center.items()})[0]
        full = linearized_logits(net, x, mask, center, draws)
        half = linearized_logits(net, x, mask, center, {n: c + (draws[n] - c) / 2 for n, c in center.items()})
    assert torch.allclose(at_map, exact, atol=1e-5)
    assert not torch.allclose(full, exact.expand_as(full), atol=1e-3)  # the draws move the logits
    assert torch.allclose(half, (full + exact) / 2, atol=1e-4)
    assert torch.allclose(posterior.predict(x, None, mask), full.softmax(-1), atol=1e-5)
