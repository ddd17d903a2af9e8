"""Self-supervised pretraining of a backbone: masked-patch reconstruction on every shipped series but the target's.

The corpus (``zoo.data.corpus``) is put in one common form: a random crop of a
series (between ``min_crop`` and ``max_crop`` steps, log-uniform, so one backbone
sees daily cycles and long trends alike) is resampled to ``length`` steps by linear
interpolation and z-normalized, then cut into ``length / patch`` patch tokens. A
fraction ``mask_ratio`` of the tokens is zeroed (as PatchTST does) and the network,
a zoo ``Transformer`` whose head maps each final token state to ``patch`` values,
is trained to reconstruct them (mean squared error on the masked tokens). Sources
are drawn with probability proportional to the square root of their size, so a
single 300,000-step dataset does not drown the 24 others; within a source, series
are drawn in proportion to their length.

``pretrain(out, exclude=[...])`` writes a backbone folder (``zoo.models.backbone``);
``cached_backbone(name, cache)`` gives the study one backbone per excluded dataset,
pretrained once and reused.
"""
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from core.checks import check_device

from .data.corpus import check_exclude, corpus
from .folder_kinds import refuse_other_kind
from .models.backbone import WEIGHTS, Backbone, BackboneError, write
from .models.layers import layer_norm
from .models.transformer import Transformer, TransformerConfig
from .options import PRETRAIN, PRETRAIN_DEFAULTS

DEFAULTS = PRETRAIN_DEFAULTS  # each option's range: zoo.options.PRETRAIN
EVAL_WINDOWS = 1024  # a fixed batch the reconstruction error is reported on


class Windows:
    """Random windows of the corpus in the common form: crops resampled to ``length`` steps, then z-normalized."""

    def __init__(self, sources, length, min_crop, max_crop):
        series = [s for source in sources for s in source.series]
        if not series:
            raise BackboneError("the pretraining corpus is empty: every source was excluded")
        self.flat = torch.as_tensor(np.concatenate(series), dtype=torch.float32)
        self.lengths = torch.tensor([len(s) for s in series])
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths
        weights = []
        for source in sources:
            share = math.sqrt(source.steps)
            weights += [share * len(s) / source.steps for s in source.series]
        self.probs = torch.tensor(weights, dtype=torch.float64)
        self.length, self.min_crop, self.max_crop = length, min_crop, max_crop

    def sample(self, n, generator):
        """[n, length] windows."""
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        size = self.lengths[idx].double()
        lo, hi = size.clamp(max=self.min_crop).log(), size.clamp(max=self.max_crop).log()
        crop = (lo + torch.rand(n, generator=generator, dtype=torch.float64) * (hi - lo)).exp().round().clamp(min=2)
        crop = torch.minimum(crop, size)
        start = (torch.rand(n, generator=generator, dtype=torch.float64) * (size - crop + 1)).floor()
        grid = torch.linspace(0, 1, self.length, dtype=torch.float64)
        t = start[:, None] + grid * (crop - 1)[:, None]
        i0 = t.floor().long()
        frac = (t - i0).float()
        i1 = torch.minimum(i0 + 1, (size.long() - 1)[:, None])
        base = self.starts[idx][:, None]
        x = self.flat[base + i0] * (1 - frac) + self.flat[base + i1] * frac
        return standardize(x)


def standardize(x, eps=1e-5):
    """Each row to mean 0 and standard deviation 1 (a constant row becomes zeros)."""
    x = x - x.mean(-1, keepdim=True)
    return x / x.std(-1, unbiased=False, keepdim=True).clamp_min(eps)


def reconstruction_loss(net, x, masked):
    """Mean squared error of the reconstructed masked patches; ``x`` [B, L], ``masked`` [B, L / patch] booleans."""
    b, n = masked.shape
    target = x.reshape(b, n, -1)
    h, _, p = net.encode(target.masked_fill(masked[..., None], 0.0).reshape(b, -1, 1))
    rec = net.project(layer_norm(h, p["ln_f.weight"], p["ln_f.bias"]), p, "head")
    return (rec - target).pow(2)[masked].mean()


def random_masks(b, n, ratio, generator):
    """[b, n] booleans with round(ratio * n) (at least one) True per row, at random places."""
    k = max(1, round(ratio * n))
    order = torch.rand(b, n, generator=generator).argsort(-1)
    return order < k


