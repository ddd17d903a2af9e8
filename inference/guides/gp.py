"""Gaussian-process attention guides: ``sgpa``, ``sgpa-decoupled`` and ``kep-svgp``.

Like the Dirichlet and BAM guides (``inference.guides.attention``, whose plumbing they
share), they draw each layer's local site ``blocks.{i}.attn.gp`` inside the model's own
forward pass (``guide.local(model)``), by reparameterization, and attach the posterior so
that ``inference.elbo`` adds its closed-form KL. Per head and output dimension d:

- ``sgpa`` (Chen & Li 2023, standard): inducing inputs are the keys, which are also the
  queries, so the site is the inducing outputs themselves. q(f_d) = N(K v_d, L A_d^2 L^T),
  K = L L^T the kernel matrix of the keys, v the values (the variational mean is K v, so
  the posterior mean is kernel attention K v) and A_d = diag(a_d) amortized from the keys,
  log a = log a_h + k W_h (``init_scale`` starts a at a constant). KL = (sum(a^2 - 1 -
  2 log a) + v_d^T K v_d) / 2.
- ``sgpa-decoupled`` (their decoupled SGPA, Salimbeni et al.'s orthogonal decoupling):
  the keys carry the mean (values v as above), M global inducing points Z per head carry
  the covariance: mean C v_d + K_qZ m_d, covariance C + B S_d B^T, with C = K_qq - B B^T,
  B = K_qZ L_Z^{-T}, S_d = s_d s_d^T (whitened). KL = (|s_d|_F^2 - 2 sum log diag s_d - M
  + m_d^T K_ZZ m_d) / 2 for the global inducing outputs plus v_d^T C v_d / 2 per sequence,
  the KL of the inducing variables, which bounds the site's own KL from above (and equals
  it for standard SGPA).
- ``kep-svgp`` (Chen et al. 2024): the site is the inducing outputs u_d ~ N(m_d, s_d s_d^T)
  of the model's kernel-SVD SVGP, a global variable; KL to N(0, diag(lambda)^2) is torch's
  closed form for two multivariate normals.

Global latents are global: the decoupled form's inducing outputs at Z and KEP's u are drawn
once per step (per particle or predictive draw) and shared by every sequence of the batch,
and their KL enters the ELBO once. The site stays in the ``data`` plate (each sequence's
attention, or u, has its marginal prior there), so a posterior's ``kl()`` is the site's part
of the ELBO's KL: its local KL plus ``share`` = 1/N of the global KL, and the plate's N/B
scaling over a batch of B sequences counts the global KL exactly once.

Covariance factors s carry a learned per-head scale ``exp(log_param)`` (``init_scale``).
"""
import math

import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro import poutine
from pyro.distributions import constraints
from pyro.poutine.runtime import get_plates
from torch.distributions.utils import lazy_property
from torch.distributions import kl_divergence, register_kl

from core.masks import zero_padding
from priors.gp_attention import GPPrior, cholesky, triangular_inverse

from .attention import AttentionGuide
from .weight import _key


