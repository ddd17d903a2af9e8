"""Draws as ArviZ InferenceData, built from numpy arrays with explicit dims and coords.

The groups are assembled from ``xarray.Dataset``s (no framework converter, no
``az.from_dict``, whose signature changed in ArviZ 1.x), then wrapped as
``az.InferenceData`` on ArviZ 0.x or ``xarray.DataTree`` on 1.x. Layout:

=========================== ========= ==============================================
group                       variable  dims
=========================== ========= ==============================================
posterior / prior           <site>    (chain, draw, <site>_dim_0, <site>_dim_1, ...)
posterior                   loglik    (chain, draw): sum_i log p(y_i | x_i, theta), always there
posterior_predictive        y         (chain, draw, obs_id): labels drawn from p(y | x, theta)
                            probs     (chain, draw, obs_id, class): p(y = k | x, theta)
prior_predictive            y, probs  as posterior_predictive, under the prior
log_likelihood              y         (chain, draw, obs_id): log p(y_i | x_i, theta)
observed_data               y         (obs_id,)
sample_stats (MCMC only)    any       (chain, draw): what the sampler recorded
predictions (with test)     probs     (chain, draw, test_id, class)
                            ood_probs (chain, draw, ood_id, class), with ``ood``
predictions_constant_data   y         (test_id,): the true test labels
=========================== ========= ==============================================

Site names keep their dots (``blocks.0.attn.qkv.weight``). ``loglik`` keeps a
posterior group (which ``az.loo`` needs) even when no site is selected or the
model has no global sites (attention-only models). SVI posteriors have
one chain; MCMC posteriors set ``info["chains"]`` and store their S = chains x
draws draws chain after chain. A point estimate has one draw (LOO needs more).
"""
import json
from fnmatch import fnmatchcase
from pathlib import Path

import arviz as az
import numpy as np
import torch
import xarray as xr

from core.tensors import unpack
from core.memory import plan


class ArvizError(ValueError):
    """A conversion was asked for something the draws do not have."""


def as_numpy(v):
    return v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)


def dataset(variables, attrs=None):
    """``{name: (dims, array)}`` -> ``xarray.Dataset`` with integer coords on every dim."""
    coords = {}
    for dims, value in variables.values():
        for d, n in zip(dims, np.shape(value)):
            coords.setdefault(d, np.arange(n))
    return xr.Dataset({k: (dims, np.asarray(v)) for k, (dims, v) in variables.items()}, coords=coords,
                      attrs=dict(attrs or {}))


def assemble(groups):
    """``{group: Dataset}`` -> InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x)."""
    groups = {g: ds for g, ds in groups.items() if ds is not None}
    if hasattr(az, "InferenceData"):
        return az.InferenceData(**groups)
    return xr.DataTree.from_dict({f"/{g}": ds for g, ds in groups.items()})


def group(idata, name):
    """The Dataset of group ``name`` (None if absent), for InferenceData and DataTree alike."""
    if isinstance(idata, xr.DataTree):
        return idata[name].to_dataset() if name in idata.children else None
    return getattr(idata, name, None)


def group_names(idata):
    return list(idata.children) if isinstance(idata, xr.DataTree) else list(idata.groups())


def site_dims(name, shape):
    return [f"{name}_dim_{i}" for i in range(len(shape))]


def select(names, var_names):
    """Site names matching ``var_names`` (names or globs; None keeps all); refuses a pattern that matches none."""
    if var_names is None:
        return list(names)
    patterns = [var_names] if isinstance(var_names, str) else list(var_names)
    for p in patterns:
        if not any(fnmatchcase(n, p) for n in names):
            raise ArvizError(f"var_names entry '{p}' matches no site; sites are: {', '.join(names) or 'none'}")
    return [n for n in names if any(fnmatchcase(n, p) for p in patterns)]


