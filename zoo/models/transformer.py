"""The deterministic transformer: parameters live here, any of them can be overridden.

Read it like nanoGPT's model file. ``Transformer.forward(x, mask, params)`` runs the
network with ``params`` (a dict of full parameter names to tensors, possibly with
a leading sample dimension) standing in for the module's own parameters; that is
how Bayesian sites and draws enter without the network knowing about Pyro.
"""
import math
from dataclasses import asdict, dataclass

import torch.nn as nn
import torch.nn.functional as F

from core.checks import check, integer, number

from core.masks import masked_mean

from .layers import embedding, layer_norm, linear, patches, sinusoidal_positions, softmax_attention

MAX_TOKENS = 64  # the default patch keeps a series at most this many tokens, so attention sites stay small


def default_patch(length, max_tokens=MAX_TOKENS):
    """The smallest patch size that cuts a series of ``length`` steps into at most ``max_tokens`` tokens."""
    return max(1, math.ceil(length / max_tokens))


SIZES = {  # what each size accepts; the command line checks its flags with the same rules
    "num_classes": integer(2),
    "input_dim": integer(1, optional=True),
    "vocab_size": integer(1, optional=True),
    "d_model": integer(1),
    "depth": integer(1),
    "heads": integer(1),
    "mlp_ratio": integer(1),
    "max_len": integer(1),
    "dropout": number(0, 1, low_open=False),
    "patch": integer(1),
}


class InputShapeError(ValueError):
    """Inputs do not fit the network (longer than ``max_len``, wrong channels); names the shape."""


@dataclass
class TransformerConfig:
    num_classes: int
    input_dim: int | None = None  # channels of real-valued input [B, T, C]
    vocab_size: int | None = None  # or the number of integer tokens [B, T]
    d_model: int = 32
    depth: int = 2
    heads: int = 4
    mlp_ratio: int = 2
    max_len: int = 512  # longest series, in time steps
    dropout: float = 0.0
    patch: int = 1  # time steps per token: real-valued series are cut into patches of this many steps

    def __post_init__(self):
        check({k: getattr(self, k) for k in SIZES}, SIZES, ValueError)
        if (self.input_dim is None) == (self.vocab_size is None):
            raise ValueError("give exactly one of input_dim (real-valued input) or vocab_size (tokens)")
        if self.d_model % self.heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")
        if self.patch < 1 or (self.patch > 1 and self.vocab_size is not None):
            raise ValueError(f"patch={self.patch}: a patch is a whole number >= 1 of steps of a real-valued series "
                             f"(token inputs take patch=1)")

    @property
    def max_tokens(self):
        return math.ceil(self.max_len / self.patch)

    def to_dict(self):
        return asdict(self)


