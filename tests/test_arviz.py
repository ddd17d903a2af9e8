"""InferenceData from Posteriors: groups, dims and shapes as documented; ArviZ functions run on it."""
import arviz as az
import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr

from inference import Posterior, arviz_io, compare, fit
from zoo import TransformerClassifier

matplotlib.use("Agg")

N, T, C, K = 32, 6, 2, 3


def data(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, C, generator=g)
    y = (x[:, :, 0].mean(1) > 0).long() + (x[:, :, 1].mean(1) > 0.5).long()
    return x, y


def tiny_model():
    return TransformerClassifier(K, input_dim=C, d_model=8, depth=1, heads=2, bayes="last-layer")


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    x, y = data()
    return fit(tiny_model(), (x, y), guide="mean_field", steps=15, lr=5e-2, progress=False), x, y


def chain_posterior(chains=4, draws=30):
    """Fixed draws whose head.bias holds its chain's index, so the chain split can be checked."""
    torch.manual_seed(1)
    model = tiny_model()
    s = chains * draws
    w = 0.3 * torch.randn(s, K, 8)
    b = torch.arange(chains).repeat_interleave(draws)[:, None].float().expand(s, K).clone()
    stats = {"diverging": np.zeros((chains, draws), dtype=bool), "lp": np.random.default_rng(0).normal(size=(chains, draws))}
    return Posterior(model, "fixed", draws={"head.weight": w, "head.bias": b},
                     info={"chains": chains, "sample_stats": stats})


def test_groups_dims_and_shapes(fitted):
    post, x, y = fitted
    xt, yt = data(20, seed=1)
    idata = post.to_arviz(x, y, num_samples=40, test=(xt, yt), ood=xt + 5)
    assert set(arviz_io.group_names(idata)) == {"posterior", "posterior_predictive", "log_likelihood",
                                                "observed_data", "predictions", "predictions_constant_data"}
    assert idata.posterior["head.weight"].dims == ("chain", "draw", "head.weight_dim_0", "head.weight_dim_1")
    assert idata.posterior["head.weight"].shape == (1, 40, K, 8)
    assert idata.posterior["head.bias"].shape == (1, 40, K)
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "obs_id")
    assert idata.posterior_predictive["probs"].dims == ("chain", "draw", "obs_id", "class")
    assert idata.posterior_predictive["probs"].shape == (1, 40, N, K)
    assert idata.log_likelihood["y"].shape == (1, 40, N)
    assert idata.observed_data["y"].dims == ("obs_id",)
    assert idata.predictions["probs"].shape == (1, 40, 20, K)
    assert idata.predictions["ood_probs"].dims == ("chain", "draw", "ood_id", "class")
    np.testing.assert_array_equal(idata.predictions_constant_data["y"].values, yt.numpy())
    # the log-likelihood is log p(y_i | theta_s) of the same draws' probabilities
    probs = idata.posterior_predictive["probs"].values[0]
    expected = np.log(np.take_along_axis(probs, y.numpy()[None, :, None], -1)[..., 0])
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], expected, rtol=1e-5)
    np.testing.assert_allclose(idata.posterior["loglik"].values[0], expected.sum(-1), rtol=1e-5)
    # and the probabilities are those of the stored weight draws
    draws = {n: torch.as_tensor(idata.posterior[n].values[0]) for n in ("head.weight", "head.bias")}
    np.testing.assert_allclose(post.predict(x, draws=draws).numpy(), probs, rtol=1e-4, atol=1e-6)


def test_predictive_labels_follow_the_probabilities():
    probs = torch.tensor([[0.2, 0.5, 0.3]]).expand(4000, 5, 3)
    ds = arviz_io.predictive_group(probs, 1, "obs_id", seed=0)
    y = ds["y"].values.ravel()
    for k, p in enumerate((0.2, 0.5, 0.3)):
        se = np.sqrt(p * (1 - p) / y.size)
        assert abs((y == k).mean() - p) < 4 * se


def test_var_names_select_sites(fitted):
    post, x, y = fitted
    idata = post.to_arviz(x, y, num_samples=5, var_names=["head.b*"])
    assert list(idata.posterior.data_vars) == ["head.bias", "loglik"]
    assert list(post.to_arviz(x, y, num_samples=5, var_names=[]).posterior.data_vars) == ["loglik"]
    with pytest.raises(arviz_io.ArvizError, match="matches no site"):
        post.to_arviz(x, y, num_samples=5, var_names=["blocks.*"])