def by_chain(value, chains):
    """[S, ...] -> [chains, S / chains, ...] (draws stored chain after chain)."""
    value = as_numpy(value)
    return value.reshape(chains, value.shape[0] // chains, *value.shape[1:])


def sites_group(draws, chains, var_names=None, attrs=None):
    """The posterior or prior group: one variable per selected site."""
    return dataset({n: (["chain", "draw", *site_dims(n, draws[n].shape[1:])], by_chain(draws[n], chains))
                    for n in select(list(draws), var_names)}, attrs)


def predictive_group(probs, chains, obs_dim, seed=0, attrs=None):
    """``y`` drawn from the per-draw class probabilities [S, N, K], and the probabilities themselves."""
    p = as_numpy(probs).astype(np.float64)
    rng = np.random.default_rng(seed)
    cum = p.cumsum(-1)
    labels = (rng.random(p.shape[:-1])[..., None] > cum[..., :-1]).sum(-1)  # inverse-CDF draw per (s, i)
    return dataset({"y": (["chain", "draw", obs_dim], by_chain(labels, chains)),
                    "probs": (["chain", "draw", obs_dim, "class"], by_chain(p.astype(np.float32), chains))}, attrs)


def log_likelihood(probs, y, chains, attrs=None):
    """log p(y_i | x_i, theta_s) for each draw s and point i, [chain, draw, obs_id]."""
    p = as_numpy(probs).astype(np.float64)
    picked = np.take_along_axis(p, as_numpy(y)[None, :, None].astype(np.int64), -1)[..., 0]
    return dataset({"y": (["chain", "draw", "obs_id"], by_chain(np.log(np.maximum(picked, 1e-300)), chains))}, attrs)


def attributes(posterior):
    attrs = {"inference_library": "pyro", "method": str(posterior.method)}
    if hasattr(posterior.model, "config"):
        attrs["model_config"] = json.dumps(posterior.model.config(), default=str)
    return attrs


def chain_index(total, chains, num_samples):
    """Indices keeping ``num_samples`` draws spread evenly within each chain (all when None)."""
    per = total // chains
    keep = per if num_samples is None else max(1, min(per, num_samples // chains))
    within = np.linspace(0, per - 1, keep).round().astype(int)
    return (np.arange(chains)[:, None] * per + within[None]).ravel()


def to_inference_data(posterior, x, y, mask=None, num_samples=None, var_names=None, test=None, ood=None, seed=0,
                      batch_size=None):
    """Convert a fitted ``Posterior`` on data ``(x, y[, mask])`` (usually the training set) to InferenceData.

    ``num_samples`` draws (SVI default 100; MCMC: all, or thinned evenly within each
    chain); ``var_names`` picks posterior sites by name or glob (default all; an empty
    list keeps only ``loglik``, enough for LOO and metrics);
    ``test=(x, y[, mask])`` adds the ``predictions`` group with the same draws,
    ``ood=(x[, mask])`` adds out-of-distribution probabilities to it.
    """
    chains = int(posterior.info.get("chains", 1))
    stats = posterior.info.get("sample_stats") or {}
    if chains > 1:
        total = posterior.num_draws(None)
        if total % chains:
            raise ArvizError(f"{total} draws do not split into {chains} chains")
        index = chain_index(total, chains, num_samples)
        s = len(index)
        draws = {n: v[torch.as_tensor(index)] for n, v in posterior.sample(None).items()}
        stats = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:])[index] for k, v in stats.items()}
    else:
        s = posterior.num_draws(num_samples)
        first = slice(0, batch_size or plan(posterior.model, x, s)[1])  # the inputs local sites see while drawing
        draws = posterior.sample(s, x[first], None if mask is None else mask[first])
        stats = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:])[:s] for k, v in stats.items()}
    probs = posterior.predict(x, s, mask, batch_size, draws=draws)
    attrs = attributes(posterior)
    loglik = log_likelihood(probs, y, chains, attrs)
    sites = sites_group(draws, chains, var_names, attrs)
    sites["loglik"] = loglik["y"].sum("obs_id")
    groups = {
        "posterior": sites,
        "posterior_predictive": predictive_group(probs, chains, "obs_id", seed, attrs),
        "log_likelihood": loglik,
        "observed_data": dataset({"y": (["obs_id"], as_numpy(y))}, attrs),
        "sample_stats": dataset({k: (["chain", "draw"], by_chain(v, chains)) for k, v in stats.items()}) if stats else None,
    }
    if test is not None or ood is not None:
        variables = {}
        if test is not None:
            xt, yt, mt = unpack(test)
            p = posterior.predict(xt, s, mt, batch_size, draws=draws)
            variables["probs"] = (["chain", "draw", "test_id", "class"], by_chain(as_numpy(p).astype(np.float32), chains))
            groups["predictions_constant_data"] = dataset({"y": (["test_id"], as_numpy(yt))})
        if ood is not None:
            xo, mo = inputs(ood)
            p = posterior.predict(xo, s, mo, batch_size, draws=draws)
            variables["ood_probs"] = (["chain", "draw", "ood_id", "class"], by_chain(as_numpy(p).astype(np.float32), chains))
        groups["predictions"] = dataset(variables, attrs)
    superchains = posterior.info.get("superchains")
    if superchains:  # a reference: each ensemble member started a run of consecutive chains
        ids = np.arange(chains) // (chains // superchains)
        groups = {g: ds.assign_coords(superchain=("chain", ids)) if ds is not None and "chain" in ds.dims else ds
                  for g, ds in groups.items()}
    return assemble(groups)


def inputs(data):
    """A tensor, an ``(x[, mask])`` pair or an object with ``.x`` (and ``.mask``) -> (x, mask)."""
    if torch.is_tensor(data):
        return data, None
    if hasattr(data, "x"):
        return data.x, getattr(data, "mask", None)
    return data[0], (data[1] if len(data) > 1 else None)


def write(idata, path):
    """Write InferenceData (or DataTree) to a netCDF file and return the path."""
    idata.to_netcdf(str(path))
    return path


def read(path):
    """Open a ``.nc`` written by ``write``; a one-line error if it is missing."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no InferenceData file '{path}'")
    return az.from_netcdf(str(path))
