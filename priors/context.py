"""The typed records an attention layer hands on: to its site's prior (``Site.context``) and to a guide
(``infer["attention"]``). Each field is named where it is made and read, so no reader depends on a dict's keys.

Shapes: ``keys``, ``queries``, ``values`` and ``shared`` are [..., H, T, dh]; a mask is None when every token is
real, else the layer's own (token mask [B, T] for GP and CGPT attention, pair mask [B, 1, T, T] for softmax rows).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.distributions import Distribution


@dataclass(frozen=True)
class KeyContext:
    """Softmax-attention rows (Dirichlet, BAM, key-dependent priors): the layer's keys and its pair mask, and where
    a prior asks for it (``centred-dirichlet``) ``reference``: a MAP network's softmax rows for the same input and
    layer, [B, H, T, T] (None otherwise)."""

    keys: torch.Tensor
    mask: Optional[torch.Tensor]
    reference: Optional[torch.Tensor] = None


@dataclass(frozen=True)
class KernelContext:
    """SGPA: the keys and token mask, and the layer's kernel hyperparameters (log lengthscale, log scale)."""

    keys: torch.Tensor
    mask: Optional[torch.Tensor]
    log_lengthscale: torch.Tensor
    log_scale: torch.Tensor


@dataclass(frozen=True)
class EigenContext:
    """KEP-SVGP: the layer's (possibly drawn) singular values [(S,) H, r] and its token mask."""

    singular_values: torch.Tensor
    mask: Optional[torch.Tensor]


@dataclass(frozen=True)
class CorrelatedContext:
    """CGPT: queries, keys, the shared GP's inputs (tokens' X0, or the sparse variant's inducing inputs), values,
    token mask, and the log signal scales of the query and key GPs."""

    queries: torch.Tensor
    keys: torch.Tensor
    shared: torch.Tensor
    values: torch.Tensor
    mask: Optional[torch.Tensor]
    log_scale_q: torch.Tensor
    log_scale_k: torch.Tensor


@dataclass(frozen=True)
class AttentionRecord:
    """``infer["attention"]`` of an attention site: what a guide may read to build its posterior in the model's pass.

    ``family`` names the attention model; ``mask`` is the site's mask. Softmax families give the ``logits`` of the
    rows; GP and CGPT families give the site's ``prior`` distribution, and SGPA also its ``keys``, its ``values``
    (zero at padding) and its ``kernel(x1, x2)`` at the layer's hyperparameters.
    """

    family: str
    mask: Optional[torch.Tensor]
    logits: Optional[torch.Tensor] = None
    prior: Optional[Distribution] = None
    keys: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None
    kernel: Optional[Callable] = None
