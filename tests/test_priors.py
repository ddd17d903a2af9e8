"""Prior samplers against scipy (KS tests), spec parsing, and glob assignment."""
import json

import pyro
import pytest
import torch
from scipy import stats

import priors
from priors import Gaussian, HierarchicalGaussian, Laplace, PriorError, PriorMap, Site, StudentT

SITE = Site("blocks.0.mlp.fc.weight", (4000,), 16, "weight")
ALPHA = 1e-3  # KS p-value threshold: a correct sampler fails with probability 0.001


def draws(prior, site=SITE):
    torch.manual_seed(0)
    return prior(site).sample().double().numpy()


@pytest.mark.parametrize("prior, reference", [
    (Gaussian(2.0), stats.norm(0, 2.0)),
    (Gaussian(1.0, fan_in=True), stats.norm(0, 1 / 4)),  # fan_in 16
    (Laplace(0.5), stats.laplace(0, 0.5)),
    (StudentT(3.0, 1.5), stats.t(3.0, 0, 1.5)),
    (StudentT(5.0, 1.0, fan_in=True), stats.t(5.0, 0, 0.25)),
])
def test_samplers_match_scipy(prior, reference):
    assert stats.kstest(draws(prior), reference.cdf).pvalue > ALPHA


def test_samplers_reject_a_wrong_reference():
    """The KS check has power: the same draws are rejected against a 10% wider Gaussian."""
    assert stats.kstest(draws(Gaussian(2.0)), stats.norm(0, 2.2).cdf).pvalue < ALPHA


def test_hierarchical_scale_is_a_site_with_halfnormal_prior():
    site = Site("head.weight", (3,), 1, "weight")
    scales = []
    for i in range(3000):
        pyro.set_rng_seed(i)
        trace = pyro.poutine.trace(lambda: pyro.sample(site.name, HierarchicalGaussian(2.0, fan_in=False)(site))).get_trace()
        scales.append(trace.nodes["head.weight.prior_scale"]["value"].item())
    assert stats.kstest(scales, stats.halfnorm(0, 2.0).cdf).pvalue > ALPHA


def test_empirical_prior_moments_come_from_the_trained_weights():
    """Weights built to have mean 0.1 and sample standard deviation 0.3 exactly; a bias [1, 3] (mean 2, sample
    std sqrt 2); a one-entry tensor and a near-constant one, whose std min_scale floors."""
    z = torch.randn(50, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    z = (z - z.mean()) / z.std()  # mean 0, sample std (n - 1 in the denominator) 1
    prior = priors.Empirical.fit({"head.weight": (0.1 + 0.3 * z).float(), "head.bias": torch.tensor([1.0, 3.0]),
                                  "blocks.0.norm.bias": torch.tensor([-0.5]),
                                  "blocks.0.norm.weight": 1 + 1e-4 * torch.arange(8.0)}, min_scale=0.05)
    for name, shape, loc, scale in [("head.weight", (50, 40), 0.1, 0.3), ("head.bias", (2,), 2.0, 2**0.5),
                                    ("blocks.0.norm.bias", (1,), -0.5, 0.05),
                                    ("blocks.0.norm.weight", (8,), 1 + 3.5e-4, 0.05)]:
        d = prior(Site(name, shape, 1)).base_dist
        assert torch.allclose(d.loc, torch.tensor(loc), rtol=1e-6), name
        assert torch.allclose(d.scale, torch.tensor(scale), rtol=1e-6), name
    with pytest.raises(PriorError, match="blocks.0"):
        prior(Site("blocks.0.attn.qkv.weight", (2,), 1))


@pytest.mark.parametrize("spec", ["gaussian:scale=1", "gaussian:scale=0.5,fan_in=true", "laplace:scale=0.1,fan_in=false",
                                  "student-t:df=3,scale=1,fan_in=false", "hierarchical:hyper_scale=1,fan_in=true"])
def test_spec_round_trip(spec):
    prior = priors.parse(spec)
    assert priors.parse(prior.spec()).spec() == prior.spec()


@pytest.mark.parametrize("spec, words", [
    ("gausian", ["unknown prior 'gausian'", "gaussian"]),
    ("gaussian:scale=-1", ["scale", "-1"]),
    ("student-t:df=0", ["df"]),
    ("gaussian:width=2", ["no parameter 'width'", "scale"]),
    ("gaussian:scale", ["key=value"]),
    ("missing.json", ["missing.json", "does not exist"]),
])
def test_bad_specs_name_the_problem(spec, words):
    with pytest.raises(PriorError) as err:
        priors.parse(spec)
    for word in words:
        assert word in str(err.value)


def test_json_spec_file_maps_globs(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"head.*": "student-t:df=3", "*": "gaussian:fan_in=true"}))
    chosen = priors.parse(str(path)).resolve(["blocks.0.mlp.fc.weight", "head.weight"])
    assert isinstance(chosen["head.weight"], StudentT) and isinstance(chosen["blocks.0.mlp.fc.weight"], Gaussian)


def test_prior_map_first_glob_wins_and_unmatched_glob_is_named():
    pm = PriorMap({"head.*": Laplace(1.0), "*": Gaussian(1.0)})
    assert isinstance(pm.resolve(["head.bias", "embed.weight"])["head.bias"], Laplace)
    with pytest.raises(PriorError, match="'blocks.9.*'"):
        PriorMap({"blocks.9.*": Gaussian(1.0), "*": Gaussian(1.0)}).resolve(["head.weight"])
    with pytest.raises(PriorError, match="embed.weight"):
        PriorMap({"head.*": Gaussian(1.0)}).resolve(["head.weight", "embed.weight"])
