"""Which trace sites are which: the few predicates every inference module needs, written once.

A site is *sampled* when it is a sample statement other than a plate's
subsample, and *latent* when it is also not observed. It is *global* when it is
latent, not a guide's auxiliary variable and outside the ``data`` plate (weights,
hyper-parameters); local sites (attention rows) live inside that plate.
"""
from pyro.poutine.util import site_is_subsample


def is_sampled(site):
    return site["type"] == "sample" and not site_is_subsample(site)


def is_latent(site):
    return is_sampled(site) and not site["is_observed"]


def in_data_plate(site):
    return any(f.name == "data" for f in site["cond_indep_stack"])


def is_global(site):
    return is_latent(site) and not site["infer"].get("is_auxiliary") and not in_data_plate(site)


def with_local_sites(model, guide):
    """``model`` with the local sites an attention guide draws in the model's own pass (``guide.local``)."""
    local = getattr(guide, "local", None)
    return local(model) if local is not None else model
