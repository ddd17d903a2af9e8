"""Correlated-GP attention (CGPT; Bui, Tran Huu, Dinh, Nguyen & Hoang, UAI 2024): the model's own conditional.

Per head, on a sequence's real tokens: queries Q, keys K, a third input X0 and values V
[T, dh]; k(a, b) = exp(-|a - b|^2 / 2), the RBF kernel with unit lengthscale. Two GPs,
z_q on queries and z_k on keys, with learned scales s_q and s_k, share a latent GP z_0 on
the inputs S (the tokens X0, or M inducing inputs for the sparse form):
z_q(x) = s_q (k(x, S) K_S^-1 z_0(S) + r_q(x)), z_0 ~ N(0, K_S) and an independent residual
r_q, so that Cov(z_q) = s_q^2 k(Q, Q) and likewise for z_k. Their cross-covariance is
asymmetric attention:

    Cov(z_q(Q), z_k(K)) = s_q s_k A,    A = k(Q, S) K_S^-1 k(S, K)    (the attention matrix K_qk).

The values are weights of the key GP's observations, z_k(K) = K_kk v with K_kk = s_k^2 k(K, K)
(as SGPA's values are), so the layer's output, z_q(Q) given them, is Gaussian with

    mean  s_q s_k A v,    covariance  s_q^2 (k(Q, Q) - A k(K, K)^-1 A^T),

one independent draw per output dimension, its covariance shared by the head's output
dimensions. ``CGPConditional`` holds it. The sparse form (``cgpt-sparse``) takes M inducing
inputs Z and the Deterministic Training Conditional: k(K, K) becomes B_k^T B_k + nu I and the
query residual its diagonal, B = L_Z^-1 k(Z, .), so the covariance is
s_q^2 (diag(1 - |B_q|^2) + nu B_q^T (B_k B_k^T + nu I)^-1 B_q): only M x M factorizations.

The CGP loss of a sequence is the negative log density, under the shared GP N(0, K_S), of
the shared latent its mean output is made of, m_0 = E[z_0(S) | z_k(K) = K_kk v] = s_k k(S, K) v,
without the normalizer: |L_S^-1 m_0|^2 / 2 = s_k^2 |B_k v|^2 / 2, summed over heads and output
dimensions. The normalizer (log |K_S| / 2) is left out because it rewards moving the X0 tokens
onto each other. Padding (``mask`` [..., T], True for real tokens) is exact: kernel matrices are
restricted to the real tokens, padded entries of a draw are exactly 0.

Every Cholesky is ``priors.gp_attention.cholesky``: the jitter policy of the other GP forms.
"""
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from core.masks import masked, pair_mask, restrict, zero_padding

from .base import Prior, PriorError, format_spec, positive
from .gp_attention import GPPrior, cholesky, kernel_matrix, lower_inverse, per_head, whole_number
from .spec import register


def rbf(x1, x2):
    """k(x1, x2) = exp(-|x1 - x2|^2 / 2) for [..., H, n, d] inputs: the unit-lengthscale RBF kernel."""
    heads, dims = x1.shape[-3], x1.shape[-1]
    return kernel_matrix("ard", x1, x2, x1.new_zeros(heads, dims), x1.new_zeros(heads))


def scales(log_scale_q, log_scale_k):
    """Per-head s_q and s_k [(S,) H] as [.., H, 1, 1], broadcasting against [..., H, T, T] (see ``per_head``)."""
    return per_head(log_scale_q.exp(), 0).unsqueeze(-1), per_head(log_scale_k.exp(), 0).unsqueeze(-1)


def full_conditional(q, k, x0, v, mask, log_scale_q, log_scale_k, site):
    """CGPT with the tokens' X0 as the shared GP's inputs: the exact conditional (three T x T factorizations)."""
    s_q, s_k = scales(log_scale_q, log_scale_k)
    pairs = pair_mask(mask)
    grams = torch.stack([restrict(rbf(x0, x0), mask), restrict(rbf(k, k), mask)])
    whiten, whiten_k = lower_inverse(cholesky(grams, site)).unbind(0)  # L_0^-1 and L_K^-1 in one batch
    b_q = whiten @ masked(rbf(x0, q), pairs)  # [..., H, T, T]: L_0^-1 k(X0, Q)
    b_k = whiten @ masked(rbf(x0, k), pairs)
    attention = b_q.transpose(-1, -2) @ b_k  # A = k(Q, X0) K_0^-1 k(X0, K)
    explained = whiten_k @ attention.transpose(-1, -2)
    residual = restrict(rbf(q, q), mask) - explained.transpose(-1, -2) @ explained  # k(Q,Q) - A k(K,K)^-1 A^T
    factor = s_q * cholesky(residual, site)
    return _conditional(attention, b_k, v, mask, s_q, s_k, factor, None, site)


