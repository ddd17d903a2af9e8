"""What a guide provides, declared once: read this before writing one (docs/architecture.md).

A **guide** is an ``nn.Module`` built from a prototype batch, ``Guide(model, x, y, mask, **options)``, that provides
``forward(x, y, mask)``: it draws the model's *global* sites (weights) with ``pyro.sample`` under their own names
and returns ``{name: value}`` (``{}`` when the model has none). A guide whose model also has *local* sites (one per
input: attention rows, GP attention outputs) is a **local guide**: ``local(model, mean=False)`` returns the model
with those sites drawn inside the model's own pass (one forward pass per step), ``mean=True`` drawing their means.

A local guide attaches to each local site it draws a **local posterior** (``attach``), which ``inference.elbo``
and ``inference.degeneracy`` read through the functions below and nothing else:

- its term of the objective is ``torch.distributions.kl_divergence(posterior, prior)`` (closed form, registered
  for the pair), per sequence;
- ``is_kl = False`` when that term is not a divergence (CGPT's regularizer): no "on its prior" verdict;
- ``global_draw = True`` when one draw serves the whole batch (KEP-SVGP's u): its numbers count once;
- a guide's ``remedy`` (``AttentionGuide``: free bits, a local KL weight) changes the objective, never the KL.
"""
from typing import Protocol, runtime_checkable

POSTERIOR, REMEDY = "posterior", "remedy"  # the keys of a local site's ``infer`` that carry them


@runtime_checkable
class Guide(Protocol):
    def forward(self, *args, **kwargs):
        """Draw the global sites; {name: value}."""


@runtime_checkable
class LocalGuide(Guide, Protocol):
    def local(self, model, mean=False):
        """``model`` with its local sites drawn from this guide (their means with ``mean=True``)."""


def attach(msg, posterior, remedy=None):
    """Record on a local site's message the posterior it was drawn from, and the guide's remedy if any."""
    msg["infer"][POSTERIOR] = posterior
    if remedy is not None:
        msg["infer"][REMEDY] = remedy


def local_posterior(site):
    """The local posterior attached to a traced site, or None for a global or observed site."""
    return site["infer"].get(POSTERIOR)


def remedy_of(site):
    return site["infer"].get(REMEDY)


def is_kl(posterior):
    """Whether a local posterior's objective term is a KL (True unless it declares ``is_kl = False``)."""
    return getattr(posterior, "is_kl", True)


def is_global_draw(posterior):
    """Whether one draw of this local posterior serves the whole batch (it declares ``global_draw = True``)."""
    return getattr(posterior, "global_draw", False)
