"""IVON (Shen et al., ICML 2024): a mean-field Gaussian posterior fitted by the Improved Variational Online Newton rule.

IVON is an optimizer rather than a loss. Each step draws ``mc_samples`` weight vectors theta from
q = N(m, sigma^2), sigma = 1 / sqrt(ess (h + delta)), takes the gradient g_hat of the mean negative
log-likelihood at each, estimates the Hessian diagonal as h_hat = g_hat (theta - m) / sigma^2 (the
reparameterization trick), and updates, as in Algorithm 1 of the paper with its optional lr rescaling:

    g <- beta1 g + (1 - beta1) g_hat
    h <- beta2 h + (1 - beta2) h_hat + (1 - beta2)^2 (h - h_hat)^2 / (2 (h + delta))
    m <- m - lr_t (hess_init + delta) (g / (1 - beta1^t) + delta (m - prior_mean)) / (h + delta)

The last term of the h update keeps h + delta positive whatever h_hat is. ``ess`` is N / T (the
training-set size over the temperature). The weight decay delta is the model's prior, not a knob of
its own: a site with prior N(mu, s^2) has delta = 1 / (ess s^2), which puts IVON's fixed point at a
stationary point of the tempered ELBO; other priors are refused. ``lr_t`` follows the cosine schedule
of the SVI guides (lr to lr / 10); the rescaling by (hess_init + delta) makes the first steps plain SGD
steps of size lr, so that lr and hess_init (which sets the starting sigma) can be chosen apart.
Network parameters that are not sites (layer norms; the body under ``bayes="last-layer"``) are point
estimates trained by Adam at ``point_lr`` on the same expected loss.

The fit returns a Posterior over the same sites whose guide is a ``MeanField`` with IVON's means and
scales, so prediction, ArviZ, save and load are those of ``mean_field``.
"""
import math
import time

import pyro.distributions as dist
import torch
from pyro import poutine
from tqdm.auto import tqdm

from core.checks import check, integer, number
from core.tensors import minibatches
from core.training import adam_cosine

from ..elbo import NonFiniteError, particles
from ..svi import FitError, kl_weight
from ..posterior import Posterior
from ..sites import in_data_plate
from .weight import MIN_SCALE, MeanField, _key

OPTIONS = {
    "mc_samples": integer(1),
    "beta1": number(0, 1, low_open=False),
    "beta2": number(0, 1, low_open=False),
    "hess_init": number(0),
    "ess": number(0, optional=True),
    "point_lr": number(0),
}


def gaussian_priors(sites):
    """Name -> (prior mean, prior precision) per element; a one-line FitError for a site whose prior is not Normal."""
    out = {}
    for name, site in sites.items():
        base = site["fn"]
        while isinstance(base, dist.Independent):
            base = base.base_dist
        if not isinstance(base, torch.distributions.Normal):
            raise FitError(f"guide 'ivon' needs a Gaussian prior on every site (its weight decay is the prior's "
                           f"precision); site '{name}' has a {type(base).__name__} prior")
        out[name] = (site["fn"].mean.detach(), site["fn"].variance.detach().reciprocal())
    return out


