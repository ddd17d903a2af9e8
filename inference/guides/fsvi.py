"""``fsvi``: function-space VI with a Gaussian-process prior over the logits (Cinquin & Bamler, 2024).

q(w) = N(m, diag(s^2)) over the model's weight sites (every weight with
``bayes="weights"``, the head alone with ``"last-layer"``: the model's ``bayes`` picks the
subset; the other parameters are point estimates). Linearized around its mean, the
network's K logits on M context points are Gaussian: mean f(X; m) and covariance
J S J^T, J the per-input Jacobian of the logits with respect to the sites at m
(``torch.func``: ``vmap`` over inputs of ``jacrev``, no loop over outputs). The ELBO's
KL is the regularized KL divergence D^gamma (Quang 2019) between that Gaussian measure
and the GP prior, estimated on context points X: ``context_points`` inputs drawn from a
context distribution (``uniform``: each step uniform in the batch's range there; ``mix``:
random convex combinations of two series of the batch), plus ``batch_points`` inputs of
the batch (default none: chosen on validation, see docs/function-space.md).

The expected log-likelihood, and every prediction of the fitted ``Posterior``, runs the
network itself on weights drawn from q (vectorized over draws, as ``mean_field``); the
linearization serves the KL only (as in Rudner et al. 2022). The weight prior of the model
plays no part: in the model's pass each weight site's prior is replaced by q itself, whose
closed-form KL to itself is exactly 0, so ``inference.elbo`` adds the function-space KL
alone, which this guide contributes as the auxiliary site ``fsvi.kl`` when it sees labels.

The Jacobian is a constant of each step (``jacobian_grad=False``, the default, as
``grad_flow_jacobian=False`` in Rudner et al.'s reference code): the KL's gradient reaches the
weight means through the mean function f(X; m) and the scales through J S J^T, not through
J's own dependence on m, which would need a second backward pass through the per-input
Jacobians (about twice the step's cost). ``jacobian_grad=True`` follows that path too.

``divergence="kl"`` is the earlier tractable FSVI of Rudner et al. (2022): the plain KL
between the same two Gaussians on the context points, kept computable by a fixed jitter
of 1e-6 instead of gamma. See docs/function-space.md.
"""
import math
import numbers
import warnings

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
import torch.nn.functional as F
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.func import jacrev, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.linalg import NotPositiveDefinite, cholesky
import priors
from priors import GP

from ..sites import is_global
from .weight import MIN_SCALE, _key

GAMMA = 1e-2  # default regularization of the covariance operators (see docs/function-space.md)
CONTEXT_POINTS = 16
BATCH_POINTS = 0
CONTEXTS = ("mix", "uniform")
DIVERGENCES = ("regularized", "kl")
KL_JITTER = 1e-6  # divergence="kl": the fixed jitter of Rudner et al. (2022) on both covariances
CHOLESKY_JITTER = (1e-8, 1e-6, 1e-4)  # retries, times the mean variance, before the KL is given up as NaN
KL_SITE = "fsvi.kl"


