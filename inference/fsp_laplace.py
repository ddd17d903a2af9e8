"""``fsp-laplace``: the Laplace approximation under a Gaussian-process prior on the logits (Cinquin et al., 2024).

1. MAP: Adam on the likelihood plus the GP prior's RKHS norm estimated on context points,
   ``1/2 sum_k f_k(C)^T K_CC^-1 f_k(C)`` (zero prior mean), with C redrawn every step from the
   context distribution of ``guide="fsvi"`` (``inference.guides.fsvi.context_inputs``). The
   model's weight prior plays no part; non-site parameters (layer norms) are trained alongside.
2. Linearized at the MAP, the posterior precision over the site values is ``J_C^T K^-1 J_C + GGN``. Here C
   is ``context_points`` fresh draws of the context distribution plus ``batch_points`` training inputs
   (all when there are fewer), so that step 4 bounds the variance at the data too, not only at the
   context distribution's (often unlike the data) inputs.
3. Matrix-free: Lanczos (``inference.lanczos``) on ``v -> J_C^T K^-1 J_C v`` (one JVP and one VJP
   on the context points per step) gives the prior precision's range U and eigenvalues; the
   categorical GGN enters projected, ``U^T GGN U``, from JVPs over the training set. The
   posterior covariance lives in span(U): columns ``U v_i / sqrt(lambda_i)`` of the eigenpairs
   of ``diag(s^2) + U^T GGN U``, most precise first.
4. Columns are added until the linearized variance at some context logit would exceed the
   prior's ``K(c, c)``.

The fitted Posterior holds ``num_draws`` weight draws ``theta_MAP + columns @ z`` and predicts, as the
paper does, with the network linearized at theta_MAP (``info["linearized_at"]``,
``inference.posterior.linearized_logits``); save -> load predicts the same.
"""
import numbers

import torch
import torch.nn.functional as F
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.tensors import minibatches
from core.training import minimize

from .svi import FitError, kl_weight
from .guides.fsvi import CONTEXTS, context_inputs, function_prior
from .lanczos import top_eigenpairs
from .posterior import Posterior
from .site_vectors import flatten, unflatten

CONTEXT_POINTS = 32  # context points per MAP step and for the curvature
BATCH_POINTS = 128  # training inputs that join the curvature's context points
JITTER = 1e-4  # added to K_CC's diagonal, times the prior variance
NUM_DRAWS = 200  # weight draws held by the Posterior
CHUNK = 32  # columns, and inputs, per vectorized JVP pass (memory grows with their product)


def jvp_columns(fn, theta, x, mask, columns):
    """J(x) @ columns: the logits' directional derivatives along each column [P, R] -> [R, N, K]."""
    def block(xb, mb, vs):
        return vmap(lambda v: jvp(lambda t: fn(t, xb, mb), (theta,), (v,))[1])(vs.T.to(theta.dtype)).detach()
    with sdpa_kernel(SDPBackend.MATH):
        if not columns.shape[1]:
            return fn(theta, x, mask).detach()[None].expand(0, -1, -1)
        return torch.cat([torch.cat([block(x[j:j + CHUNK], None if mask is None else mask[j:j + CHUNK],
                                           columns[:, i:i + CHUNK]) for j in range(0, x.shape[0], CHUNK)], 1)
                          for i in range(0, columns.shape[1], CHUNK)])


def prior_precision(fn, theta, xc, mc, chol):
    """The operator v -> J_C^T K^-1 J_C v (K = chol chol^T, one GP per logit), by a JVP and a VJP."""
    with sdpa_kernel(SDPBackend.MATH):
        _, pullback = vjp(lambda t: fn(t, xc, mc), theta)

    def matvec(v):
        with sdpa_kernel(SDPBackend.MATH):
            f = jvp(lambda t: fn(t, xc, mc), (theta,), (v.to(theta.dtype),))[1]
            return pullback(torch.cholesky_solve(f.detach().double(), chol).to(theta.dtype))[0].detach().double()
    return matvec