def sparse_conditional(q, k, z, v, mask, log_scale_q, log_scale_k, noise, site):
    """CGPT with inducing inputs ``z`` [..., H, M, dh] and the Deterministic Training Conditional (M x M factors)."""
    s_q, s_k = scales(log_scale_q, log_scale_k)
    cols = pair_mask(mask, rows=False)
    whiten = lower_inverse(cholesky(rbf(z, z), site))
    b_q = whiten @ masked(rbf(z, q), cols)  # [..., H, M, T]
    b_k = whiten @ masked(rbf(z, k), cols)
    attention = b_q.transpose(-1, -2) @ b_k
    inducing = b_k @ b_k.transpose(-1, -2)
    inducing = inducing + noise * torch.eye(inducing.shape[-1], dtype=z.dtype, device=z.device)
    low_rank = noise ** 0.5 * b_q.transpose(-1, -2) @ lower_inverse(cholesky(inducing, site)).transpose(-1, -2)
    diagonal = (1 - b_q.pow(2).sum(-2)).clamp_min(0).sqrt()  # the unit kernel's diagonal less its Nystrom part
    return _conditional(attention, b_k, v, mask, s_q, s_k, s_q * low_rank, s_q.squeeze(-1) * diagonal, site)


def _conditional(attention, b_k, v, mask, s_q, s_k, factor, sd, site):
    v = zero_padding(v, mask)
    loss = 0.5 * (s_k * (b_k @ v)).pow(2).sum((-3, -2, -1))
    return CGPConditional(s_q * s_k * (attention @ v), factor, sd, mask, loss, site)


class CGPConditional(dist.TorchDistribution):
    """The attention output [H, T, D]: N(loc, diag(sd^2) + factor factor^T) per head and output dimension.

    ``factor`` [..., H, T, R] (R = T for the full form, M for the sparse), ``sd`` [..., H, T] or None;
    ``cgp_loss`` [*batch] is each sequence's CGP loss. Padding entries of a draw are exactly 0 and add
    nothing to densities; ``site`` names the sample site in Cholesky errors.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = True

    def __init__(self, loc, factor, sd=None, mask=None, cgp_loss=None, site="", validate_args=False):
        self.loc, self.factor, self.sd, self.mask, self.site = zero_padding(loc, mask), factor, sd, mask, site
        self.cgp_loss = loc.new_zeros(loc.shape[:-3]) if cgp_loss is None else cgp_loss
        super().__init__(loc.shape[:-3], loc.shape[-3:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        if batch_shape == self.batch_shape:
            return self
        lead = batch_shape + self.event_shape[:1]

        def grow(t, tail):
            return None if t is None else t.expand(lead + t.shape[-tail:])
        return CGPConditional(self.loc.expand(batch_shape + self.event_shape), grow(self.factor, 2), grow(self.sd, 1),
                              None if self.mask is None else self.mask.expand(batch_shape + self.mask.shape[-1:]),
                              self.cgp_loss.expand(batch_shape), self.site)

    @property
    def mean(self):
        return self.loc

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        rank = self.factor.shape[-1]
        eps = torch.randn(shape[:-2] + (rank, shape[-1]), dtype=self.loc.dtype, device=self.loc.device)
        noise = self.factor @ eps
        if self.sd is not None:
            noise = noise + self.sd.unsqueeze(-1) * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return zero_padding(self.loc + noise, self.mask)

    def covariance(self):
        """Dense covariance per head, [..., H, T, T] (shared by the output dimensions)."""
        cov = self.factor @ self.factor.transpose(-1, -2)
        return cov if self.sd is None else cov + torch.diag_embed(self.sd.pow(2))

    def log_prob(self, value):
        """Gaussian log density over the real tokens (diagnostics; a fit uses the guide's regularizer, not this)."""
        prior = GPPrior(restrict(self.covariance(), self.mask), self.event_shape[-1], self.mask, self.site)
        return prior.log_prob(zero_padding(value - self.loc, self.mask))


@register
class CGPTPrior(Prior):
    """CGPT attention with the tokens' third projection X0 as the shared GP's inputs (no parameters)."""

    name = "cgpt"
    family = "cgpt"
    serves = ("cgpt",)

    def __call__(self, site):
        c = _context(self, site)
        return full_conditional(c.queries, c.keys, c.shared, c.values, c.mask, c.log_scale_q,
                                c.log_scale_k, site.name)

    def spec(self):
        return self.name


@register
class SparseCGPTPrior(Prior):
    """Sparse CGPT: ``inducing`` inputs per head (a learned mix of the tokens' X0), DTC noise ``noise`` (variance,
    relative to the unit kernel)."""

    name = "cgpt-sparse"
    family = "cgpt-sparse"
    serves = ("cgpt-sparse",)

    def __init__(self, inducing=8, noise=0.1):
        self.inducing = whole_number("inducing", inducing, self.name)
        self.noise = positive("noise", noise, self.name)

    def __call__(self, site):
        c = _context(self, site)
        return sparse_conditional(c.queries, c.keys, c.shared, c.values, c.mask, c.log_scale_q,
                                  c.log_scale_k, self.noise, site.name)

    def spec(self):
        return format_spec(self.name, {"inducing": self.inducing, "noise": self.noise})


def _context(prior, site):
    if site.role != "attention":
        raise PriorError(f"{prior.name} is an attention prior; site '{site.name}' is a {site.role} site")
    return site.context