def gaussian_kl(mean_q, cov_q, mean_p, cov_p):
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)) through Cholesky factors; NaN if one cannot be had.

    A factor that fails is retried with jitter ``CHOLESKY_JITTER`` x the mean variance.
    """
    lq, lp = _cholesky(cov_q, "variational"), _cholesky(cov_p, "prior")
    if lq is None or lp is None:
        return mean_q.new_tensor(float("nan")).sum()
    n = mean_q.shape[-1]
    mahalanobis = torch.linalg.solve_triangular(lp, (mean_q - mean_p)[:, None], upper=False).square().sum()
    trace = torch.linalg.solve_triangular(lp, lq, upper=False).square().sum()  # tr(cov_p^-1 cov_q)
    logdet = 2 * (lp.diagonal().log().sum() - lq.diagonal().log().sum())
    return 0.5 * (mahalanobis + trace - n + logdet)


def regularized_kl(mean_q, cov_q, mean_p, cov_p, gamma, num_points):
    """The estimate of the regularized KL D^gamma between two Gaussian measures from ``num_points`` points.

    ``mean_*`` [N] and ``cov_*`` [N, N] are the measures' means and Gram matrices on the
    points (N = ``num_points`` x outputs). Quang's D^gamma regularizes the covariance
    operators on L2(rho), which the points estimate as Gram / num_points; written with
    the Gram matrices it is the ordinary KL between N(mean_q, cov_q + gamma num_points I)
    and N(mean_p, cov_p + gamma num_points I): finite for any covariances, and the plain
    KL in the limit gamma -> 0 where that is finite.
    """
    shift = gamma * num_points * torch.eye(mean_q.shape[-1], dtype=cov_q.dtype, device=cov_q.device)
    return gaussian_kl(mean_q, cov_q + shift, mean_p, cov_p + shift)


def _cholesky(a, which):
    """The factor of ``a`` by the jitter policy (``core.linalg.cholesky``): as it is, then with ``CHOLESKY_JITTER``;
    None, with a warning, when none works."""
    try:
        return cholesky(a, (0.0, *CHOLESKY_JITTER))[0]
    except NotPositiveDefinite:
        warnings.warn(f"fsvi: the {which} covariance on the context points is not positive definite even with "
                      f"jitter {CHOLESKY_JITTER[-1]:g} x its mean variance; the KL at site '{KL_SITE}' is NaN",
                      stacklevel=3)
        return None


def context_inputs(x, mask, num, kind, batch_points=None):
    """``batch_points`` inputs of the batch (a random subset; all when None) followed by ``num`` inputs
    drawn from the context distribution ``kind`` (both from the whole batch), and their masks.

    ``uniform``: each step and channel uniform between the batch's smallest and largest real
    values there, on the mask of a random series of the batch. ``mix``: lam x_a + (1 - lam) x_b
    for random series a, b of the batch and lam ~ U(0, 1), on a's mask (where b is padding,
    a's value stays).
    """
    n = x.shape[0]
    first = torch.randint(0, n, (num,), device=x.device)
    new_mask = None if mask is None else mask[first]
    if kind == "mix":
        second = torch.randint(0, n, (num,), device=x.device)
        a, b = x[first], x[second]
        if mask is not None:
            b = torch.where(mask[second][..., None], b, a)
        lam = torch.rand(num, 1, 1, dtype=x.dtype, device=x.device)
        new = lam * a + (1 - lam) * b
    else:
        real = torch.ones_like(x, dtype=torch.bool) if mask is None else mask[..., None].expand_as(x)
        low = x.masked_fill(~real, float("inf")).amin(0)
        high = x.masked_fill(~real, float("-inf")).amax(0)
        low, high = (torch.where(torch.isfinite(v), v, torch.zeros_like(v)) for v in (low, high))
        new = low + (high - low) * torch.rand(num, *x.shape[1:], dtype=x.dtype, device=x.device)
    if batch_points is not None and batch_points < n:
        keep = torch.randperm(n, device=x.device)[:batch_points]
        x, mask = x[keep], (None if mask is None else mask[keep])
    return torch.cat([x, new]), (None if mask is None else torch.cat([mask, new_mask]))


class WithoutWeightPrior(Messenger):
    """In the model's pass, each weight site's prior is q itself: fsvi has no weight prior, and the
    closed-form KL of q to itself is exactly 0, so the ELBO's KL is the function-space term alone."""

    def __init__(self, guide):
        super().__init__()
        self.guide = guide

    def _pyro_sample(self, msg):
        if msg["name"] in self.guide.names and not msg["is_observed"]:
            msg["fn"] = self.guide.q(msg["name"])