def projected_ggn(fn, theta, x, mask, columns, temperature):
    """U^T GGN U of the categorical likelihood: sum_n (J_n U)^T (diag p_n - p_n p_n^T) (J_n U) / T."""
    out = torch.zeros(columns.shape[1], columns.shape[1], dtype=torch.float64, device=theta.device)
    for i in range(0, x.shape[0], CHUNK):
        xb, mb = x[i:i + CHUNK], None if mask is None else mask[i:i + CHUNK]
        with torch.no_grad():
            p = fn(theta, xb, mb).softmax(-1).double()
        a = jvp_columns(fn, theta, xb, mb, columns).double()  # [R, B, K]
        pa = torch.einsum("rbk,bk->rb", a, p)
        out += torch.einsum("rbk,bk,sbk->rs", a, p, a) - pa @ pa.T
    return out / temperature


def truncate(context_jvp, prior_var):
    """How many leading columns keep every context logit's linearized variance within the prior's.

    ``context_jvp`` [R, M, K]: each column's derivative of the context logits; ``prior_var`` [M, K].
    """
    over = (context_jvp.double().square().cumsum(0) > prior_var).flatten(1).any(1)
    return int(over.double().argmax()) if over.any() else over.shape[0]


def covariance_columns(fn, theta, xc, mc, gram, x, mask, temperature=1.0, steps=None, generator=None):
    """Columns S [P, r] of the FSP-Laplace covariance S S^T, and the dict of what was found on the way."""
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    gram = gram.double() + JITTER * gram.diagonal().mean() * eye
    chol = torch.linalg.cholesky(gram)
    k = fn(theta, xc[:1], None if mc is None else mc[:1]).shape[-1]
    steps = steps or min(gram.shape[0] * k, theta.numel())
    values, u = top_eigenpairs(prior_precision(fn, theta, xc, mc, chol), theta.numel(), steps, generator,
                               theta.device)
    lam, v = torch.linalg.eigh(torch.diag(values) + projected_ggn(fn, theta, x, mask, u, temperature))
    lam, v = lam.flip(0), v.flip(1)  # most precise direction first
    columns = (u @ v) / lam.clamp_min(1e-300).sqrt()
    rank = truncate(jvp_columns(fn, theta, xc, mc, columns), gram.diagonal()[:, None].expand(-1, k))
    return columns[:, :rank], {"prior_rank": int(values.numel()), "rank": rank, "lanczos_steps": steps}


class SiteFunction:
    """The network's logits as a function of one flat vector of its site values."""

    def __init__(self, net, values):
        self.net, self.names = net, list(values)
        self.shapes = [values[n].shape for n in self.names]

    def unflatten(self, theta):
        return unflatten(theta, self.names, self.shapes)

    def __call__(self, theta, x, mask):
        return self.net(x, mask, self.unflatten(theta))


def rkhs_norm(prior, logits, xc, mc):
    """1/2 sum_k f_k(C)^T (K_CC + jitter)^-1 f_k(C): the GP prior's RKHS norm estimated on the context points."""
    gram = prior.gram(xc.double(), mc)
    gram = gram + JITTER * prior.variance * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    white = torch.linalg.solve_triangular(torch.linalg.cholesky(gram), logits.double(), upper=False)
    return 0.5 * white.square().sum().to(logits.dtype)


def train_map(model, prior, data, steps, lr, batch_size, temperature, kl_anneal, seed, progress, context_points,
              context):
    """Site values at the MAP under the GP prior (step 1); the model's own parameters are trained in place."""
    x, y, mask = data
    values = {n: v.detach().clone().requires_grad_(True) for n, v in model.initial_values().items()}
    trained = [*values.values(), *(p for p in model.net.parameters() if p.requires_grad)]
    n = x.shape[0]

    def loss(step, idx):
        xb, yb, mb = (x, y, mask) if idx is None else (x[idx], y[idx], None if mask is None else mask[idx])
        nll = F.cross_entropy(model.net(xb, mb, values), yb, reduction="sum") * (n / xb.shape[0]) / temperature
        xc, mc = context_inputs(xb, mb, context_points, context, 0)
        return nll + kl_weight(step, kl_anneal) * rkhs_norm(prior, model.net(xc, mc, values), xc, mc)
    model.train()
    losses = minimize(loss, trained, lr, steps, minibatches(n, batch_size, steps, torch.Generator().manual_seed(seed)),
                      progress, "fit fsp-laplace")
    model.eval()
    return {n: v.detach() for n, v in values.items()}, [value / n for value in losses]


