"""Prior predictive checks: shapes, a closed-form logit scale, degenerate functions, attention entropy."""
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn
from scipy.special import digamma

from inference import arviz_io, prior_predictive
from priors import Prior
from priors.base import independent
from zoo import TransformerClassifier

T, C = 6, 2


def inputs(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, T, C, generator=g) + torch.randn(n, 1, C, generator=g)  # series differ in level


def tiny(prior="gaussian:scale=1", bayes="weights", k=2):
    torch.manual_seed(0)
    return TransformerClassifier(k, input_dim=C, d_model=8, depth=1, heads=2, bayes=bayes, prior=prior)


class WideBias(Prior):
    """N(0, 1) weights with N(0, bias_scale^2) biases: a deliberately too-wide prior on the biases."""

    name = "wide-bias"

    def __init__(self, bias_scale):
        self.bias_scale = bias_scale

    def __call__(self, site):
        return independent(dist.Normal(0.0, self.bias_scale if site.role == "bias" else 1.0), site)

    def spec(self):
        return f"wide-bias:bias_scale={self.bias_scale:g}"


def test_shapes_summary_and_arviz_groups():
    x = inputs()
    check = prior_predictive(tiny(k=3), x, num_samples=20)
    assert check.logits.shape == (20, 32, 3)
    assert check.draws["head.weight"].shape == (20, 3, 8)
    summary = check.summary()
    assert {"logit_scale", "degenerate_share", "entropy_mean", "entropy_max"} <= set(summary)
    assert "attention_entropy_mean" not in summary
    assert 0 <= summary["entropy_mean"] <= summary["entropy_max"] == pytest.approx(np.log(3))
    idata = check.to_arviz(var_names=["head.*"], y=torch.zeros(32, dtype=torch.long))
    assert set(arviz_io.group_names(idata)) == {"prior", "prior_predictive", "observed_data"}
    assert set(idata.prior.data_vars) == {"head.weight", "head.bias"}
    assert idata.prior["head.weight"].dims == ("chain", "draw", "head.weight_dim_0", "head.weight_dim_1")
    assert idata.prior_predictive["y"].shape == (1, 20, 32)
    assert idata.prior_predictive["probs"].shape == (1, 20, 32, 3)


def test_each_draw_is_one_function_across_batches():
    x = inputs(40)
    pyro.set_rng_seed(3)
    whole = prior_predictive(tiny(), x, num_samples=8)
    pyro.set_rng_seed(3)
    batched = prior_predictive(tiny(), x, num_samples=8, batch_size=7)
    torch.testing.assert_close(batched.logits, whole.logits, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def features(model, x):
    """The last layer's input h [N, d]: coordinate j is the first logit of a head that reads only h_j."""
    d = model.cfg.d_model
    columns = []
    for j in range(d):
        w = torch.zeros(2, d)
        w[0, j] = 1.0
        columns.append(model.net(x, None, {"head.weight": w, "head.bias": torch.zeros(2)})[:, 0])
    return torch.stack(columns, -1)


def test_logit_scale_matches_closed_form_for_a_bayesian_last_layer():
    """Last layer W ~ N(0, s^2), b ~ N(0, s^2) on fixed features h: for K = 2 the centred logit is
    (l0 - l1) / 2 with variance s^2 (|h|^2 + 1) / 2."""
    s, x = 0.7, inputs()
    model = tiny(f"gaussian:scale={s}", bayes="last-layer")
    h = features(model, x)
    expected = s ** 2 * ((h ** 2).sum(-1) + 1).mean().item() / 2
    check = prior_predictive(model, x, num_samples=1000)
    per_draw = check.logit_rms().pow(2)
    se = per_draw.std().item() / np.sqrt(len(per_draw))
    assert abs(per_draw.mean().item() - expected) < 4 * se
    assert check.summary()["logit_scale"] == pytest.approx(per_draw.mean().sqrt().item())


def test_degenerate_share_by_hand_and_a_too_wide_prior_is_flagged():
    same = inputs(1).expand(16, T, C)  # identical inputs: every function gives one class for all of them
    assert prior_predictive(tiny(), same, num_samples=30).summary()["degenerate_share"] == 1.0
    x = inputs(32)
    sensible = prior_predictive(tiny(), x, num_samples=200).summary()
    wide = prior_predictive(tiny(WideBias(30.0)), x, num_samples=200).summary()
    # measured: 0.08 vs 0.97 with 200 draws (binomial sd at most 0.035 each)
    assert sensible["degenerate_share"] < 0.3 and wide["degenerate_share"] > 0.8
    assert wide["logit_scale"] > 5 * sensible["logit_scale"]


class ToyAttention(nn.Module):
    """A synthetic attention-space model: Dirichlet(1) attention rows as a local site in the data plate."""

    def __init__(self, heads=2, t=5):
        super().__init__()
        self.heads, self.t = heads, t

    def forward(self, x, y=None, mask=None, dataset_size=None):
        w = pyro.sample("head.weight", dist.Normal(0.0, 1.0).expand([2, self.t]).to_event(2))
        b = x.shape[0]
        with pyro.plate("data", dataset_size or b, subsample=torch.arange(b)):
            rows = pyro.sample("blocks.0.attn.weights",
                               dist.Dirichlet(torch.ones(self.heads, self.t, self.t)).to_event(2))
            pooled = rows.mean((-3, -2))  # [S?, B, t]
            logits = (pooled.unsqueeze(-2) * w).sum(-1)
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def test_attention_entropy_hook_matches_dirichlet_closed_form():
    """E[H] of a Dirichlet(1, ..., 1) row over t keys is digamma(t + 1) - digamma(2)."""
    check = prior_predictive(ToyAttention(t=5), torch.zeros(12, 5), num_samples=50, label="toy")
    assert check.attention["blocks.0.attn.weights"].shape == (50, 12 * 2 * 5)
    rows = check.attention["blocks.0.attn.weights"].flatten()
    se = rows.std().item() / np.sqrt(rows.numel())  # rows are independent draws
    assert abs(rows.mean().item() - (digamma(6) - digamma(2))) < 4 * se
    assert check.summary()["attention_entropy_mean"] == pytest.approx(rows.mean().item())
    prior = check.to_arviz().prior
    assert prior["blocks.0.attn.weights.entropy"].dims == ("chain", "draw", "blocks.0.attn.weights_row")
    assert prior["blocks.0.attn.weights.entropy"].shape == (1, 50, 120)


def test_attention_models_report_attention_entropy():
    from zoo import ModelError
    try:
        model = tiny(bayes="attention")
    except ModelError:
        pytest.skip("no attention-space model in this checkout")
    check = prior_predictive(model, inputs(8), num_samples=10)
    assert 0 < check.summary()["attention_entropy_mean"] < np.log(T) + 1e-6


def test_bad_num_samples():
    with pytest.raises(ValueError, match="num_samples"):
        prior_predictive(tiny(), inputs(4), num_samples=0)