class FSVI(nn.Module):
    """Mean-field Normal over the weight sites, fitted against a GP prior over the logits.

    Options: ``prior`` (a ``gp:...`` spec; default the model's prior when it is a GP, else
    ``gp`` with its defaults), ``gamma`` (regularization, default ``GAMMA``),
    ``context_points`` (inputs drawn from the context distribution, default ``CONTEXT_POINTS``),
    ``batch_points`` (how many of the batch's inputs join them, default ``BATCH_POINTS``; None: all),
    ``context`` (``mix`` or ``uniform``), ``divergence`` (``regularized`` or ``kl``),
    ``init_scale`` (initial weight sd, 1e-2), ``jacobian_grad`` (also differentiate J through
    the weight means; default False, see the module's docstring).
    """

    def __init__(self, model, x, y=None, mask=None, prior=None, gamma=GAMMA, context_points=CONTEXT_POINTS,
                 batch_points=BATCH_POINTS, context="uniform", divergence="regularized", init_scale=1e-2,
                 jacobian_grad=False):
        super().__init__()
        _check_model(model)
        if not (isinstance(gamma, numbers.Real) and not isinstance(gamma, bool) and 0 < gamma < math.inf):
            raise TypeError(f"gamma must be a positive number, got {gamma!r}")
        if not _integer(context_points, 1):
            raise TypeError(f"context_points must be an integer >= 1 (inputs drawn from the context distribution), "
                            f"got {context_points!r}")
        if not (batch_points is None or _integer(batch_points, 0)):
            raise TypeError(f"batch_points must be None (the whole batch) or an integer >= 0, got {batch_points!r}")
        if context not in CONTEXTS:
            raise TypeError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
        if divergence not in DIVERGENCES:
            raise TypeError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        if not isinstance(jacobian_grad, bool):
            raise TypeError(f"jacobian_grad must be True or False, got {jacobian_grad!r}")
        if not init_scale > MIN_SCALE:
            raise TypeError(f"init_scale must be greater than {MIN_SCALE}, got {init_scale}")
        self.prior = function_prior(prior, model)
        self.gamma, self.context, self.divergence = float(gamma), context, divergence
        self.context_points, self.batch_points = int(context_points), batch_points
        self.jacobian_grad = jacobian_grad
        self.__dict__["net"] = model.net  # not a submodule: the network's parameters belong to the model
        self.names = list(model.sites)
        self.event_dims = {n: len(model.sites[n].shape) for n in self.names}
        initial = model.initial_values()
        rho = math.log(math.expm1(float(init_scale) - MIN_SCALE))
        self.loc = nn.ParameterDict({_key(n): nn.Parameter(initial[n].detach().clone()) for n in self.names})
        self.rho = nn.ParameterDict({_key(n): nn.Parameter(torch.full_like(initial[n], rho)) for n in self.names})
        _check_sites(self, model, x, y, mask)

    def scales(self):
        return {n: F.softplus(self.rho[_key(n)]) + MIN_SCALE for n in self.names}

    def q(self, name):
        scale = F.softplus(self.rho[_key(name)]) + MIN_SCALE
        return dist.Normal(self.loc[_key(name)], scale).to_event(self.event_dims[name])

    def forward(self, x, y=None, mask=None, dataset_size=None):
        """Draw every weight site from q; with labels (a fit step), also add the function-space KL site."""
        out = {n: pyro.sample(n, self.q(n)) for n in self.names}
        if y is not None:
            kl, numbers = self.function_kl(x, mask)
            pyro.sample(KL_SITE, dist.Delta(torch.zeros_like(kl), log_density=kl),
                        infer={"is_auxiliary": True, "numbers": numbers})
        return out

    def local(self, model):
        """``model`` with its weight priors replaced by q (see ``WithoutWeightPrior``)."""
        return WithoutWeightPrior(self)(model)

    def function_kl(self, x, mask=None):
        """D^gamma (or the plain KL) between the linearized q and the GP prior on the batch plus context points,
        and how many function values it compares (logits x points)."""
        xc, mc = context_inputs(x, mask, self.context_points, self.context, self.batch_points)
        mean, cov = self.linearized(xc, mc)
        k = mean.shape[0]
        with torch.no_grad():
            gram = self.prior.gram(xc.double(), mc)
        cov_p = torch.kron(torch.eye(k, dtype=gram.dtype, device=gram.device), gram)
        mean_q, cov_q = mean.reshape(-1).double(), cov.double()
        if self.divergence == "kl":
            eye = KL_JITTER * torch.eye(cov_q.shape[-1], dtype=cov_q.dtype, device=cov_q.device)
            kl = gaussian_kl(mean_q, cov_q + eye, torch.zeros_like(mean_q), cov_p + eye)
        else:
            kl = regularized_kl(mean_q, cov_q, torch.zeros_like(mean_q), cov_p, self.gamma, xc.shape[0])
        return kl.to(x.dtype), mean_q.numel()

    def linearized(self, x, mask=None):
        """The linearized network's logits on inputs x: mean [K, N], covariance J S J^T [K N, K N], class-major.

        Without ``jacobian_grad`` J is taken at the detached means (no graph kept) and the mean
        comes from a separate pass that keeps its gradient.
        """
        loc = {n: self.loc[_key(n)] for n in self.names}
        scales = self.scales()

        def logits(params, xi, mi):
            out = self.net(xi[None], None if mi is None else mi[None], params)[0]
            return out, out

        per_input = vmap(jacrev(logits, has_aux=True), in_dims=(None, 0, None if mask is None else 0))
        # The math kernel of scaled_dot_product_attention has batching rules for its backward (vmap) and
        # the double backward jacobian_grad needs; the fused CPU kernel falls back to a loop.
        if self.jacobian_grad:
            with sdpa_kernel(SDPBackend.MATH):
                jac, mean = per_input(loc, x, mask)
        else:
            with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
                jac, _ = per_input({n: v.detach() for n, v in loc.items()}, x, mask)
            mean = self.net(x, mask, loc)
        n, k = mean.shape
        v = torch.cat([(jac[name] * scales[name]).reshape(n, k, -1) for name in self.names], -1)
        v = v.transpose(0, 1).reshape(k * n, -1)  # rows (class, input): J S^(1/2)
        return mean.T, v @ v.T


