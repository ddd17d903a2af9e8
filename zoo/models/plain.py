"""The peer: the identical architecture as an ordinary nn.Module, trained with Adam + cross-entropy.

Written independently of ``zoo.models.transformer`` (nn.Linear, nn.LayerNorm, SDPA) so
that the benchmark compares against what a user would write by hand; a test
checks that, given the same weights, both compute the same logits.
"""
import torch.nn as nn
import torch.nn.functional as F

from .layers import sinusoidal_positions


class PlainBlock(nn.Module):
    def __init__(self, d, heads, mlp_ratio, dropout=0.0):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.ModuleDict({"qkv": nn.Linear(d, 3 * d), "proj": nn.Linear(d, d)})
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.ModuleDict({"fc": nn.Linear(d, mlp_ratio * d), "proj": nn.Linear(mlp_ratio * d, d)})

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = self.attn["qkv"](self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else mask[:, None, None, :])
        x = x + F.dropout(self.attn["proj"](y.transpose(1, 2).reshape(b, t, d)), self.p, self.training)
        return x + F.dropout(self.mlp["proj"](F.gelu(self.mlp["fc"](self.ln2(x)))), self.p, self.training)


class PlainTransformer(nn.Module):
    """``forward(x, mask=None) -> logits [B, K]``: real-valued [B, T, C] series, or token ids [B, T] with ``vocab_size``."""

    def __init__(self, input_dim, num_classes, d_model=64, depth=2, heads=4, mlp_ratio=2, max_len=512, dropout=0.0,
                 patch=1, vocab_size=None):
        super().__init__()
        self.patch = patch
        if vocab_size is not None:
            self.embed = nn.Embedding(vocab_size, d_model)
            nn.init.normal_(self.embed.weight, std=0.02)
        else:
            self.embed = nn.Linear(input_dim * patch, d_model)
        self.register_buffer("pos", sinusoidal_positions(-(-max_len // patch), d_model), persistent=False)
        self.blocks = nn.ModuleList(PlainBlock(d_model, heads, mlp_ratio, dropout) for _ in range(depth))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x, mask=None):
        if self.patch > 1:  # consecutive steps side by side, the tail zero-padded; a patch is real if any step is
            pad = -x.shape[1] % self.patch
            x = x if mask is None else x.masked_fill(~mask[..., None], 0.0)
            x = F.pad(x, (0, 0, 0, pad)).reshape(x.shape[0], -1, self.patch * x.shape[2])
            mask = None if mask is None else F.pad(mask, (0, pad)).reshape(x.shape[0], x.shape[1], -1).any(-1)
        h = self.embed(x) + self.pos[: x.shape[1]]
        for block in self.blocks:
            h = block(h, mask)
        if mask is None:
            h = h.mean(1)
        else:
            m = mask.to(h.dtype).unsqueeze(-1)
            h = (h * m).sum(1) / m.sum(1)
        return self.head(self.ln_f(h))


def train_step(model, optim, x, y, mask=None):
    """One Adam step on the mean cross-entropy of a (full or mini) batch; padded steps are masked as in the zoo."""
    optim.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x, mask), y)
    loss.backward()
    optim.step()
    return loss