def pretrain(out, exclude, only=None, seed=0, device=None, progress=True, **options):
    """Pretrain a backbone on the corpus minus ``exclude`` (dataset names) and write it to folder ``out``.

    ``options`` override ``DEFAULTS`` (architecture, ``steps``, ``batch_size``, ``lr``,
    ``mask_ratio``, crop range). ``only`` keeps just the named sources (tests). Returns
    the loaded ``Backbone``.
    """
    exclude, o, seed = checked_request(out, exclude, seed, device, options)
    started, cpu_started, load_started = time.perf_counter(), time.process_time(), os.getloadavg()
    sources, removed = corpus(exclude, only=only)
    windows = Windows(sources, o["length"], o["min_crop"], o["max_crop"])
    torch.manual_seed(seed)
    cfg = TransformerConfig(num_classes=o["patch"], input_dim=1, d_model=o["d_model"], depth=o["depth"],
                            heads=o["heads"], mlp_ratio=o["mlp_ratio"], max_len=o["length"], patch=o["patch"])
    device = torch.device(device or "cpu")
    net = Transformer(cfg).to(device)
    losses, eval_mse, zero_mse = train(net, windows, o, seed, device, progress)
    net.cpu()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    fingerprints = sorted({f for source in sources for f in _fingerprints(source)})
    extra = {"objective": "masked-patch reconstruction (zeroed patches, MSE on the masked ones)",
             "pretraining": {**o, "seed": seed, "exclude": exclude, "only": only},
             "eval_mse": eval_mse, "eval_zero_predictor_mse": zero_mse,
             "final_loss": float(np.mean(losses[-100:])) if losses else None,
             "seconds": seconds, "cpu_seconds": cpu_seconds, "threads": torch.get_num_threads(),
             "load_average_start": load_started[0], "load_average_end": os.getloadavg()[0],
             "device": str(device), "losses": [float(v) for v in losses[:: max(1, len(losses) // 500)]],
             "versions": _versions()}
    data = {"excluded": exclude, "removed": removed, "corpus": "aeon datasets/data",
            "sources": [s.summary() for s in sources], "fingerprints": fingerprints}
    root = write(out, net, extra, data)
    _plot(losses, root / "loss.png")
    return Backbone.load(root)


def checked_request(out, exclude, seed, device, options):
    """(the excluded names, the options over ``DEFAULTS`` and the seed, as plain Python numbers), every one checked,
    and ``out`` free, before any work."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise BackboneError(f"unknown pretraining option '{sorted(unknown)[0]}'; valid: {', '.join(DEFAULTS)}")
    o = {**DEFAULTS, **options}
    PRETRAIN.check({"exclude": exclude, "out": out, "seed": seed, "device": device, **o}, BackboneError)
    o = {k: type(DEFAULTS[k])(v) for k, v in o.items()}  # numpy numbers: torch and json want Python's
    items = exclude.split(",") if isinstance(exclude, str) else exclude  # names, not the letters of one
    bad = next((e for e in items if not isinstance(e, str)), None)
    if bad is not None:
        raise BackboneError(f"exclude must name datasets as strings, got {bad!r}")
    exclude = [e.strip() for e in items if e.strip()]
    if not exclude:
        raise BackboneError("--exclude names no dataset: a backbone must leave out the dataset it will be tuned on")
    check_exclude(exclude)
    if o["length"] % o["patch"]:
        raise BackboneError(f"length {o['length']} is not a whole number of patches of {o['patch']} steps")
    if o["d_model"] % o["heads"]:
        raise BackboneError(f"d_model={o['d_model']} is not divisible by heads={o['heads']}")
    if device is not None:
        check_device(device, BackboneError, "--device")
    _refuse_existing(out)
    return exclude, o, int(seed)


def train(net, windows, o, seed, device, progress):
    """AdamW on masked-patch reconstruction (warm-up, then cosine to a tenth); (losses, held-out MSE, the zero
    predictor's MSE on the same held-out windows)."""
    optim = torch.optim.AdamW(net.parameters(), lr=o["lr"], weight_decay=0.01)
    warmup = max(1, o["steps"] // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / max(1, o["steps"]))))))
    g = torch.Generator().manual_seed(seed)
    g_eval = torch.Generator().manual_seed(seed + 1)
    tokens = o["length"] // o["patch"]
    eval_x = windows.sample(EVAL_WINDOWS, g_eval).to(device)
    eval_mask = random_masks(EVAL_WINDOWS, tokens, o["mask_ratio"], g_eval).to(device)
    losses = []
    net.train()
    bar = tqdm(range(o["steps"]), desc="pretrain", disable=not progress)
    for step in bar:
        x = windows.sample(o["batch_size"], g).to(device)
        loss = reconstruction_loss(net, x, random_masks(o["batch_size"], tokens, o["mask_ratio"], g).to(device))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optim.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    net.eval()
    with torch.no_grad():
        eval_mse = reconstruction_loss(net, eval_x, eval_mask).item()
        zero_mse = eval_x.reshape(EVAL_WINDOWS, tokens, -1).pow(2)[eval_mask].mean().item()
    return losses, eval_mse, zero_mse


def _fingerprints(source):
    from .data.corpus import fingerprint
    return [fingerprint(s) for s in source.series]


def _refuse_existing(out):
    from .models.backbone import FILES
    root = Path(out)
    found = [n for n in FILES if (root / n).exists()]
    if root.exists() and not root.is_dir():
        raise BackboneError(f"output '{root}' exists and is not a folder")
    refuse_other_kind(root, "backbone", BackboneError)
    if found:
        raise BackboneError(f"output folder '{root}' already holds a backbone ({found[0]}); choose another folder "
                            f"(a backbone folder is never overwritten)")
    try:  # before training: a backbone trained for minutes must have somewhere to go
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BackboneError(f"output folder '{root}' cannot be written ({e.strerror}); choose another folder") from None


def _versions():
    from .runs import versions
    out = versions()
    try:
        from importlib import metadata
        out["aeon"] = metadata.version("aeon")
    except Exception:  # noqa: BLE001 - a missing version is recorded as such
        out["aeon"] = None
    return out


def _plot(losses, path):
    from inference import plots
    if losses:
        plots.loss_curve(losses, path)


def cache_key(exclude, options):
    """Folder name of a cached backbone: the excluded datasets and a hash of the options that shape it."""
    o = {**DEFAULTS, **options}
    digest = hashlib.sha256(json.dumps(o, sort_keys=True).encode()).hexdigest()[:10]
    return f"exclude-{'+'.join(sorted(exclude))}-{digest}"


def default_cache():
    return Path(os.environ.get("BZOO_CACHE", Path.home() / ".cache" / "bzoo")) / "backbones"


def cached_backbone(exclude, cache=None, seed=0, progress=True, **options):
    """The backbone pretrained without ``exclude`` (a dataset name or a list of them) in ``cache`` (default
    ``$BZOO_CACHE/backbones``), pretrained there first if absent. Concurrent callers each pretrain in a scratch
    folder of their own and the first to finish wins, so a cell of a parallel study never reads half a folder."""
    exclude = [exclude] if isinstance(exclude, str) else list(exclude)
    folder = Path(cache or default_cache()) / cache_key(exclude, {**options, "seed": seed})
    if (folder / WEIGHTS).exists():
        return Backbone.load(folder)
    scratch = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    pretrain(scratch, exclude, seed=seed, progress=progress, **options)
    try:
        scratch.rename(folder)
    except OSError:  # another process finished first: use its folder
        shutil.rmtree(scratch, ignore_errors=True)
    return Backbone.load(folder)


def adapter_model(row, dataset, backbone=None, cache=None, progress=True):
    """The LoRAClassifier a study row with an ``adapter`` describes (``zoo.recipes.LORA_STUDY``), on ``backbone``
    or, by default, the cached backbone pretrained (seed 0) without ``dataset``, one per dataset whatever the
    study's seed; refuses data the backbone saw."""
    from . import recipes
    from .models.lora import LoRAClassifier

    if backbone is None:
        backbone = cached_backbone(dataset.name, cache, progress=progress)
    return LoRAClassifier.for_dataset(dataset, backbone, adapter=row["adapter"], bayes=row.get("bayes", "weights"),
                                      prior=row.get("prior", recipes.PRIOR), **row.get("model", {}))