def test_chains_and_sample_stats_split_in_order():
    post = chain_posterior()
    x, y = data()
    idata = post.to_arviz(x, y)
    bias = idata.posterior["head.bias"].values
    assert bias.shape == (4, 30, K)
    np.testing.assert_array_equal(bias[:, :, 0], np.arange(4)[:, None] * np.ones((1, 30)))
    assert idata.sample_stats["diverging"].dims == ("chain", "draw") and idata.sample_stats["lp"].shape == (4, 30)
    thinned = post.to_arviz(x, y, num_samples=40)  # 10 per chain, spread over each chain
    assert thinned.posterior["head.bias"].shape == (4, 10, K)
    np.testing.assert_array_equal(thinned.posterior["head.bias"].values[:, :, 0], np.arange(4)[:, None] * np.ones((1, 10)))
    assert thinned.sample_stats["lp"].shape == (4, 10)
    assert az.rhat(thinned.posterior_predictive[["probs"]])["probs"].shape == (N, K)


def test_netcdf_round_trip_and_arviz_functions(fitted, tmp_path):
    post, x, y = fitted
    path = arviz_io.write(post.to_arviz(x, y, num_samples=60), tmp_path / "posterior.nc")
    idata = az.from_netcdf(str(path))
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo) and loo.pareto_k.shape == (N,)
    summary = az.summary(idata, var_names=["head.bias"], kind="stats")
    assert list(summary.index) == [f"head.bias[{k}]" for k in range(K)]
    axes = az.plot_trace(idata, var_names=["head.bias"])
    assert axes.shape == (1, 2)
    other = arviz_io.write(chain_posterior().to_arviz(x, y), tmp_path / "other.nc")
    table = az.compare({"svi": idata, "fixed": az.from_netcdf(str(other))})
    assert set(table.index) == {"svi", "fixed"}


def test_datatree_path_for_arviz_1(monkeypatch, fitted, tmp_path):
    """Without az.InferenceData (ArviZ 1.x) the same groups come back as an xarray DataTree."""
    post, x, y = fitted
    monkeypatch.delattr(az, "InferenceData")
    tree = post.to_arviz(x, y, num_samples=5, test=data(10, 2))
    assert isinstance(tree, xr.DataTree)
    assert arviz_io.group(tree, "log_likelihood")["y"].shape == (1, 5, N)
    assert arviz_io.group(tree, "sample_stats") is None
    arviz_io.write(tree, tmp_path / "tree.nc")
    back = xr.open_datatree(tmp_path / "tree.nc")
    assert set(back.children) == {"posterior", "posterior_predictive", "log_likelihood", "observed_data",
                                  "predictions", "predictions_constant_data"}


def test_compare_table_loo_and_plots(fitted, tmp_path):
    post, x, y = fitted
    test = data(20, seed=3)
    result = compare({"mean_field": post, "fixed": chain_posterior(), "one-draw": Posterior(
        post.model, "map", draws={n: v[:1] for n, v in post.sample(1).items()}, point=True)},
        train=(x, y), test=test, ood=test[0] + 6, num_samples=20)
    assert set(result.metrics) == {"mean_field", "fixed", "one-draw"}
    assert result.metrics["mean_field"]["split"] == "test" and "ood_auroc" in result.metrics["fixed"]
    assert set(result.loo.index) == {"mean_field", "fixed"} and result.no_loo == ["one-draw"]
    md = result.markdown()
    assert "| mean_field | test |" in md and "elpd_loo" in md
    paths = result.plot(tmp_path)
    assert {p.name for p in paths} == {"reliability.png", "metrics.png", "entropy.png", "loo_compare.png"}
    assert all(p.stat().st_size > 1000 for p in paths)


def test_model_without_global_sites_keeps_loglik_for_loo():
    """Attention-only models have local sites alone: the posterior group holds loglik and LOO still runs."""
    from zoo import ModelError
    x, y = data()
    try:
        model = TransformerClassifier(K, input_dim=C, d_model=8, depth=1, heads=2, bayes="attention")
        post = fit(model, (x, y), guide="dirichlet", steps=2, progress=False)
    except (ModelError, ValueError):
        pytest.skip("no attention-space model in this checkout")
    idata = post.to_arviz(x, y, num_samples=12)
    assert list(idata.posterior.data_vars) == ["loglik"] and idata.posterior["loglik"].shape == (1, 12)
    assert np.isfinite(az.loo(idata).elpd_loo)