class GPPosterior(dist.TorchDistribution):
    """An amortized GP posterior at a site's tokens: event [H, T, D] as its ``prior`` (a ``GPPrior``)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True
    share = 1.0  # this sequence's part of the global KL: 1/N inside a data plate of N sequences

    def __init__(self, prior, loc):
        self.prior, self.loc = prior, zero_padding(loc, prior.mask)
        super().__init__(prior.batch_shape, prior.event_shape, validate_args=False)

    @property
    def mean(self):
        return self.loc

    def noise(self, sample_shape=torch.Size()):
        return torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype, device=self.loc.device)

    def local_kl(self):
        """Per sequence, the KL of its own latents, [*batch_shape]."""
        raise NotImplementedError

    def global_kl(self):
        """The KL of the global latents, whole (not shared out), [*batch_shape]."""
        return self.loc.new_zeros(self.batch_shape)

    def kl(self):
        """The site's part of the ELBO's KL, [*batch_shape]: its local KL and its ``share`` of the global KL."""
        return self.local_kl() + self.share * self.global_kl()

    def covariance(self):
        """Dense covariance per head and output dimension, [*batch, H, D, T, T] (for tests and diagnostics)."""
        raise NotImplementedError


@register_kl(GPPosterior, GPPrior)
def _kl_gp(q, p):
    return q.kl()


class SGPAPosterior(GPPosterior):
    """Standard SGPA: N(K v_d, L diag(a_d^2) L^T); ``log_scale`` is log a [..., H, T, D], 0 at padding."""

    def __init__(self, prior, values, log_scale):
        self.values, self.log_scale = values, log_scale
        super().__init__(prior, prior.covariance @ values)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        shape = batch_shape + self.event_shape
        return SGPAPosterior(self.prior.expand(batch_shape), self.values.expand(shape), self.log_scale.expand(shape))

    def rsample(self, sample_shape=torch.Size()):
        return self.draw(self.noise(sample_shape))

    def draw(self, eps):
        """The draw that standard normal noise ``eps`` [..., H, T, D] maps to."""
        return zero_padding(self.loc + self.prior.scale_tril @ (self.log_scale.exp() * eps), self.prior.mask)

    def local_kl(self):
        a = self.log_scale
        return 0.5 * ((2 * a).exp() - 1 - 2 * a + self.values * self.loc).sum((-3, -2, -1))

    def covariance(self):
        tril = self.prior.scale_tril.unsqueeze(-3) * self.log_scale.exp().transpose(-1, -2).unsqueeze(-2)
        return tril @ tril.transpose(-1, -2)


class DecoupledPosterior(GPPosterior):
    """Decoupled SGPA: mean C v_d + K_qZ m_d, covariance C + B s_d s_d^T B^T (see the module docstring).

    ``cross`` K_qZ [..., H, T, M] (zero rows at padding), ``inducing_covariance`` K_ZZ [..., H, M, M],
    ``inducing_values`` m [H, M, D], ``scale_tril`` s [H, D, M, M]; ``site`` names Cholesky errors;
    ``share`` is this sequence's part of the global KL (1/N of a data plate of N sequences). The inducing
    outputs are global: one draw per step along the batch's last dimension (the data plate's).
    """

    def __init__(self, prior, values, cross, inducing_covariance, inducing_values, scale_tril, site, share=1.0):
        self.values, self.cross, self.inducing_covariance = values, cross, inducing_covariance
        self.inducing_values, self.scale_tril, self.site, self.share = inducing_values, scale_tril, site, share
        inverse = triangular_inverse(cholesky(inducing_covariance, site))
        self.projection = cross @ inverse.transpose(-1, -2)  # B = K_qZ L_Z^-T [..., H, T, M]
        self.residual = prior.covariance - self.projection @ self.projection.transpose(-1, -2)  # C
        super().__init__(prior, self.residual @ values + cross @ inducing_values)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        raise NotImplementedError("a decoupled SGPA posterior is built at its site's batch shape")

    @lazy_property
    def residual_tril(self):
        return cholesky(self.residual, self.site)

    def rsample(self, sample_shape=torch.Size()):
        eps = self.noise(sample_shape)
        heads, dims, inducing = self.event_shape[0], *self.scale_tril.shape[-3:-1]
        shared = torch.Size(sample_shape) + global_batch(self.batch_shape) + (heads, dims, inducing)
        return self.draw(eps, torch.randn(shared, dtype=eps.dtype, device=eps.device))

    def draw(self, eps, inducing_eps):
        """The draw from standard normal noise ``eps`` [..., H, T, D] and ``inducing_eps`` [..., H, D, M]
        (one per batch, [..., 1, H, D, M], or one per sequence)."""
        inducing = (self.scale_tril @ inducing_eps.unsqueeze(-1)).squeeze(-1).transpose(-1, -2)  # [..., H, M, D]
        return zero_padding(self.loc + self.residual_tril @ eps + self.projection @ inducing, self.prior.mask)

    def local_kl(self):
        return 0.5 * (self.values * (self.residual @ self.values)).sum((-3, -2, -1))

    def global_kl(self):
        s, m = self.scale_tril, self.inducing_values
        kl = 0.5 * (s.pow(2).sum((-4, -3, -2, -1)) - 2 * s.diagonal(dim1=-2, dim2=-1).log().sum((-3, -2, -1))
                    - s.shape[-1] * s.shape[-3] * s.shape[-4] + (m * (self.inducing_covariance @ m)).sum((-3, -2, -1)))
        return kl.expand(self.batch_shape)

    def covariance(self):
        inducing = self.projection.unsqueeze(-3) @ self.scale_tril  # [..., H, D, T, M]
        return self.residual.unsqueeze(-3) + inducing @ inducing.transpose(-1, -2)


class KEPPosterior(dist.TorchDistribution):
    """KEP-SVGP's inducing outputs u_d ~ N(m_d, s_d s_d^T), a global variable: one draw per step along the batch's
    last dimension (the data plate's), shared by its sequences. ``kl()`` is the site's part of the ELBO's KL,
    ``share`` (1/N of a data plate of N sequences) of KL(q || ``prior``)."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True
    global_draw = True  # one draw serves the whole batch: its latent numbers are counted once (inference.degeneracy)

    def __init__(self, prior, loc, scale_tril, share=1.0, batch_shape=torch.Size()):
        self.prior, self.loc, self.scale_tril, self.share = prior, loc, scale_tril, share
        self.base = dist.MultivariateNormal(loc, scale_tril=scale_tril).to_event(2)
        super().__init__(torch.Size(batch_shape), self.base.event_shape, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return KEPPosterior(self.prior.expand(batch_shape), self.loc, self.scale_tril, self.share, batch_shape)

    @property
    def mean(self):
        return self.loc.expand(self.batch_shape + self.event_shape)

    def rsample(self, sample_shape=torch.Size()):
        draw = self.base.rsample(torch.Size(sample_shape) + global_batch(self.batch_shape))
        return draw.expand(self._extended_shape(sample_shape))

    def local_kl(self):
        return self.loc.new_zeros(self.batch_shape)

    def global_kl(self):
        return kl_divergence(self.base, self.prior).expand(self.batch_shape)

    def kl(self):
        return self.share * self.global_kl()


@register_kl(KEPPosterior, dist.Independent)
def _kl_kep(q, p):
    return q.kl()


def global_batch(batch_shape):
    """The batch shape of a global draw: the last (data plate) dimension of ``batch_shape`` becomes 1."""
    return batch_shape[:-1] + (1,) if batch_shape else batch_shape


def share_per_sequence():
    """Each sequence's part of a global KL: 1/N inside a ``data`` plate of N sequences (1 outside one)."""
    return 1.0 / next((f.full_size or f.size for f in get_plates() if f.name == "data"), 1)


class _GPGuide(AttentionGuide):
    """Shared part: ``init_scale`` (the per-head scale ``exp(log_param)``) and lower-triangular covariance factors."""

    def __init__(self, model, *args, init_scale=1.0, **options):
        if not (isinstance(init_scale, (int, float)) and init_scale > 0):
            raise TypeError(f"init_scale must be a positive number, got {init_scale!r}")
        super().__init__(model, *args, init=float(init_scale), **options)

    def make_tril(self, shapes):
        """Parameters of s = exp(log_param_h) (diag(exp(log_diag)) + strict lower part); shapes: name -> [H, D, n]."""
        self.log_diag = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(shape)) for n, shape in shapes.items()})
        self.lower = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(*shape, shape[-1]))
                                       for n, shape in shapes.items()})

    def scale_tril(self, name):
        k = _key(name)
        tril = torch.diag_embed(self.log_diag[k].exp()) + torch.tril(self.lower[k], diagonal=-1)
        return self.log_param[k].unsqueeze(-1).exp() * tril


