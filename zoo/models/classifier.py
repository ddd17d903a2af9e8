"""TransformerClassifier: the transformer as a Pyro model with named weight sites."""
import math
from fnmatch import fnmatchcase

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.runtime import get_plates
import torch.nn as nn

import priors as priors_pkg
from priors import PriorMap, Site

from . import attention, cgpt, gp_attention
from .attention import FAMILIES, site_name
from .errors import ModelError
from .cgpt import CGPT_FAMILIES
from .gp_attention import GP_FAMILIES
from .transformer import Transformer, TransformerConfig

WHERE = ("weights", "last-layer", "none", *FAMILIES, *GP_FAMILIES, *CGPT_FAMILIES)
DEFAULT_PRIOR = "gaussian:scale=1"
DEFAULT_ATTENTION_PRIOR = {"dirichlet": "dirichlet:concentration=1", "bam": "bam-gamma", **gp_attention.DEFAULT_PRIOR,
                           **cgpt.DEFAULT_PRIOR}
ATTENTION = {"attention": "dirichlet", "dirichlet": "dirichlet", "bam": "bam",
             **{f: f for f in (*GP_FAMILIES, *CGPT_FAMILIES)}}  # --bayes word -> family


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
            raise ModelError(f"bayes glob '{glob}' matches no parameter; choose from {', '.join(WHERE)} "
                             f"or globs over: {', '.join(names)}")
        chosen += [n for n in matched if n not in chosen]
    return [n for n in names if n in chosen]


def split_attention(bayes):
    """``"attention,last-layer"`` -> (``"dirichlet"``, ``"last-layer"``): the attention family and the weight choice."""
    words = [w.strip() for w in str(bayes).split(",") if w.strip()]
    families = {ATTENTION[w] for w in words if w in ATTENTION}
    if len(families) > 1:
        raise ModelError(f"--bayes names two attention families ({', '.join(sorted(families))}); choose one")
    rest = ",".join(w for w in words if w not in ATTENTION)
    return (families.pop() if families else None), (rest or "none")


