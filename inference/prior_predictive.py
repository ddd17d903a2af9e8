"""Prior predictive checks: what functions does the prior alone imply, before any data?

``prior_predictive(model, x)`` draws S sets of global sites from the prior and
evaluates each as one function on every input of ``x``. The summary says what a
prior implies in function space:

- ``logit_scale``: root-mean-square of the class-centred logits (logits minus their
  mean over classes, since softmax ignores a shared shift), over draws and inputs;
- ``degenerate_share``: the share of draws whose argmax class is the same for every
  input, i.e. functions that cannot tell any two inputs apart;
- ``entropy_mean``: the mean entropy (nats) of each draw's predictive distribution,
  against a maximum of log K; near 0 means overconfident functions;
- ``attention_entropy_mean`` (attention-space models): the mean entropy of the
  attention rows, from every sample site whose name ends with ``.attn.weights``
  (the hook: such a site's value ends in a row on the simplex over keys).
"""
from dataclasses import dataclass, field

import numpy as np
import torch
from pyro import poutine

from . import arviz_io
from core.checks import CheckError, check, integer
from .metrics import entropy
from .posterior import draws_plate
from .sites import is_global

ATTENTION_SUFFIX = ".attn.weights"


@dataclass
class PriorPredictive:
    """Prior draws and the functions they imply on inputs ``x``.

    ``draws``: global site -> [S, *shape]; ``logits``: [S, N, K]; ``attention``:
    site -> row entropies [S, R] (R rows per draw: all inputs, heads and queries).
    """

    label: str
    draws: dict
    logits: torch.Tensor
    attention: dict = field(default_factory=dict)

    @property
    def probs(self):
        return self.logits.softmax(-1)

    def logit_rms(self):
        """Root-mean-square class-centred logit of each draw, [S]."""
        centred = self.logits - self.logits.mean(-1, keepdim=True)
        return centred.double().pow(2).mean((-1, -2)).sqrt()

    def majority_share(self):
        """For each draw, the share of inputs given its most frequent predicted class, [S] (1 = degenerate)."""
        pred = self.logits.argmax(-1)
        counts = torch.nn.functional.one_hot(pred, self.logits.shape[-1]).sum(-2)
        return counts.max(-1).values.double() / pred.shape[-1]

    def entropies(self):
        """Entropy of each draw's predictive distribution at each input, [S, N]."""
        return entropy(self.probs)

    def summary(self):
        """The numbers ``bzoo prior-check`` reports for this prior."""
        out = {
            "num_draws": self.logits.shape[0],
            "logit_scale": self.logit_rms().pow(2).mean().sqrt().item(),
            "degenerate_share": (self.majority_share() == 1.0).double().mean().item(),
            "entropy_mean": self.entropies().mean().item(),
            "entropy_max": float(np.log(self.logits.shape[-1])),
        }
        if self.attention:
            rows = torch.cat([h.flatten() for h in self.attention.values()])
            out["attention_entropy_mean"] = rows.mean().item()
        return out

    def to_arviz(self, var_names=None, y=None, seed=0):
        """InferenceData with ``prior`` (sites) and ``prior_predictive`` (``y`` and ``probs``), one chain.

        ``var_names`` picks sites (names or globs). Attention rows, local and many, are kept as
        their entropies: ``<site>.entropy`` with dims (chain, draw, <site>_row). ``y`` (the
        observed labels of the inputs) adds ``observed_data``.
        """
        attrs = {"prior": self.label}
        prior = arviz_io.sites_group(self.draws, 1, var_names, attrs)
        for name, rows in self.attention.items():
            prior[f"{name}.entropy"] = (("chain", "draw", f"{name}_row"), arviz_io.by_chain(rows, 1))
        groups = {"prior": prior,
                  "prior_predictive": arviz_io.predictive_group(self.probs, 1, "obs_id", seed, attrs)}
        if y is not None:
            groups["observed_data"] = arviz_io.dataset({"y": (["obs_id"], arviz_io.as_numpy(y))})
        return arviz_io.assemble(groups)


@torch.no_grad()
def prior_predictive(model, x, num_samples=100, mask=None, batch_size=256, label=None):
    """Draw ``num_samples`` functions from the prior of ``model`` and evaluate them on ``x``.

    Global sites are drawn once (vectorized by a plate left of the data plate) and
    shared across input batches, so each draw is one function on every input. Local
    sites (attention rows) are drawn per input; for ``.attn.weights`` sites their
    row entropies are kept. Returns a ``PriorPredictive``.
    """
    check({"num_samples": num_samples}, {"num_samples": integer(1)}, CheckError)
    was_training = model.training
    model.eval()
    try:
        head = (x[:batch_size], None, None if mask is None else mask[:batch_size])
        with draws_plate(num_samples):
            trace = poutine.trace(model).get_trace(*head)
        draws = {n: site["value"].reshape(num_samples, *site["fn"].event_shape)
                 for n, site in trace.iter_stochastic_nodes() if is_global(site)}
        values = {n: v.reshape(num_samples, 1, *v.shape[1:]) if num_samples > 1 else v[0] for n, v in draws.items()}
        logits, attention = [], {}
        for i in range(0, x.shape[0], batch_size):
            xb, mb = x[i:i + batch_size], None if mask is None else mask[i:i + batch_size]
            with draws_plate(num_samples):
                trace = poutine.trace(poutine.condition(model, values)).get_trace(xb, None, mb)
            out = trace.nodes["_RETURN"]["value"]
            logits.append(out.reshape(num_samples, xb.shape[0], out.shape[-1]))
            for name, site in trace.nodes.items():
                if site["type"] == "sample" and name.endswith(ATTENTION_SUFFIX):
                    rows = entropy(site["value"]).reshape(num_samples, -1)
                    attention.setdefault(name, []).append(rows)
    finally:
        model.train(was_training)
    label = label or (model.prior.spec() if hasattr(getattr(model, "prior", None), "spec") else "prior")
    return PriorPredictive(str(label), {n: v.cpu() for n, v in draws.items()}, torch.cat(logits, 1).cpu(),
                           {n: torch.cat(v, 1).cpu() for n, v in attention.items()})