def sequence_tokens(model, x):
    """Tokens per sequence of inputs ``x`` (after patching)."""
    return math.ceil(x.shape[1] / model.cfg.patch)


class SGPA(_GPGuide):
    """Standard SGPA: values as the variational mean, a diagonal whitened covariance amortized from the keys."""

    family = "sgpa"

    def __init__(self, model, *args, init_scale=1.0, **options):
        super().__init__(model, *args, init_scale=init_scale, **options)
        dims = model.cfg.d_model // model.cfg.heads
        self.amortize = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(model.cfg.heads, dims, dims))
                                          for n in model.attention_sites})

    def posterior(self, name, context):
        k = _key(name)
        log_scale = zero_padding(self.log_param[k] + context.keys @ self.amortize[k], context.mask)
        return SGPAPosterior(context.prior, context.values, log_scale)


class DecoupledSGPA(_GPGuide):
    """Decoupled SGPA: the keys carry the mean, ``inducing`` global points per head the covariance.

    The inducing inputs start at evenly spaced keys of the first prototype sequence,
    their values at 0 and their whitened covariance at ``init_scale^2 I``.
    """

    family = "sgpa-decoupled"

    def __init__(self, model, x, y=None, mask=None, inducing=8, init_scale=1.0, **options):
        super().__init__(model, x, y, mask, init_scale=init_scale, **options)
        tokens = sequence_tokens(model, x)
        if not (isinstance(inducing, int) and not isinstance(inducing, bool) and inducing >= 1):
            raise TypeError(f"inducing must be a whole number >= 1, got {inducing!r}")
        if inducing > tokens:
            raise TypeError(f"inducing={inducing} is larger than the sequence ({tokens} tokens); "
                            f"use inducing <= {tokens}")
        heads, dims = model.cfg.heads, model.cfg.d_model // model.cfg.heads
        keys = prototype_keys(model, x, mask, inducing)
        self.inducing_inputs = nn.ParameterDict({_key(n): nn.Parameter(v) for n, v in keys.items()})
        self.inducing_values = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(heads, inducing, dims))
                                                 for n in model.attention_sites})
        self.make_tril({n: (heads, dims, inducing) for n in model.attention_sites})

    def posterior(self, name, context):
        k, kernel = _key(name), context.kernel
        z = self.inducing_inputs[k]
        cross = zero_padding(kernel(context.keys, z), context.mask)  # K_qZ, zero rows at padding
        return DecoupledPosterior(context.prior, context.values, cross, kernel(z, z), self.inducing_values[k],
                                  self.scale_tril(name), name, share_per_sequence())