def check_model(model, x, y, mask, sites):
    """Refuse a model IVON cannot fit: no weight sites, or local (per-input) sites such as attention rows."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(x, y, mask)
    local = [n for n, site in trace.iter_stochastic_nodes() if in_data_plate(site)]
    if local:
        raise FitError(f"guide 'ivon' fits weight sites only; this model also has the local site '{local[0]}' "
                       f"(attention rows): use bayes='weights', 'last-layer' or 'adapters'")
    if not sites:
        raise FitError(f"guide 'ivon' has nothing to fit: the model has no weight sites "
                       f"(bayes={getattr(model, 'bayes', None)!r}); use guide='map' to train the network")


class IVON:
    """IVON's state over the sites (name -> tensor of the site's shape): means m, Hessian estimates h, momentum g.

    ``weight`` is the KL's weight w of a warm-up (1 without one): weighting the KL by w is fitting with
    ess / w, so the prior's weight decay and the posterior's width both grow from near 0 to their values.
    """

    def __init__(self, loc, priors, ess, hess_init, beta1, beta2):
        self.m = {k: v.detach().clone() for k, v in loc.items()}
        self.h = {k: torch.full_like(v, hess_init) for k, v in self.m.items()}
        self.g = {k: torch.zeros_like(v) for k, v in self.m.items()}
        self.prior_mean = {k: priors[k][0] for k in self.m}
        self.precision = {k: priors[k][1] for k in self.m}  # the prior's
        self.rescale = {k: hess_init + self.precision[k] / ess for k in self.m}
        self.ess, self.beta1, self.beta2, self.steps, self.weight = ess, beta1, beta2, 0, 1.0

    def delta(self, k):
        """The weight decay: the prior's precision over the effective sample size."""
        return self.precision[k] / (self.ess / self.weight)

    def scales(self):
        ess = self.ess / self.weight
        return {k: (ess * (self.h[k] + self.delta(k))).rsqrt() for k in self.m}

    def kl(self):
        """KL(q || prior), summed over every site and element."""
        total = 0.0
        for k, scale in self.scales().items():
            ratio = scale**2 * self.precision[k]
            total += 0.5 * (ratio + self.precision[k] * (self.m[k] - self.prior_mean[k]) ** 2 - 1 - ratio.log()).sum()
        return total

    @torch.no_grad()
    def step(self, eps, grads, lr):
        """One update from the draws' noise ``eps`` [S, *shape] and the mean loss's gradients at them [S, *shape]."""
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        for k, scale in self.scales().items():
            g_hat = grads[k].mean(0)
            h_hat = (grads[k] * eps[k]).mean(0) / scale
            self.g[k].mul_(b1).add_(g_hat, alpha=1 - b1)
            h, delta = self.h[k], self.delta(k)
            self.h[k] = b2 * h + (1 - b2) * h_hat + 0.5 * (1 - b2) ** 2 * (h - h_hat) ** 2 / (h + delta)
            direction = self.g[k] / (1 - b1**self.steps) + delta * (self.m[k] - self.prior_mean[k])
            self.m[k] -= lr * self.rescale[k] * direction / (self.h[k] + delta)


def negative_loglik(model, theta, x, y, mask, n, draws):
    """The negative log-likelihood summed over the ``draws`` weight vectors, each scaled to ``n`` training points."""
    values = {k: v.reshape(draws, 1, *v.shape[1:]) if draws > 1 else v[0] for k, v in theta.items()}
    with particles(draws):
        trace = poutine.trace(poutine.condition(model, values)).get_trace(x, y, mask, n)
    return -sum(site["scale"] * site["fn"].log_prob(site["value"]).sum() for name, site in trace.nodes.items()
                if site["type"] == "sample" and site["is_observed"] and name not in values)


def draws_and_gradients(model, state, batch, n, mc_samples, step):
    """``mc_samples`` weight draws from q, and each draw's gradient of the mean negative log-likelihood (point
    parameters' gradients accumulate for their optimizer): (noise, gradients, summed NLL); NonFiniteError naming
    the step (and the site) where either is not finite."""
    scales = state.scales()
    eps = {k: torch.randn(mc_samples, *m.shape, device=m.device, dtype=m.dtype) for k, m in state.m.items()}
    theta = {k: (state.m[k] + scales[k] * eps[k]).requires_grad_() for k in state.m}
    nll = negative_loglik(model, theta, *batch, n, mc_samples)
    if not torch.isfinite(nll):
        raise NonFiniteError(f"the negative log-likelihood is {nll.item()} at step {step} (try a lower lr or a "
                             f"higher hess_init)")
    (nll / (n * mc_samples)).backward()  # each draw's gradient of the mean loss, over mc_samples
    grads = {k: v.grad * mc_samples for k, v in theta.items()}
    bad = next((k for k, grad in grads.items() if not torch.isfinite(grad).all()), None)
    if bad is not None:
        raise NonFiniteError(f"gradient of '{bad}' is not finite at step {step} (try a lower lr)")
    return eps, grads, nll


