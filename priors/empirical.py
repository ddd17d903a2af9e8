"""An empirical prior: per-site Gaussians moment-matched to a trained network's weights."""
import pyro.distributions as dist
import torch

from .base import Prior, PriorError, format_spec, independent, positive, read_weights, resolve


class Empirical(Prior):
    """N(mean_site, std_site^2) per site, with mean and std taken from trained weights.

    Build it with ``Empirical.fit(state_dict)`` (a MAP network's weights, for example
    the ``weights.pt`` that ``bzoo fit --guide map`` writes) or from the command line
    as ``empirical:path=weights.pt``. ``min_scale`` floors the std of tiny tensors.
    """

    name = "empirical"

    def __init__(self, moments, min_scale=1e-2, path=None):
        self.moments = dict(moments)
        self.min_scale = positive("min_scale", min_scale, self.name)
        self.path = path

    @classmethod
    def fit(cls, state_dict, min_scale=1e-2, path=None):
        moments = {}
        for name, w in state_dict.items():
            w = torch.as_tensor(w, dtype=torch.float64).flatten()
            std = w.std().item() if w.numel() > 1 else 0.0
            moments[name] = (w.mean().item(), max(std, min_scale))
        return cls(moments, min_scale, path)

    @classmethod
    def load(cls, path, min_scale=1e-2, base=None):
        """From a weights file; a relative ``path`` is read from ``base`` (default: the current folder) and
        kept as given, so ``spec()`` stays relative (a run folder moves whole)."""
        state = read_weights(resolve(str(path), base), cls.name, path)
        return cls.fit(state, min_scale, path=str(path))

    def __call__(self, site):
        if site.name not in self.moments:
            raise PriorError(f"empirical prior has no trained weights for site '{site.name}'")
        loc, scale = self.moments[site.name]
        return independent(dist.Normal(loc, scale), site)

    def spec(self):
        return format_spec(self.name, {}) + (f":path={self.path}" if self.path else "")