def describe(name, param, net):
    """The Site a prior sees for parameter ``name``: shape, fan-in and role."""
    owner = net.get_submodule(name.rsplit(".", 1)[0])
    if isinstance(owner, (gp_attention.Kernel, gp_attention.KernelEigenPairs, cgpt.CGPTParameters)):
        return Site(name, tuple(param.shape), 1, "kernel")
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

    Attention-space uncertainty: ``bayes="attention"`` (Dirichlet attention rows) or
    ``"bam"`` (Bayesian Attention Modules), alone or with weight sites, e.g.
    ``"attention,last-layer"``. Each layer's attention is then a local site
    ``blocks.{i}.attn.weights`` ([H, T, T] per sequence, inside the ``data`` plate)
    with prior ``attention_prior`` (an attention prior, spec or glob map; default
    per family in ``DEFAULT_ATTENTION_PRIOR``).

    ``patch`` cuts a real-valued series into tokens of that many steps (long series:
    ``zoo.models.default_patch(T)`` keeps at most 64 tokens, so attention sites stay small).

    Calling the model runs it: ``model(x, y, mask, dataset_size)`` samples the sites,
    computes logits and, inside a ``data`` plate of size ``dataset_size`` (so a
    minibatch likelihood is scaled to the full data), observes ``y``.
    """

    def __init__(self, num_classes, input_dim=None, vocab_size=None, d_model=32, depth=2, heads=4,
                 mlp_ratio=2, max_len=512, dropout=0.0, patch=1, bayes="weights", prior=DEFAULT_PRIOR,
                 attention_prior=None):
        super().__init__()
        try:
            self.cfg = TransformerConfig(num_classes, input_dim, vocab_size, d_model, depth, heads,
                                         mlp_ratio, max_len, dropout, patch)
        except ValueError as e:
            raise ModelError(str(e)) from None
        if not isinstance(bayes, str) or not bayes.strip():
            raise ModelError(f"bayes must be one of {', '.join(WHERE)} or comma-separated globs over parameter "
                             f"names, got {bayes!r}")
        try:
            self.net = Transformer(self.cfg)
        except RuntimeError as e:  # sizes that pass the checks but not the allocator (a huge vocab_size)
            raise ModelError(f"cannot allocate the network (vocab_size={vocab_size}, d_model={d_model}, "
                             f"depth={depth}): {str(e).splitlines()[0]}") from None
        self.bayes = bayes
        self.attention, weights = split_attention(bayes)
        self.attention_prior, self.attention_sites = None, []
        if attention_prior is not None and not self.attention:
            raise ModelError(f"attention_prior has no effect: bayes={bayes!r} has no attention sites "
                             f"(use bayes='attention', 'bam' or a GP attention family, alone or with weight sites)")
        if self.attention:
            self.attention_prior = parse_attention_prior(attention_prior or DEFAULT_ATTENTION_PRIOR[self.attention],
                                                         self.attention)
            names = gp_attention.site_name if self.attention in (*GP_FAMILIES, *CGPT_FAMILIES) else site_name
            self.attention_sites = [names(i) for i in range(depth)]
            resolved = PriorMap(self.attention_prior).resolve(self.attention_sites)
            if self.attention in GP_FAMILIES:  # kernel parameters join the network, where `bayes` globs reach them
                gp_attention.install(self.net, self.attention, resolved)
            elif self.attention in CGPT_FAMILIES:
                cgpt.install(self.net, self.attention, resolved)
            else:
                attention.install(self.net, self.attention, resolved)
        self.declare_sites(bayesian_names(self.net, weights), prior)

    def declare_sites(self, names, prior):
        """Make network parameters ``names`` sample sites under ``prior`` (a Prior, PriorMap or spec)."""
        params = dict(self.net.named_parameters())
        self.sites = {n: describe(n, params[n], self.net) for n in names}
        for n in self.sites:
            params[n].requires_grad_(False)  # kept as the guides' initial value
        self.prior = priors_pkg.parse(prior) if isinstance(prior, (str, dict)) else prior
        self.priors = PriorMap(self.prior).resolve(self.sites) if self.sites else {}

    def config(self):
        """Everything needed to rebuild this model (not its fitted values)."""
        prior = self.prior.spec() if hasattr(self.prior, "spec") else str(self.prior)
        out = {**self.cfg.to_dict(), "bayes": self.bayes, "prior": prior}
        if self.attention_prior is not None:
            out["attention_prior"] = self.attention_prior.spec()
        return out

    def bytes_per_pair(self, length):
        """Estimated peak bytes of one draw of this network on one series of ``length`` steps, without gradients.

        One block's activations are alive at a time: the residual stream and its
        projections (about ``8 + 2 * mlp_ratio`` vectors of width d per token) and the
        [T, T] attention matrices of every head (one for fused softmax attention, about
        eight for sampled attention: logits, posterior parameters, draws, normalised
        rows, mask). Measured peaks on CPU are 0.2 to 0.7 times this estimate
        (``docs/results.md``, memory). ``core.memory`` sizes prediction chunks from it.
        """
        cfg = self.cfg
        tokens = math.ceil(length / cfg.patch)
        per_matrix = 8 if self.attention else 1
        floats = tokens * cfg.d_model * (8 + 2 * cfg.mlp_ratio) + cfg.heads * tokens * tokens * per_matrix
        return int(1.25 * 4 * floats)

    def bytes_per_draw(self):
        """Bytes of one draw of every network parameter (a draw and its working copy)."""
        return 2 * 4 * sum(p.numel() for p in self.net.parameters())

    def initial_values(self):
        """The network's initial parameter values at the Bayesian sites (guides start here)."""
        params = dict(self.net.named_parameters())
        return {n: params[n].detach() for n in self.sites}

    def sample_sites(self):
        return {n: pyro.sample(n, self.priors[n](site)) for n, site in self.sites.items()}

    def forward(self, x, y=None, mask=None, dataset_size=None):
        draws = self.sample_sites()
        batch = x.shape[0]
        with pyro.plate("data", dataset_size or batch, subsample=torch.arange(batch, device=x.device)):
            # Local attention rows are drawn once per particle or posterior draw (a plate at dim -2).
            samples = max((f.size for f in get_plates() if f.dim == -2), default=None) if self.attention else None
            logits = self.net(x, mask, draws, samples=samples)
            logits = logits.reshape(*(sample_shape(draws, self.sites) or logits.shape[:-2]), *logits.shape[-2:])
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


def parse_attention_prior(spec, family):
    """An attention prior (or glob map of them) for ``family``, refusing weight priors and the other family's."""
    prior = priors_pkg.parse(spec) if isinstance(spec, (str, dict)) else spec
    for p in (prior.mapping.values() if isinstance(prior, PriorMap) else [prior]):
        if family not in getattr(p, "serves", (getattr(p, "family", None),)):
            raise ModelError(f"attention prior '{p.spec()}' does not serve {family} attention; use "
                             f"{DEFAULT_ATTENTION_PRIOR[family]} or another {family} attention prior")
    return prior


def sample_shape(draws, sites):
    """Leading sample dims of the draws, without the trailing size-1 slot of the data plate."""
    for name, v in draws.items():
        lead = v.shape[: v.dim() - len(sites[name].shape)]
        return lead[:-1] if lead and lead[-1] == 1 else lead
    return ()