@torch.no_grad()
def write_into(guide, state):
    """IVON's means and scales into the ``MeanField`` guide that the Posterior holds."""
    for k, scale in state.scales().items():
        guide.loc[_key(k)].copy_(state.m[k])
        guide.rho[_key(k)].copy_(inverse_softplus((scale - MIN_SCALE).clamp_min(1e-12)))


def cosine(lr, step, steps):
    """The SVI guides' schedule: lr at step 0, cosine-decayed to lr / 10 over ``steps`` (CosineAnnealingLR's form)."""
    return lr / 10 + (lr - lr / 10) * (1 + math.cos(math.pi * step / max(steps, 1))) / 2


def inverse_softplus(value):
    return value + torch.log(-torch.expm1(-value))


def fit_ivon(model, data, *, steps=1000, lr=0.1, batch_size=None, temperature=1.0, seed=0, progress=True,
             kl_anneal=0, mc_samples=1, beta1=0.9, beta2=0.999, hess_init=30.0, ess=None, point_lr=1e-2):
    """A mean-field Gaussian posterior over the weight sites by ``steps`` IVON updates (see the module docstring).

    ``lr``: the step on the means (cosine-decayed to lr / 10; 0.1 suits ItalyPowerDemand); ``hess_init``: the
    starting Hessian estimate h0, so the starting scale is about 1 / sqrt(ess h0); ``mc_samples``: weight draws
    per step; ``beta1``, ``beta2``: the gradient's momentum and the Hessian's averaging; ``ess``: the effective
    sample size (default N / T; give it or ``temperature``, not both); ``kl_anneal``: steps of KL warm-up, as the
    SVI guides' and MAP's (the KL's weight w ramps to 1, which is fitting with ess / w); ``point_lr``: Adam's
    learning rate for the network parameters that are not sites. Minibatches of ``batch_size`` are drawn as the SVI
    guides draw them.
    """
    settings = {"mc_samples": mc_samples, "beta1": beta1, "beta2": beta2, "hess_init": hess_init, "ess": ess,
                "point_lr": point_lr}
    check(settings, OPTIONS, FitError)
    if ess is not None and temperature != 1.0:
        raise FitError(f"give ess or temperature, not both: ess is N / T (got ess={ess}, temperature={temperature})")
    x, y, mask = data
    n = x.shape[0]
    ess = float(n / temperature if ess is None else ess)
    proto = (x[:2], y[:2], None if mask is None else mask[:2])
    guide = MeanField(model, *proto).to(x.device)
    check_model(model, *proto, guide.sites)
    state = IVON({k: guide.loc[_key(k)] for k in guide.sites}, gaussian_priors(guide.sites), ess, hess_init, beta1,
                 beta2)
    point = [p for p in model.parameters() if p.requires_grad]
    adam, schedule = adam_cosine(point, point_lr, steps) if point else (None, None)
    bar = tqdm(minibatches(n, batch_size, steps, torch.Generator().manual_seed(seed)), total=steps, desc="fit ivon",
               disable=not progress, leave=False)
    losses, started = [], time.perf_counter()
    model.train()
    for step, idx in enumerate(bar):
        xb, yb, mb = (x, y, mask) if idx is None else (x[idx], y[idx], None if mask is None else mask[idx])
        state.weight = kl_weight(step, kl_anneal)
        if adam:
            adam.zero_grad(set_to_none=True)
        eps, grads, nll = draws_and_gradients(model, state, (xb, yb, mb), n, mc_samples, step)
        with torch.no_grad():  # the negative ELBO per datum
            losses.append((nll.item() / mc_samples / temperature + state.weight * state.kl().item()) / n)
        state.step(eps, grads, cosine(lr, step, steps))
        if adam:
            adam.step()
            schedule.step()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    write_into(guide, state)
    info = {"losses": losses, "steps": steps, "temperature": temperature, "seed": seed, "guide_options": {},
            "ivon": {"lr": lr, "kl_anneal": kl_anneal, **settings, "ess": ess},
            "fit_seconds": time.perf_counter() - started}
    return Posterior(model, "ivon", guide=guide, info=info, x_proto=proto[0], mask_proto=proto[2])
