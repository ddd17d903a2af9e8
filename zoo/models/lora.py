"""Low-rank adapters (LoRA) on a frozen pretrained backbone, as a Pyro model whose adapters are sample sites.

``LoRAClassifier(num_classes, input_dim, backbone=DIR, adapter="lora:rank=4,alpha=8")``
fine-tunes a backbone from ``bzoo pretrain``. The backbone's weights are *buffers*
of the network (frozen: no optimizer or guide ever sees them); the trained
parameters are the adapters and a new head, and ``bayes`` chooses which of them are
sample sites (default ``weights``: all of them; ``adapters``: the LoRA matrices only),
so every prior and every weight-space guide applies unchanged.

A LoRA pair on projection ``W`` (``d_out x d_in``) adds ``(alpha / rank) B A x`` to
its output, with ``A`` (``rank x d_in``, Kaiming-uniform) and ``B`` (``d_out x rank``,
zeros, so the adapted network starts as the backbone). Each factor is an
``nn.Linear`` called on the activations (not merged into ``W``), so Kronecker-factored
curvature (laplace-torch's KFAC) sees them as layers. Targets are globs over the
projections ``embed``, ``blocks.{i}.attn.q``, ``.k``, ``.v`` (the three row blocks of
the fused ``qkv`` projection: an adapter on ``q`` adds its update to rows
``0..d`` of the fused output only), ``blocks.{i}.attn.proj``, ``blocks.{i}.mlp.fc``
and ``blocks.{i}.mlp.proj``; the default ``*.attn.[qv]`` adapts q and v of every
block, as Hu et al. did. ``adapter="full"`` instead trains every backbone weight
(a full fine-tune of the same network, for comparison).

Input: the backbone saw univariate windows resampled to its ``length`` steps and
z-normalized, so each channel of an input series (its real steps, by the mask) is
resampled to ``length`` steps and z-normalized, and runs through the backbone on
its own (channel independence, as in PatchTST). The head sees, per channel, the
mean-pooled final token state and the channel's mean and log standard deviation
(what the normalization removed), concatenated over channels.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .backbone import Backbone
from .classifier import DEFAULT_PRIOR, ModelError, TransformerClassifier, bayesian_names
from .layers import layer_norm, linear
from .transformer import Transformer, TransformerConfig
from ..options import ADAPTER

DEFAULT_TARGETS = "*.attn.[qv]"
KINDS = ("lora", "full")


@dataclass
class AdapterSpec:
    kind: str = "lora"
    rank: int = 4
    alpha: float = 8.0
    targets: str = DEFAULT_TARGETS

    def spec(self):
        if self.kind == "full":
            return "full"
        return f"lora:rank={self.rank},alpha={self.alpha:g},targets={self.targets}"


def parse_adapter(spec):
    """``"lora:rank=4,alpha=8,targets=*.attn.[qv]"`` (globs joined by ``|``) or ``"full"`` -> AdapterSpec; each value
    checked against its declaration in ``zoo.options.ADAPTER``."""
    if isinstance(spec, AdapterSpec):
        return spec
    kind, _, args = str(spec).strip().partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise ModelError(f"--adapter '{spec}': unknown adapter '{kind}'; valid: "
                         f"lora[:rank=R,alpha=A,targets=GLOB], full")
    out, seen = AdapterSpec(kind), set()
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, value = (t.strip() for t in item.partition("="))
        if not eq or kind == "full" or key not in ("rank", "alpha", "targets"):
            raise ModelError(f"--adapter '{spec}': unexpected '{item}'; lora takes rank=R, alpha=A, targets=GLOB "
                             f"and full takes nothing")
        if key in seen:
            raise ModelError(f"--adapter '{spec}': {key} is given twice")
        seen.add(key)
        if key == "targets":
            out.targets = value
            continue
        try:
            number = int(value) if key == "rank" and value.lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise ModelError(f"--adapter '{spec}': {key} must be a number, got '{value}'") from None
        number = int(number) if key == "rank" and float(number).is_integer() else number  # rank=4.0 is rank 4
        ADAPTER.check({key: number}, ModelError, lambda name: f"--adapter '{spec}': {name}")
        setattr(out, key, number)
    return out


@dataclass
class AdapterConfig(TransformerConfig):
    """The adapted network: the target's classes, channels and length, the backbone's shape, the adapter."""
    adapter: str = "lora"
    rank: int = 4
    alpha: float = 8.0
    targets: str = DEFAULT_TARGETS
    length: int = 64  # steps the backbone's windows have: every input channel is resampled to this

    def backbone_config(self):
        return TransformerConfig(num_classes=self.patch, input_dim=1, d_model=self.d_model, depth=self.depth,
                                 heads=self.heads, mlp_ratio=self.mlp_ratio, max_len=self.length,
                                 dropout=self.dropout, patch=self.patch)


class LoRA(nn.Module):
    """``scale * B(A(x))``: A [rank, d_in] (Kaiming-uniform, as nn.Linear), B [d_out, rank] (zeros).

    ``flipout`` (set by the ``flipout`` context, else None) is ``(mean of A, examples)``: a drawn ``A`` then
    enters as that mean plus the draw's deviation with random signs per example (Flipout).
    """

    def __init__(self, d_in, d_out, rank, alpha):
        super().__init__()
        self.A = nn.Linear(d_in, rank, bias=False)
        self.B = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.B.weight)
        self.scale = alpha / rank
        self.flipout = None

    def forward(self, h, p, name):
        """With the module's own factors (calls the layers, so hooks see them) or drawn ones from ``p``."""
        a, b = p[name + ".A.weight"], p[name + ".B.weight"]
        if self.flipout is not None and a is not self.A.weight:
            z = flipped(h, a, *self.flipout)
        else:
            z = self.A(h) if a is self.A.weight else linear(h, a)
        return self.scale * (self.B(z) if b is self.B.weight else linear(z, b))