class Block(nn.Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)).

    Its weights reach it as the network's dict ``p`` of full names (``blocks.{i}.attn.qkv.weight``), drawn ones with
    a leading sample dim, so that Bayesian sites stand in without the block knowing; ``net`` lends the hooks a model
    may replace: ``net.project`` (adapters), ``net.attend`` (sampled or GP attention) and ``net.dropout``.
    """

    def __init__(self, cfg, index):
        super().__init__()
        self.index, self.prefix = index, f"blocks.{index}."
        d = cfg.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(d, 3 * d)
        self.attn.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Module()
        self.mlp.fc = nn.Linear(d, cfg.mlp_ratio * d)
        self.mlp.proj = nn.Linear(cfg.mlp_ratio * d, d)

    def forward(self, h, mask, p, net):
        n = self.prefix
        h = h + self.attend(layer_norm(h, p[n + "ln1.weight"], p[n + "ln1.bias"]), mask, p, net)
        return h + self.feed_forward(layer_norm(h, p[n + "ln2.weight"], p[n + "ln2.bias"]), p, net)

    def attend(self, h, mask, p, net):
        a = self.prefix + "attn."
        *lead, t, d = h.shape
        heads = net.cfg.heads
        qkv = net.project(h, p, a + "qkv")
        q, k, v = (z.reshape(*lead, t, heads, d // heads).transpose(-2, -3) for z in qkv.split(d, dim=-1))
        y = net.attend(q, k, v, mask, layer=self.index, params=p)  # hooks with parameters of their own read them from p
        y = y.transpose(-2, -3).reshape(*lead, t, d)
        return net.dropout(net.project(y, p, a + "proj"))

    def feed_forward(self, h, p, net):
        m = self.prefix + "mlp."
        return net.dropout(net.project(F.gelu(net.project(h, p, m + "fc")), p, m + "proj"))


class Transformer(nn.Module):
    """Embedding (of patches of ``patch`` steps) + sinusoidal positions, pre-norm blocks, masked mean pooling, head."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.vocab_size is not None:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            nn.init.normal_(self.embed.weight, std=0.02)
        else:
            self.embed = nn.Linear(cfg.input_dim * cfg.patch, cfg.d_model)
        self.register_buffer("pos", sinusoidal_positions(cfg.max_tokens, cfg.d_model), persistent=False)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.depth))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.num_classes)
        self.attend = softmax_attention  # attention-space models put a sampling attention here

    def weights(self):
        """Name -> tensor of every weight the network computes with: its parameters (a frozen backbone adds buffers)."""
        return dict(self.named_parameters())

    def parameters_with(self, params):
        """The module's own weights with ``params`` standing in, and the sample count S (or None)."""
        p = self.weights()
        if not params:
            return p, None
        sizes = set()
        for name, v in params.items():
            base = p[name].shape
            if v.dim() > len(base):
                v = v.reshape(-1, *base)
                sizes.add(v.shape[0])
            p[name] = v
        if len(sizes) > 1:
            raise ValueError(f"parameter draws disagree on the number of samples: {sorted(sizes)}")
        return p, (sizes.pop() if sizes else None)

    def forward(self, x, mask=None, params=None, samples=None):
        """Logits [B, K], or [S, B, K] when drawn parameters (or ``samples``) give S draws."""
        self.check_input(x)
        h, mask, p = self.encode(x, mask, params, samples)
        h = masked_mean(h, mask)
        h = layer_norm(h, p["ln_f.weight"], p["ln_f.bias"])
        return self.project(h, p, "head")

    def encode(self, x, mask=None, params=None, samples=None):
        """Token states after the blocks ([(S,) B, N, d], before the final norm), their mask and the weights used."""
        p, s = self.parameters_with(params)
        s = s or samples
        cfg = self.cfg
        if cfg.patch > 1:
            x, mask = patches(x, mask, cfg.patch)
        if cfg.vocab_size is not None:
            h = embedding(x, p["embed.weight"])
        else:
            if s:  # give the input the leading sample dim once, so every later op can rely on it
                x = x.expand(s, *x.shape)
            h = self.project(x, p, "embed")
        h = h + self.pos[: h.shape[-2]]
        if s and h.dim() == 3:
            h = h.expand(s, *h.shape)
        for block in self.blocks:
            h = block(h, mask, p, self)
        return h, mask, p

    def project(self, h, p, name):
        """The linear layer ``name`` (embed, blocks.{i}.attn.qkv, ..., head) with weights from ``p``; adapters hook here."""
        return linear(h, p[name + ".weight"], p[name + ".bias"])

    def check_input(self, x):
        """Refuse inputs the network would silently truncate or fail on deep inside."""
        cfg = self.cfg
        tokens = cfg.vocab_size is not None
        want = "[B, T] token ids" if tokens else f"[B, T, {cfg.input_dim}]"
        if x.dim() != (2 if tokens else 3) or (not tokens and x.shape[-1] != cfg.input_dim):
            raise InputShapeError(f"input of shape {list(x.shape)} does not fit the model: expected {want}")
        if x.is_floating_point() == tokens:
            raise InputShapeError(f"input of dtype {str(x.dtype).replace('torch.', '')} does not fit the model: it "
                                  f"reads {'integer token ids' if tokens else 'real values (a float tensor)'}")
        if x.shape[1] > cfg.max_len:
            raise InputShapeError(f"input of shape {list(x.shape)} has sequences of length {x.shape[1]}, longer than "
                                  f"the model's max_len={cfg.max_len}; build the model with max_len >= {x.shape[1]}")

    def dropout(self, h):
        return F.dropout(h, self.cfg.dropout, self.training) if self.cfg.dropout else h
