"""Every guide provides what inference.guides.protocol declares, and every local posterior it attaches has the
objective term the ELBO reads (a registered KL to the site's prior) and the flags the checks read."""
import pytest
import torch
from pyro import poutine
from torch.distributions import kl_divergence

import inference
import zoo
from inference.guides.protocol import Guide, LocalGuide, is_global_draw, is_kl, local_posterior
from padded_data import padded_batch

LOCAL = {  # guide -> (bayes, attention prior)
    "dirichlet": ("attention", None), "bam": ("bam", None), "sgpa": ("sgpa", None),
    "sgpa-decoupled": ("sgpa-decoupled", None), "kep-svgp": ("kep-svgp", "kep:rank=3"), "cgpt": ("cgpt", None),
    "cgpt-sparse": ("cgpt-sparse", "cgpt-sparse:inducing=3"),
}
GLOBAL = ("map", "mean_field", "low_rank")


def tiny(bayes, attention_prior=None):
    torch.manual_seed(0)
    return zoo.TransformerClassifier(2, input_dim=3, d_model=8, depth=1, heads=2, max_len=16, bayes=bayes,
                                     attention_prior=attention_prior)


@pytest.mark.parametrize("name", GLOBAL)
def test_a_weight_space_guide_is_a_guide_without_local_sites(name):
    x, mask, _ = padded_batch()
    guide = inference.GUIDES[name](tiny("weights"), x, torch.tensor([0, 1]), mask)  # y: observed, as fit gives it
    assert isinstance(guide, Guide) and not isinstance(guide, LocalGuide)


@pytest.mark.parametrize("name", LOCAL)
def test_a_local_guide_attaches_a_posterior_with_a_registered_kl_and_declared_flags(name):
    x, mask, _ = padded_batch()
    model = tiny(*LOCAL[name])
    guide = inference.GUIDES[name](model, x, None, mask, **({"inducing": 3} if name == "sgpa-decoupled" else {}))
    assert isinstance(guide, LocalGuide)
    with torch.no_grad():
        trace = poutine.trace(guide.local(model)).get_trace(x, None, mask)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample" and local_posterior(s) is not None]
    assert len(sites) == 1  # one attention layer
    posterior, prior = local_posterior(sites[0]), sites[0]["fn"]
    assert posterior.has_rsample and torch.isfinite(kl_divergence(posterior, prior)).all()
    assert is_kl(posterior) == (name not in ("cgpt", "cgpt-sparse"))
    assert is_global_draw(posterior) == (name == "kep-svgp")
