"""BLoB (Wang et al., NeurIPS 2024): Bayesian low-rank adaptation by backpropagation.

An asymmetric guide for models with LoRA adapters: each LoRA ``A`` matrix (a site
named ``*.A.weight``) gets a fully factorized Normal ``N(M, sigma^2)`` with BLoB's
parameterization ``sigma = rho^2`` (``rho`` started uniformly in ``[eps / sqrt 2, eps]``,
so the posterior starts almost a point), while every other site (the ``B`` matrices,
the head if it is a site) is a point estimate (a Delta, fitted jointly). Because ``B``
starts at zero and stays deterministic, the update ``B A`` has a variance that grows
only as ``B`` is learned, which is what lets BLoB train the mean and the variance
together from the start.

``fit_blob`` trains it with what BLoB's reference implementation (Wang-ML-Lab/bayesian-peft,
MIT) adds to the ELBO: Flipout on ``A`` (each example of a minibatch sees its own
sign-flipped deviation of one draw) and the prior ``N(0, 0.2^2)`` on ``A``; the reference's
KL re-weighting schedule (``kl_weight``) and its separate optimizer for the KL (SGD at
``kl_lr``) are options, off by default: on ItalyPowerDemand both fitted worse than the
ELBO's weight (docs/lora.md, ``benchmarks/blob_ipd.py``).
"""
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

from .weight import MIN_SCALE, _key, _SiteGuide



def is_lora_a(name):
    return name.endswith(".A.weight") and (name.startswith("lora.") or ".lora." in name)


class BLoB(_SiteGuide):
    """Normal on every LoRA A site (scale rho^2 + MIN_SCALE), Delta on every other site."""

    def __init__(self, model, *args, init_eps=0.05, **kwargs):
        super().__init__(model, *args, **kwargs)
        if not init_eps > 0:
            raise TypeError(f"init_eps must be positive, got {init_eps}")
        self.bayesian = [n for n in self.sites if is_lora_a(n)]
        if not self.bayesian:
            raise TypeError("blob needs LoRA A matrices among the sample sites (a LoRAClassifier with bayes "
                            "'adapters' or 'weights'); found sites: " + ", ".join(list(self.sites)[:5]))
        self.rho = nn.ParameterDict({
            _key(n): nn.Parameter(torch.empty_like(self.loc[_key(n)]).uniform_(init_eps / math.sqrt(2), init_eps))
            for n in self.bayesian})

    def scales(self):
        return {n: self.rho[_key(n)] ** 2 + MIN_SCALE for n in self.bayesian}

    def means(self):
        """A site -> its variational mean M (what Flipout perturbs)."""
        return {n: self.loc[_key(n)] for n in self.bayesian}

    def forward(self, *args, **kwargs):
        out, scales = {}, self.scales()
        for n in self.sites:
            loc = self.loc[_key(n)]
            if n in scales:
                out[n] = self._sample(n, dist.Normal(loc, scales[n]).to_event(self.event_dims[n]))
            else:
                out[n] = pyro.sample(n, dist.Delta(self.transforms[n](loc), event_dim=self.event_dims[n]))
        return out