def _integer(value, low):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def function_prior(option, model):
    """The GP prior fsvi uses: the ``prior`` option (a spec string), else the model's prior if a GP, else ``GP()``."""
    own = getattr(model, "prior", None)
    if option is None:
        return own if isinstance(own, GP) else GP()
    if not isinstance(option, str):
        raise TypeError(f"prior must be a spec string such as 'gp:kernel=rbf,lengthscale=1' (saved with the "
                        f"posterior), got {type(option).__name__}; or give the GP as the model's prior=")
    chosen = priors.parse(option)
    if not isinstance(chosen, GP):
        raise TypeError(f"prior '{option}' is a weight prior; fsvi takes a prior over functions, "
                        f"e.g. 'gp:kernel=rbf,lengthscale=1'")
    if isinstance(own, GP) and own.spec() != chosen.spec():
        raise TypeError(f"two GP priors: the model's '{own.spec()}' and prior='{option}'; give one")
    return chosen


def _check_model(model):
    net = getattr(model, "net", None)
    if net is None or not hasattr(model, "sites") or not hasattr(model, "initial_values"):
        raise TypeError(f"fsvi needs a zoo transformer model (a network that takes parameter overrides), "
                        f"not {type(model).__name__}")
    if getattr(model, "attention", None):
        raise TypeError(f"fsvi puts the prior on the logits; the model's {model.attention} attention sites have "
                        f"their own guides (build it with bayes='weights' or 'last-layer')")
    if net.cfg.vocab_size is not None:
        raise TypeError("fsvi's GP kernels compare real-valued series; this model reads tokens")
    if net.cfg.dropout:
        raise TypeError(f"fsvi linearizes a deterministic network; build the model with dropout=0 "
                        f"(it has {net.cfg.dropout})")
    if not model.sites:
        raise TypeError(f"the model has no weight sites (bayes='{model.bayes}'); fsvi needs some, e.g. "
                        f"bayes='weights' or 'last-layer'")


def _check_sites(guide, model, x, y, mask):
    """Refuse latent sites fsvi cannot fit: hyper-parameters of a hierarchical weight prior, for example."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(guide.local(model)).get_trace(x, y, mask)
    for name, site in trace.iter_stochastic_nodes():
        if is_global(site) and name not in guide.names:
            raise TypeError(f"site '{name}' is not a network weight; a prior over functions leaves it no "
                            f"meaning (use a plain weight prior or the GP as the model's prior)")