def prototype_keys(model, x, mask, count):
    """Per attention site, ``count`` evenly spaced keys [H, count, dh] of the first sequence, from a prior pass."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(model).get_trace(x[:1], None, None if mask is None else mask[:1])
    out = {}
    for name in model.attention_sites:
        context = trace.nodes[name]["infer"]["attention"]
        keys = context.keys.reshape(-1, *context.keys.shape[-3:])[0]  # [H, T, dh]
        real = torch.arange(keys.shape[-2], device=keys.device)
        if context.mask is not None:
            real = real[context.mask.reshape(-1, keys.shape[-2])[0]]
        picks = torch.linspace(0, len(real) - 1, count, device=keys.device).round().long()
        out[name] = keys[:, real[picks]].clone()
    return out


class KEPSVGP(_GPGuide):
    """KEP-SVGP: inducing outputs u_d ~ N(m_d, s_d s_d^T) per head and output dimension, m at 0, s at init_scale I."""

    family = "kep-svgp"

    def __init__(self, model, x, y=None, mask=None, init_scale=1.0, **options):
        super().__init__(model, x, y, mask, init_scale=init_scale, **options)
        heads, tokens = model.cfg.heads, sequence_tokens(model, x)
        ranks = {n: model.net.attend.priors[n].rank for n in model.attention_sites}
        for n, rank in ranks.items():
            if rank > tokens:
                raise TypeError(f"kep rank={rank} at site '{n}' is larger than the sequence ({tokens} tokens)")
        self.loc = nn.ParameterDict({_key(n): nn.Parameter(torch.zeros(heads, r, r)) for n, r in ranks.items()})
        self.make_tril({n: (heads, r, r) for n, r in ranks.items()})

    def posterior(self, name, context):
        return KEPPosterior(context.prior, self.loc[_key(name)], self.scale_tril(name), share_per_sequence(),
                            context.prior.batch_shape)