def check_options(model, prior, context_points, batch_points, context, lanczos_steps, num_draws):
    """The GP prior, or a one-line FitError naming the bad model or option."""
    net = getattr(model, "net", None)
    if net is None or not getattr(model, "sites", None) or not hasattr(model, "initial_values"):
        raise FitError("fsp-laplace needs a zoo transformer model with weight sites (bayes='weights' or "
                       f"'last-layer'), not {type(model).__name__}" + (f" with bayes={model.bayes!r}"
                                                                        if hasattr(model, "bayes") else ""))
    if getattr(model, "attention", None) or net.cfg.vocab_size is not None or net.cfg.dropout:
        raise FitError("fsp-laplace linearizes a deterministic network on real-valued series: build the model "
                       "without attention sites, token inputs or dropout")
    for name, value, low in (("context_points", context_points, 1), ("batch_points", batch_points, 0),
                             ("num_draws", num_draws, 1),
                             ("lanczos_steps", 1 if lanczos_steps is None else lanczos_steps, 1)):
        if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low):
            raise FitError(f"fsp-laplace: {name} must be an integer >= {low}, got {value!r}")
    if context not in CONTEXTS:
        raise FitError(f"fsp-laplace: context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    try:
        return function_prior(prior, model)
    except (TypeError, ValueError) as e:
        raise FitError(f"fsp-laplace: {str(e).splitlines()[0]}") from None


def fit_fsp_laplace(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                    kl_anneal=0, prior=None, context_points=CONTEXT_POINTS, batch_points=BATCH_POINTS,
                    context="uniform", lanczos_steps=None, num_draws=NUM_DRAWS):
    """FSP-Laplace (module docstring): ``steps`` Adam steps at ``lr`` under the GP ``prior`` (a ``gp:...`` spec;
    default the model's GP prior, else ``gp``) warmed up over ``kl_anneal`` steps, then the low-rank Laplace
    covariance from ``context_points`` points of the ``context`` distribution plus ``batch_points`` training inputs,
    and ``lanczos_steps`` Lanczos steps (default: the prior precision's largest possible rank, points x classes)."""
    gp = check_options(model, prior, context_points, batch_points, context, lanczos_steps, num_draws)
    x, y, mask = data
    values, losses = train_map(model, gp, data, steps, lr, batch_size, temperature, kl_anneal, seed, progress,
                               context_points, context)
    fn = SiteFunction(model.net, values)
    theta = flatten(values)
    xc, mc = context_inputs(x, mask, context_points, context, batch_points)
    generator = torch.Generator().manual_seed(seed)
    columns, found = covariance_columns(fn, theta, xc, mc, gp.gram(xc.double(), mc), x, mask, temperature,
                                        lanczos_steps, generator)
    z = torch.randn(num_draws, columns.shape[1], dtype=torch.float64, generator=generator).to(theta.device)
    draws = fn.unflatten(theta + (z @ columns.T).to(theta.dtype))
    info = {**found, "linearized_at": {n: v.detach() for n, v in values.items()}, "prior": gp.spec(),
            "context_points": context_points, "curvature_points": xc.shape[0], "context": context,
            "num_params": theta.numel(), "temperature": temperature, "seed": seed, "map_losses": losses}
    return Posterior(model, "fsp-laplace", draws=draws, info=info, x_proto=x[:2],
                     mask_proto=None if mask is None else mask[:2])

