"""Sampling attention: each layer's attention is a Pyro sample site inside the ``data`` plate.

``SampledAttention`` replaces ``Transformer.attend``. For layer ``i`` it computes the
ordinary attention logits ``q k^T / sqrt(dh)`` and draws the site
``blocks.{i}.attn.weights`` of shape [H, T, T] per sequence from the layer's prior,
attaching the logits and mask as ``infer["attention"]``. The model never knows the
guide: an attention guide (``inference.guides.attention``) reads that context and draws
the value from its amortized posterior in this same forward pass, so the network
runs once per step. Without such a guide the rows are prior draws (a prior
predictive check).

Families: ``dirichlet`` draws normalized rows; ``bam`` (Bayesian Attention Modules)
draws unnormalized positive weights, normalized here over the real keys.

``install(net, family, priors)`` puts the hook on a ``Transformer`` and serves priors that ask for more than the
keys: a learned prior (``dirichlet-eb``) gets its concentrations made (``bind``), and a prior centred on a MAP
network (``centred-dirichlet``) gets that network's softmax rows for the same input as ``KeyContext.reference``
(``ReferenceAttention`` runs it once per forward pass of ``net``, on the raw input).
"""
import math

import pyro
import torch

from core.masks import pair_mask
from priors import AttentionRecord, KeyContext, Site

from .errors import ModelError
from .transformer import Transformer

FAMILIES = ("dirichlet", "bam")


def site_name(layer):
    return f"blocks.{layer}.attn.weights"


def attention_logits(q, k, mask=None):
    """Scaled dot-product logits ``q k^T / sqrt(dh)``, [..., H, T, T]; masked keys (``mask`` [B, T]) get -inf,
    so no mass: what both the sampled attention and a centred prior's MAP network compute."""
    logits = (q / math.sqrt(q.shape[-1])) @ k.transpose(-1, -2)
    return logits if mask is None else logits.masked_fill(~mask[:, None, None, :], -math.inf)


class SampledAttention:
    """The attention hook of an attention-space model: ``attend(q, k, v, mask, layer, params)``."""

    def __init__(self, family, priors, reference=None):
        self.family = family
        self.priors = priors  # site name -> AttentionPrior
        self.reference = reference  # a ReferenceAttention, for priors centred on a MAP network

    def __call__(self, q, k, v, mask=None, layer=None, params=None):
        name = site_name(layer)
        pairs = pair_mask(mask)
        logits = attention_logits(q, k, mask)
        reference = None if self.reference is None else self.reference.rows.get(layer)
        site = Site(name, tuple(logits.shape[-3:]), k.shape[-2], "attention", context=KeyContext(k, pairs, reference))
        w = pyro.sample(name, self.priors[name](site),
                        infer={"attention": AttentionRecord(self.family, pairs, logits=logits)})
        if self.family == "bam":  # normalized after the product: the division runs on [T, dh], not [T, T]
            w = w if pairs is None else w * pairs
            return (w @ v) / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
        return w @ v


def install(net, family, priors):
    """Give ``net`` (a ``Transformer``) the ``SampledAttention`` hook of ``family`` for ``priors`` (site -> prior),
    binding learned priors to the sites and starting the MAP network a centred prior reads."""
    learned = {id(p): p for p in priors.values() if hasattr(p, "bind")}
    if learned and len({id(p) for p in priors.values()}) > 1:
        raise ModelError("a learned attention prior (dirichlet-eb) must be the model's only attention prior: a glob "
                         "map of priors does not make its concentrations model parameters")
    for prior in learned.values():
        prior.bind(list(priors), net.cfg.heads)
    weights = {p.path: p.reference_weights for p in priors.values() if hasattr(p, "reference_weights")}
    if len(weights) > 1:
        raise ModelError("the centred attention priors of one model must read one MAP weights file")
    reference = ReferenceAttention(net, *weights.values()) if weights else None
    net.attend = SampledAttention(family, priors, reference)


class ReferenceAttention:
    """A frozen copy of ``net``'s architecture with a MAP fit's weights, whose softmax attention rows a centred
    prior reads: forward hooks on ``net`` run it on each pass's raw input (``rows``: layer -> [B, H, T, T]) and
    forget them after the pass, so no pass reads another's rows."""

    def __init__(self, net, weights):
        self.net = Transformer(net.cfg)
        want = {n: tuple(t.shape) for n, t in self.net.state_dict().items()}
        have = {n: tuple(t.shape) for n, t in weights.items()}
        if have != want:
            name = next(n for n in sorted({*want, *have}) if want.get(n) != have.get(n))
            raise ModelError(f"the centred prior's MAP weights do not fit this model's network: '{name}' is "
                             f"{have.get(name, 'missing')} in the file, {want.get(name, 'absent')} in the network "
                             f"(fit the MAP network with the same model options)")
        self.net.load_state_dict(weights)
        self.net.requires_grad_(False).eval()
        self.net.attend = self.record
        self.rows = {}
        net.register_forward_pre_hook(self.run, with_kwargs=True)
        net.register_forward_hook(self.forget, always_call=True)

    def run(self, net, args, kwargs):
        x = args[0] if args else kwargs["x"]
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        like = next(net.parameters())
        with torch.no_grad():
            self.net.to(like.device, like.dtype)(x, mask)

    def record(self, q, k, v, mask=None, layer=None, params=None):
        """Softmax attention, as the MAP network computes it, keeping its rows."""
        self.rows[layer] = attention_logits(q, k, mask).softmax(-1)
        return self.rows[layer] @ v

    def forget(self, *_):
        self.rows = {}
