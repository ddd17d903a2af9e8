"""TransformerClassifier: the transformer as a Pyro model with named weight sites."""
from fnmatch import fnmatchcase

import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn

import priors as priors_pkg
from priors import PriorMap, Site

from .transformer import Transformer, TransformerConfig

WHERE = ("weights", "last-layer", "none")
DEFAULT_PRIOR = "gaussian:scale=1"


class ModelError(ValueError):
    """A model was configured with an invalid option."""


def bayesian_names(net, bayes):
    """Parameter names that become sample sites for a ``bayes`` choice or comma-separated globs."""
    names = [n for n, _ in net.named_parameters()]
    if bayes == "none":
        return []
    if bayes == "weights":
        return [n for n in names if ".ln" not in n and not n.startswith("ln")]
    if bayes == "last-layer":
        return ["head.weight", "head.bias"]
    globs = [g.strip() for g in str(bayes).split(",") if g.strip()]
    chosen = []
    for glob in globs:
        matched = [n for n in names if fnmatchcase(n, glob)]
        if not matched:
            raise ModelError(f"--bayes glob '{glob}' matches no parameter; choose from {', '.join(WHERE)} "
                             f"or globs over: {', '.join(names)}")
        chosen += [n for n in matched if n not in chosen]
    return [n for n in names if n in chosen]


def describe(name, param, net):
    """The Site a prior sees for parameter ``name``: shape, fan-in and role."""
    owner = net.get_submodule(name.rsplit(".", 1)[0])
    if isinstance(owner, nn.LayerNorm):
        return Site(name, tuple(param.shape), 1, "norm")
    if isinstance(owner, nn.Embedding):
        return Site(name, tuple(param.shape), 1, "embedding")
    role = "bias" if name.endswith(".bias") else "weight"
    return Site(name, tuple(param.shape), owner.in_features, role)


class TransformerClassifier(nn.Module):
    """A sequence classifier whose chosen weights are ``pyro.sample`` sites.

    ``bayes`` says where uncertainty lives: ``weights`` (every linear and embedding
    weight and bias; layer norms stay point estimates), ``last-layer``, ``none``, or
    comma-separated globs over parameter names. ``prior`` is a ``priors.Prior``, a
    ``PriorMap``, or a spec string/dict for ``priors.parse``. Parameters that are not
    sites are point estimates fitted alongside the guide.

    Calling the model runs it: ``model(x, y, mask, dataset_size)`` samples the sites,
    computes logits and, inside a ``data`` plate of size ``dataset_size`` (so a
    minibatch likelihood is scaled to the full data), observes ``y``.
    """

    def __init__(self, num_classes, input_dim=None, vocab_size=None, d_model=32, depth=2, heads=4,
                 mlp_ratio=2, max_len=512, dropout=0.0, bayes="weights", prior=DEFAULT_PRIOR):
        super().__init__()
        try:
            self.cfg = TransformerConfig(num_classes, input_dim, vocab_size, d_model, depth, heads,
                                         mlp_ratio, max_len, dropout)
        except ValueError as e:
            raise ModelError(str(e)) from None
        self.net = Transformer(self.cfg)
        self.bayes = bayes
        params = dict(self.net.named_parameters())
        self.sites = {n: describe(n, params[n], self.net) for n in bayesian_names(self.net, bayes)}
        for n in self.sites:
            params[n].requires_grad_(False)  # kept as the guides' initial value
        self.prior = priors_pkg.parse(prior) if isinstance(prior, (str, dict)) else prior
        self.priors = PriorMap(self.prior).resolve(self.sites) if self.sites else {}

    def config(self):
        """Everything needed to rebuild this model (not its fitted values)."""
        prior = self.prior.spec() if hasattr(self.prior, "spec") else str(self.prior)
        return {**self.cfg.to_dict(), "bayes": self.bayes, "prior": prior}

    def initial_values(self):
        """The network's initial parameter values at the Bayesian sites (guides start here)."""
        params = dict(self.net.named_parameters())
        return {n: params[n].detach() for n in self.sites}

    def sample_sites(self):
        return {n: pyro.sample(n, self.priors[n](site)) for n, site in self.sites.items()}

    def forward(self, x, y=None, mask=None, dataset_size=None):
        draws = self.sample_sites()
        logits = self.net(x, mask, draws)
        logits = logits.reshape(*sample_shape(draws, self.sites), *logits.shape[-2:])
        batch = x.shape[0]
        with pyro.plate("data", dataset_size or batch, subsample=torch.arange(batch, device=x.device)):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def sample_shape(draws, sites):
    """Leading sample dims of the draws, without the trailing size-1 slot of the data plate."""
    for name, v in draws.items():
        lead = v.shape[: v.dim() - len(sites[name].shape)]
        return lead[:-1] if lead and lead[-1] == 1 else lead
    return ()