def flipped(h, a, mean, examples):
    """``A h`` for a draw ``a`` of a Gaussian with mean ``mean``, decorrelated across examples by Flipout (Wen et
    al., 2018): ``mean h + s * ((a - mean) (r * h))`` with ``r`` [d_in] and ``s`` [rank] random signs per example.

    ``h`` is [(S,) rows, tokens, d_in], ``rows`` a whole multiple of ``examples`` (the channels of an example
    run as consecutive rows and share its signs); each example's perturbation has the distribution of ``a``'s
    (the deviation is symmetric and independent per element) while two examples' are uncorrelated.
    """
    rows, d_in, rank = h.shape[-3], a.shape[-1], a.shape[-2]
    if rows % examples:
        raise ValueError(f"flipout: {rows} rows are not a whole number of channels of {examples} examples")

    def signs(size):
        s = torch.randint(0, 2, (examples, size), device=h.device).to(h.dtype) * 2 - 1
        return s.repeat_interleave(rows // examples, 0).unsqueeze(-2)  # [rows, 1, size]
    r, s = signs(d_in), signs(rank)
    return linear(h, mean) + s * linear(h * r, a - mean)


@contextmanager
def flipout(net, means, examples):
    """Within: the LoRA modules of ``net`` whose A site is in ``means`` (site -> the variational mean) run drawn
    A's by Flipout over ``examples`` examples (``flipped``); outside, every module runs as before."""
    modules = [(net.get_submodule(n[:-len(".A.weight")]), m) for n, m in means.items()]
    try:
        for module, mean in modules:
            module.flipout = (mean, examples)
        yield
    finally:
        for module, _ in modules:
            module.flipout = None


def projections(cfg):
    """Name -> (layer, output rows or None, d_in, d_out) of every projection an adapter may target."""
    d, hidden = cfg.d_model, cfg.mlp_ratio * cfg.d_model
    out = {"embed": ("embed", None, cfg.patch, d)}
    for i in range(cfg.depth):
        a, m = f"blocks.{i}.attn.", f"blocks.{i}.mlp."
        for j, part in enumerate("qkv"):
            out[a + part] = (a + "qkv", (j * d, (j + 1) * d), d, d)
        out[a + "proj"] = (a + "proj", None, d, d)
        out[m + "fc"] = (m + "fc", None, d, hidden)
        out[m + "proj"] = (m + "proj", None, hidden, d)
    return out


def select_targets(cfg):
    """The projections ``cfg.targets`` names (globs joined by ``|``), refusing a glob that matches none."""
    names = list(projections(cfg))
    chosen = []
    for glob in (g.strip() for g in cfg.targets.split("|")):
        matched = [n for n in names if fnmatchcase(n, glob)]
        if not glob or not matched:
            raise ModelError(f"--adapter targets glob '{glob}' matches no projection; choose from "
                             f"{', '.join(names)} (e.g. *.attn.[qv], blocks.3.*, *)")
        chosen += [n for n in matched if n not in chosen]
    return [n for n in names if n in chosen]


def _attach(root, dotted, module):
    """Put ``module`` at ``root.<dotted>``, creating empty modules on the way (``lora.blocks.0.attn.q``)."""
    *path, last = dotted.split(".")
    for part in path:
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    root.add_module(last, module)


class AdapterTransformer(Transformer):
    """The backbone's network (weights as frozen buffers, or trainable for ``adapter="full"``), adapters, new head."""

    def __init__(self, cfg: AdapterConfig):
        super().__init__(cfg.backbone_config())
        self.cfg = cfg
        self.frozen = frozenset()
        if cfg.adapter == "lora":
            self.frozen = frozenset(self._freeze())
        d = cfg.d_model
        self.head = nn.Linear(cfg.input_dim * (d + 2), cfg.num_classes)
        self.adapters = {}  # layer -> [(target, output rows)]
        if cfg.adapter == "lora":
            table = projections(cfg)
            self.lora = nn.Module()
            for target in select_targets(cfg):
                layer, rows, d_in, d_out = table[target]
                if cfg.rank > min(d_in, d_out):
                    raise ModelError(f"--adapter rank={cfg.rank} is larger than projection '{target}' allows "
                                     f"({d_in} -> {d_out}: rank at most {min(d_in, d_out)})")
                _attach(self.lora, target, LoRA(d_in, d_out, cfg.rank, cfg.alpha))
                self.adapters.setdefault(layer, []).append((target, rows))

    def _freeze(self):
        """Turn every backbone parameter into a buffer of the same name: still saved, never trained."""
        names = []
        for prefix, module in list(self.named_modules()):
            if prefix == "head":  # the reconstruction head is replaced, not kept
                continue
            for name, param in list(module._parameters.items()):
                del module._parameters[name]
                module.register_buffer(name, param.detach())
                names.append(f"{prefix}.{name}" if prefix else name)
        return names

    def load_backbone(self, state):
        """Copy a backbone's weights in (its reconstruction head excepted)."""
        weights = self.weights()
        with torch.no_grad():
            for name, value in state.items():
                if not name.startswith("head."):
                    weights[name].copy_(value)

    def backbone_weights(self):
        """Name -> tensor of the backbone's weights as this network holds them."""
        return {n: t for n, t in self.weights().items() if not n.startswith(("head.", "lora."))}

    def weights(self):
        own = dict(self.named_parameters())
        if self.frozen:
            own.update((n, b) for n, b in self.named_buffers() if n in self.frozen)
        return own

    def project(self, h, p, name):
        module = self.get_submodule(name)
        if p[name + ".weight"] is module.weight and p[name + ".bias"] is module.bias:
            y = module(h)  # a layer call, so curvature hooks (KFAC) see the head
        else:
            y = super().project(h, p, name)
        for target, rows in self.adapters.get(name, ()):
            delta = self.get_submodule("lora." + target)(h, p, "lora." + target)
            y = y + (delta if rows is None else F.pad(delta, (rows[0], y.shape[-1] - rows[1])))
        return y

    def linearize(self, point):
        """From now on drawn parameters enter the network linearized around ``point`` (name -> value):
        ``f(x; point) + J(x) (theta - point)``, laplace-torch's GLM predictive (Laplace-LoRA predicts so)."""
        self.expansion = nn.Module()
        for name, value in point.items():
            self.expansion.register_buffer(name.replace(".", "__"), value.detach().clone())

    def forward(self, x, mask=None, params=None, samples=None):
        """Logits [B, K], or [S, B, K] with S drawn parameter sets."""
        if params and getattr(self, "expansion", None) is not None:
            return self.linearized(x, mask, params, samples)
        return self.evaluate(x, mask, params, samples)

    def linearized(self, x, mask, params, samples):
        """The first-order expansion around ``expansion``, by one forward-mode pass over every draw at once."""
        point = {n.replace("__", "."): b for n, b in self.expansion.named_buffers()}
        with fwAD.dual_level(), sdpa_kernel(SDPBackend.MATH):  # fused attention has no forward-mode derivative
            dual = {}
            for name, value in params.items():
                base = point[name].expand_as(value).contiguous() if name in point else None
                dual[name] = value if base is None else fwAD.make_dual(base, value - base)
            out = fwAD.unpack_dual(self.evaluate(x, mask, dual, samples))
        return out.primal if out.tangent is None else out.primal + out.tangent

    def evaluate(self, x, mask=None, params=None, samples=None):
        """The network itself: logits [B, K], or [S, B, K] with S drawn parameter sets."""
        self.check_input(x)
        z, stats = univariate(x, mask, self.cfg.length)
        h, _, p = self.encode(z, None, params, samples)
        h = layer_norm(h.mean(-2), p["ln_f.weight"], p["ln_f.bias"])
        b, c = x.shape[0], x.shape[-1]
        h = h.reshape(*h.shape[:-2], b, c, h.shape[-1])
        h = torch.cat([h, stats.expand(*h.shape[:-1], 2)], -1).flatten(-2)
        return self.project(h, p, "head")


def univariate(x, mask, length):
    """[B, T, C] series -> ([B * C, length, 1] z-normalized channels, [B, C, 2] their mean and log std).

    Each channel's real steps (``mask``; all when None) are linearly interpolated to
    ``length`` points, then standardized; the statistics are those of the resampled values.
    """
    b, t, c = x.shape
    if mask is None:
        n = torch.full((b,), t, device=x.device)
    else:  # real steps first, in order, wherever padding sat
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
        x = x.gather(1, order[..., None].expand(b, t, c))
        n = mask.sum(-1)
    pos = torch.linspace(0, 1, length, device=x.device, dtype=x.dtype) * (n - 1).clamp(min=0).to(x.dtype)[:, None]
    i0 = pos.floor().long()
    i1 = torch.minimum(i0 + 1, (n - 1).clamp(min=0)[:, None])
    frac = (pos - i0)[..., None]
    left, right = (x.gather(1, i[..., None].expand(b, length, c)) for i in (i0, i1))
    z = left * (1 - frac) + right * frac
    mean = z.mean(1)
    std = z.std(1, unbiased=False)
    z = (z - mean[:, None]) / std.clamp_min(1e-5)[:, None]
    stats = torch.stack([mean, std.clamp_min(1e-3).log()], -1)
    return z.transpose(1, 2).reshape(b * c, length, 1), stats


class LoRAClassifier(TransformerClassifier):
    """A sequence classifier fine-tuned on a pretrained backbone through low-rank adapters.

    ``backbone``: a folder from ``bzoo pretrain``, a ``Backbone``, or the description a
    model's ``config()`` records (architecture only: its weights then come from a state
    dict, as ``Posterior.load`` does). ``adapter``: ``"lora[:rank=R,alpha=A,targets=GLOBS]"``
    or ``"full"``. ``bayes``: ``weights`` (default: every trained weight, adapters and head),
    ``adapters`` (every LoRA matrix; for ``full``, every backbone weight but the layer
    norms), ``head`` / ``last-layer``, ``none``, or comma-separated words and globs over
    parameter names (``lora.blocks.0.attn.q.A.weight``, ``head.weight``, ...). Trained
    parameters that are not sites are point estimates fitted alongside the guide.

    ``d_model``, ``depth``, ``heads``, ``mlp_ratio``, ``patch``: when given, they must
    match the backbone's (a request for another architecture is refused, not ignored).
    Use ``for_dataset`` to size the model for a zoo Dataset and refuse data the backbone saw.
    ``linearized``: drawn sites enter through the network linearized around a point (``linearize``).
    """

    def __init__(self, num_classes, input_dim=1, backbone=None, adapter="lora", max_len=512, dropout=0.0,
                 bayes="weights", prior=DEFAULT_PRIOR, d_model=None, depth=None, heads=None, mlp_ratio=None,
                 patch=None, linearized=False):
        nn.Module.__init__(self)
        if backbone is None:
            raise ModelError("LoRAClassifier needs a backbone: a folder written by `bzoo pretrain`")
        self.backbone = Backbone.load(backbone) if isinstance(backbone, (str, Path)) else \
            Backbone.from_description(backbone)
        b = self.backbone.cfg
        for key, value in (("d_model", d_model), ("depth", depth), ("heads", heads), ("mlp_ratio", mlp_ratio),
                           ("patch", patch)):
            if value is not None and value != getattr(b, key):
                raise ModelError(f"{key}={value} does not match the backbone's {key}={getattr(b, key)} "
                                 f"('{self.backbone.path}'): an adapter keeps the backbone's architecture")
        spec = parse_adapter(adapter)
        try:
            self.cfg = AdapterConfig(num_classes, input_dim, None, b.d_model, b.depth, b.heads, b.mlp_ratio,
                                     max_len, dropout, b.patch, adapter=spec.kind, rank=spec.rank, alpha=spec.alpha,
                                     targets=spec.targets, length=b.max_len)
        except ValueError as e:
            raise ModelError(str(e)) from None
        self.adapter = spec
        self.net = AdapterTransformer(self.cfg)
        if self.backbone.state is not None:
            self.net.load_backbone(self.backbone.state)
        self.bayes = bayes
        self.attention, self.attention_prior, self.attention_sites = None, None, []
        self.declare_sites(self._site_names(bayes), prior)
        self.linearized = False
        if linearized:  # the expansion point's values come from a saved state dict
            self.linearize(self.initial_values())

    def linearize(self, point):
        """Make drawn site values enter through the network linearized around ``point`` (site -> value).

        ``laplace_lora`` does this to a copy of the model for its GLM predictive; the
        expansion point is saved with the model and ``config()`` records it.
        """
        self.net.linearize({n: point[n] for n in self.sites})
        self.linearized = True

    @classmethod
    def for_dataset(cls, dataset, backbone, **options):
        """Sized for zoo Dataset ``dataset``; refuses token data and data the backbone saw (leakage)."""
        backbone = Backbone.load(backbone) if isinstance(backbone, (str, Path)) else backbone
        if dataset.tokens:
            raise ModelError(f"{dataset.name} holds tokens; a backbone adapts real-valued series")
        backbone.check_unseen(dataset)
        return cls(dataset.num_classes, dataset.input_dim, backbone, max_len=max(512, dataset.max_len), **options)

    def _site_names(self, bayes):
        adapted = [n for n, _ in self.net.named_parameters() if n.startswith("lora.")] if self.adapter.kind == "lora" \
            else [n for n in bayesian_names(self.net, "weights") if not n.startswith("head.")]
        names = []
        for word in (w.strip() for w in str(bayes).split(",") if w.strip()):
            got = adapted if word == "adapters" else ["head.weight", "head.bias"] if word in ("head", "last-layer") \
                else bayesian_names(self.net, word)
            names += [n for n in got if n not in names]
        return names

    def config(self):
        prior = self.prior.spec() if hasattr(self.prior, "spec") else str(self.prior)
        return {"num_classes": self.cfg.num_classes, "input_dim": self.cfg.input_dim,
                "backbone": self.backbone.describe(), "adapter": self.adapter.spec(), "max_len": self.cfg.max_len,
                "dropout": self.cfg.dropout, "bayes": self.bayes, "prior": prior, "linearized": self.linearized}

    def bytes_per_pair(self, length):
        """Peak bytes of one draw on one series: every channel runs as a window of ``cfg.length`` steps,
        whatever ``length`` the input has (see ``TransformerClassifier.bytes_per_pair``); a linearized
        network carries a tangent beside every activation and unfused attention, so three times that."""
        return (3 if self.linearized else 1) * self.cfg.input_dim * super().bytes_per_pair(self.cfg.length)

    def trained_parameters(self):
        """How many numbers a fit trains: the adapters and the head (every parameter for a full fine-tune)."""
        return sum(p.numel() for p in self.net.parameters())
