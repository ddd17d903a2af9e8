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


def convergence(values, superchains=None):
    """Worst split R-hat and lowest bulk / tail ESS over every entry of ``values`` [C, D, ...].

    With ``superchains`` (K groups of consecutive chains, each started from one
    point), also the worst and median nested R-hat and the variance between
    superchains (modes) and within them, averaged over entries (``mode_variance``).
    """
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
    out = {"rhat_max": float(np.nanmax(rhat)), "ess_bulk_min": float(np.nanmin(bulk)),
           "ess_tail_min": float(np.nanmin(tail)), "rhat_median": float(np.nanmedian(rhat)),
           "ess_bulk_median": float(np.nanmedian(bulk)), "entries": int(flat.shape[-1]),
           "rhat_over_1.05": float(np.mean(rhat > 1.05))}
    if superchains:
        nested = nested_rhat(flat, superchains)
        out.update({"nrhat_max": float(np.nanmax(nested)), "nrhat_median": float(np.nanmedian(nested)),
                    "nrhat_over_1.05": float(np.mean(nested > 1.05)), **mode_variance(flat, superchains)})
    return out


def nested_rhat(values, superchains):
    """Nested R-hat (Margossian et al. 2024) of every entry of ``values`` [C, D, ...]: an array [...].

    The C chains form ``superchains`` groups of consecutive chains (K groups of M),
    each group started from one point. With chain means m_km and superchain means
    m_k: B = var_k(m_k), W = mean_k(var_m(m_km) + mean_m var_d(chain km)) (each term
    0 when M = 1 or D = 1), and nested R-hat = sqrt(1 + B / W). Near 1 once chains
    have forgotten their superchain's start, even when every chain is short.
    """
    values = np.asarray(values, dtype=float)
    c, d = values.shape[:2]
    if superchains < 2 or c % superchains:
        raise ValueError(f"{c} chains do not form {superchains} equal superchains (nested R-hat needs >= 2)")
    v = values.reshape(superchains, c // superchains, d, -1)
    chain_mean = v.mean(axis=2)  # [K, M, E]
    between_chains = chain_mean.var(axis=1, ddof=1) if v.shape[1] > 1 else 0.0
    within_chains = v.var(axis=2, ddof=1).mean(axis=1) if d > 1 else 0.0
    between = chain_mean.mean(axis=1).var(axis=0, ddof=1)
    within = np.mean(between_chains + within_chains, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(1 + between / within).reshape(values.shape[2:])


def mode_variance(values, superchains):
    """Variance between superchain means (between modes) and within superchains, averaged over entries.

    By the law of total variance the two add up to the variance of all draws;
    ``between_mode_share`` is the first over their sum.
    """
    v = np.asarray(values, dtype=float)
    c, d = v.shape[:2]
    if superchains < 1 or c % superchains:
        raise ValueError(f"{c} chains do not form {superchains} equal superchains")
    v = v.reshape(superchains, c // superchains * d, -1)  # [K, M * D, E]
    between = v.mean(axis=1).var(axis=0).mean()
    within = v.var(axis=1).mean()
    return {"between_mode": float(between), "within_mode": float(within),
            "between_mode_share": float(between / (between + within)) if between + within > 0 else float("nan")}


def function_space(posterior, x, mask=None):
    """R-hat / ESS on held-out predictive probabilities of a multi-chain draws-based posterior.

    For a reference (``info["superchains"]``) also nested R-hat and the between- and
    within-mode variance of those probabilities.
    """
    probs = posterior.predict(x, mask=mask)  # [C * D, N, K]
    probs = probs[..., 1:] if probs.shape[-1] == 2 else probs  # p(class 0) = 1 - p(class 1): count once
    return convergence(by_chain(probs, posterior.info.get("chains", 1)), posterior.info.get("superchains"))


def weight_space(posterior):
    """R-hat / ESS over every drawn weight (kept for comparison; see the module note on symmetry)."""
    chains = posterior.info.get("chains", 1)
    flat = torch.cat([v.reshape(v.shape[0], -1) for v in posterior.draws.values()], dim=1)
    return convergence(by_chain(flat, chains))


def predictive_distance(probs, reference, x=None, mask=None):
    """Mean over points of total variation and KL(reference || method) between posterior predictives.

    ``probs`` and ``reference`` are per-draw class probabilities [S, N, K] (or
    already averaged [N, K]) on the same inputs, or fitted posteriors (anything
    with ``predict``), which are then evaluated on ``x`` (and ``mask``): a method's
    distance to the reference is ``predictive_distance(posterior, reference, x_test)``.
    Returns ``tv`` (mean total variation), ``tv_max`` (worst point) and ``kl``.
    """
    def predictive(q):
        if not hasattr(q, "predict"):
            return q
        if x is None:
            raise ValueError("predictive_distance of a posterior needs the inputs x to predict on")
        return q.predict(x, mask=mask)
    probs, reference = predictive(probs), predictive(reference)
    p = (probs.mean(0) if probs.dim() == 3 else probs).double().clamp_min(1e-12)
    r = (reference.mean(0) if reference.dim() == 3 else reference).double().clamp_min(1e-12).to(p.device)
    if p.shape != r.shape:
        raise ValueError(f"predictions {tuple(p.shape)} and reference {tuple(r.shape)} cover different points")
    tv = 0.5 * (p - r).abs().sum(-1)
    kl = (r * (r.log() - p.log())).sum(-1)
    return {"tv": tv.mean().item(), "tv_max": tv.max().item(), "kl": kl.mean().item()}
