"""Convergence judged in function space, and predictive distance to a reference posterior.

Weight-space R-hat is misleading for neural networks: permuting hidden units or
attention heads (and flipping signs through odd activations) maps a posterior
mode to an equally good one, so chains that each explore one copy disagree in
every weight while computing the same function. What a user consumes is the
predictive distribution, so R-hat and effective sample size are computed on the
predictive probability of every held-out point and class, where those
symmetries vanish. Both use ArviZ (rank-normalized split R-hat, bulk/tail ESS).
"""
import arviz as az
import numpy as np
import torch


def by_chain(values, chains):
    """[C * D, ...] (chain-major, as draws-based posteriors store them) -> numpy [C, D, ...]."""
    values = values.detach().cpu().double().numpy() if torch.is_tensor(values) else np.asarray(values, float)
    if values.shape[0] % chains:
        raise ValueError(f"{values.shape[0]} draws do not split into {chains} chains")
    return values.reshape(chains, values.shape[0] // chains, *values.shape[1:])


def convergence(values):
    """Worst split R-hat and lowest bulk / tail ESS over every entry of ``values`` [C, D, ...]."""
    values = np.asarray(values, dtype=float)
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    varying = flat.std(axis=(0, 1)) > 0  # constant entries (e.g. a saturated probability) carry no information
    flat = flat[..., varying]
    if flat.shape[-1] == 0:
        return {"rhat_max": float("nan"), "ess_bulk_min": float("nan"), "ess_tail_min": float("nan"), "entries": 0}
    data = az.convert_to_dataset({"v": flat})
    rhat = az.rhat(data, method="rank")["v"].values
    bulk = az.ess(data, method="bulk")["v"].values
    tail = az.ess(data, method="tail")["v"].values
    return {"rhat_max": float(np.nanmax(rhat)), "ess_bulk_min": float(np.nanmin(bulk)),
            "ess_tail_min": float(np.nanmin(tail)), "rhat_median": float(np.nanmedian(rhat)),
            "ess_bulk_median": float(np.nanmedian(bulk)), "entries": int(flat.shape[-1]),
            "rhat_over_1.05": float(np.mean(rhat > 1.05))}


def function_space(posterior, x, mask=None):
    """R-hat / ESS on held-out predictive probabilities of a multi-chain draws-based posterior."""
    probs = posterior.predict(x, mask=mask)  # [C * D, N, K]
    probs = probs[..., 1:] if probs.shape[-1] == 2 else probs  # p(class 0) = 1 - p(class 1): count once
    return convergence(by_chain(probs, posterior.info.get("chains", 1)))


def weight_space(posterior):
    """R-hat / ESS over every drawn weight (kept for comparison; see the module note on symmetry)."""
    chains = posterior.info.get("chains", 1)
    flat = torch.cat([v.reshape(v.shape[0], -1) for v in posterior.draws.values()], dim=1)
    return convergence(by_chain(flat, chains))


def predictive_distance(probs, reference):
    """Mean over points of total variation and KL(reference || method) between posterior predictives.

    ``probs`` and ``reference`` are per-draw class probabilities [S, N, K] (or
    already averaged [N, K]) on the same inputs.
    """
    p = (probs.mean(0) if probs.dim() == 3 else probs).double().clamp_min(1e-12)
    r = (reference.mean(0) if reference.dim() == 3 else reference).double().clamp_min(1e-12)
    if p.shape != r.shape:
        raise ValueError(f"predictions {tuple(p.shape)} and reference {tuple(r.shape)} cover different points")
    tv = 0.5 * (p - r).abs().sum(-1)
    kl = (r * (r.log() - p.log())).sum(-1)
    return {"tv": tv.mean().item(), "tv_max": tv.max().item(), "kl": kl.mean().item()}
