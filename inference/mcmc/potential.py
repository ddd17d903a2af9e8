"""The log joint of many chains at once: C parameter vectors in one pass of the model.

``LogDensity(model, data, temperature)`` maps flat unconstrained positions
``z`` [C, D] to the (tempered) log joint [C] and its gradient [C, D]. The model
is traced once per call inside a ``samples`` plate of size C (dim -2, as
``Posterior.predict`` does), so a zoo network sees parameters with a leading
sample dimension and computes all C chains in one vectorized forward and
backward pass. Constrained sites (hierarchical prior scales) are sampled in the
unconstrained space of ``biject_to(support)``, with the log-Jacobian added, as
Pyro's own MCMC does. Point parameters (layer norms under ``bayes="weights"``)
stay at the model's values.
"""
import pyro
import torch
from pyro import poutine
from torch.distributions import biject_to

from ..sites import in_data_plate, is_global, is_latent, is_sampled
from .nuts import tempered


class LocalSitesError(ValueError):
    """The model draws local latent sites (attention rows), which a fixed-dimension sampler cannot hold."""


class LogDensity:
    """Tempered log joint of ``model`` on ``data`` = (x, y, mask), vectorized over chains."""

    def __init__(self, model, data, temperature=1.0):
        self.model = tempered(model, temperature)
        self.x, self.y, self.mask = data
        proto = poutine.trace(model).get_trace(self.x[:2], self.y[:2], None if self.mask is None else self.mask[:2])
        local = [n for n, s in proto.nodes.items() if is_latent(s) and in_data_plate(s)]
        if local:
            raise LocalSitesError(f"the sampler draws global weight sites only; the model has local sites "
                                  f"({', '.join(local)}): build it without attention-space uncertainty")
        sites = {n: s for n, s in proto.nodes.items() if is_global(s)}
        self.proto = {n: s["value"].detach() for n, s in sites.items()}  # one draw of every site (prior scales too)
        self.shapes = {n: tuple(s["fn"].event_shape) for n, s in sites.items()}
        self.transforms = {n: biject_to(s["fn"].support) for n, s in sites.items()}
        self.sizes = {n: max(1, int(torch.Size(shape).numel())) for n, shape in self.shapes.items()}
        self.dim = sum(self.sizes.values())

    def flatten(self, values):
        """Constrained site values (name -> [C, *shape]) -> unconstrained positions [C, D]."""
        return torch.cat([self.transforms[n].inv(values[n]).reshape(values[n].shape[0], -1) for n in self.shapes], -1)

    def unconstrained(self, z):
        """[C, D] -> name -> [C, *shape], still unconstrained."""
        parts = z.split(list(self.sizes.values()), dim=-1)
        return {n: p.reshape(z.shape[0], *shape) for (n, shape), p in zip(self.shapes.items(), parts)}

    def constrain(self, z):
        """Unconstrained positions [C, D] -> constrained site values name -> [C, *shape]."""
        return {n: self.transforms[n](u) for n, u in self.unconstrained(z).items()}

    def log_density(self, z):
        """The tempered log joint (plus log-Jacobians) of each chain's position: [C]."""
        c = z.shape[0]
        unconstrained = self.unconstrained(z)
        values, log_jac = {}, z.new_zeros(c)
        for n, u in unconstrained.items():
            t = self.transforms[n]
            v = t(u)
            log_jac = log_jac + t.log_abs_det_jacobian(u, v).reshape(c, -1).sum(-1)  # zero for real sites
            values[n] = v.unsqueeze(1)  # the samples plate sits at dim -2, left of the data plate
        with pyro.plate("samples", c, dim=-2):
            trace = poutine.trace(poutine.condition(self.model, values)).get_trace(self.x, self.y, self.mask)
        trace.compute_log_prob()
        total = log_jac
        for site in trace.nodes.values():
            if is_sampled(site):
                total = total + site["log_prob"].expand(c, *site["log_prob"].shape[1:]).reshape(c, -1).sum(-1)
        return total

    def __call__(self, z):
        """(log density [C], its gradient [C, D]) at positions ``z`` [C, D]."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            logp = self.log_density(z)
            (grad,) = torch.autograd.grad(logp.sum(), z)
        return logp.detach(), grad
