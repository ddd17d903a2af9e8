"""A pretrained backbone folder: weights, config and the data it saw, written once and only ever read.

``bzoo pretrain`` writes the folder (``zoo.pretrain``); adapters read it
(``zoo.models.lora``). It holds

- ``backbone.pt``: the transformer's config and weights, loadable with
  ``torch.load(weights_only=True)``, with the sha256 of the weights;
- ``config.json``: the same config and the pretraining options, timings and losses, readable;
- ``data.json``: the excluded datasets, every source seen (files, series, steps and
  the sha256 of its arrays) and a shape fingerprint per series seen
  (``zoo.data.corpus.fingerprint``), so that fine-tuning on data the backbone saw
  is refused by name and by content.

Loading checks each file and refuses, in one line naming the file, a folder that
is missing, incomplete, unreadable, of another architecture, or whose files
disagree. Nothing here writes into an existing folder.
"""
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.schema import Fields
from core.signed import FORMAT, FORMAT_VERSION, PosteriorFileError, read
from core.signed import write as write_signed  # this module's own `write` saves a backbone folder

from .transformer import Transformer, TransformerConfig

WEIGHTS, CONFIG, DATA = "backbone.pt", "config.json", "data.json"
FILES = (WEIGHTS, CONFIG, DATA)


STRUCTURE = Fields("backbone", {"config": dict, "state": dict, "sha256": str}, entries={"state": torch.Tensor})
DATA_STRUCTURE = Fields("backbone data", {"excluded": list, "sources": list, "fingerprints": list})


class BackboneError(ValueError):
    """A backbone folder cannot be used (missing, corrupt, another architecture, or it saw the data)."""


def weights_sha256(state):
    """sha256 over the sorted names, shapes and float32 bytes of a state dict."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


@dataclass
class Backbone:
    """A pretrained univariate patch transformer: its config, weights and the data it saw.

    ``state`` is None for a backbone rebuilt from a description (``describe()``), whose
    weights come from a saved model's state dict instead (``Posterior.load``).
    """
    config: dict
    state: dict | None = None
    sha256: str | None = None
    path: str | None = None
    excluded: list = field(default_factory=list)
    sources: list = field(default_factory=list)
    fingerprints: frozenset = frozenset()

    @property
    def cfg(self):
        return TransformerConfig(**self.config)

    def describe(self):
        """What a model built on this backbone records in its config: the architecture and where it came from."""
        return {"config": dict(self.config), "sha256": self.sha256, "path": self.path, "excluded": list(self.excluded)}

    @classmethod
    def from_description(cls, description):
        if isinstance(description, cls):
            return description
        if not isinstance(description, dict) or not isinstance(description.get("config"), dict):
            raise BackboneError(f"backbone must be a folder, a Backbone or the dict a model's config() records; "
                                f"got {type(description).__name__}")
        check_architecture(description["config"], "the backbone description")
        return cls(description["config"], None, description.get("sha256"), description.get("path"),
                   list(description.get("excluded") or []))

    @classmethod
    def random(cls, seed=0, d_model=64, depth=4, heads=4, mlp_ratio=4, patch=4, length=64):
        """An untrained backbone of the pretraining architecture (benchmarks time steps; they need no weights)."""
        config = TransformerConfig(num_classes=patch, input_dim=1, d_model=d_model, depth=depth, heads=heads,
                                   mlp_ratio=mlp_ratio, max_len=length, patch=patch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            state = {k: v.detach() for k, v in Transformer(config).state_dict().items()}
        return cls(config.to_dict(), state, weights_sha256(state))

    @classmethod
    def load(cls, path):
        """The backbone in folder ``path``, every file checked; raises BackboneError naming the culprit."""
        root = Path(path)
        if not root.exists():
            raise BackboneError(f"backbone folder '{root}' does not exist (make one with `bzoo pretrain`)")
        if not root.is_dir():
            raise BackboneError(f"backbone '{root}' is not a folder")
        for name in FILES:
            if not (root / name).is_file():
                raise BackboneError(f"backbone folder '{root}' lacks {name}: not a complete `bzoo pretrain` folder")
        try:
            obj = read(root / WEIGHTS, "backbone")
        except PosteriorFileError as e:
            raise BackboneError(str(e)) from None
        STRUCTURE.check(obj, root / WEIGHTS, BackboneError)
        config, state = obj["config"], obj["state"]
        check_architecture(config, f"'{root / WEIGHTS}'")
        check_weights(config, state, root / WEIGHTS)
        sha = weights_sha256(state)
        if sha != obj.get("sha256"):
            raise BackboneError(f"'{root / WEIGHTS}': the weights do not match their recorded sha256 (corrupt file)")
        readable, data = _json(root / CONFIG), _json(root / DATA)
        if readable.get("backbone") != config or readable.get("sha256") != sha:
            raise BackboneError(f"'{root / CONFIG}' does not describe the weights in '{root / WEIGHTS}' "
                                f"(config or sha256 differ): the folder's files disagree")
        DATA_STRUCTURE.check(data, root / DATA, BackboneError)
        return cls(config, state, sha, str(root), list(data["excluded"]), list(data["sources"]),
                   frozenset(data["fingerprints"]))

    def build(self):
        """A Transformer with these weights (random ones for a backbone rebuilt from a description)."""
        net = Transformer(self.cfg)
        if self.state is not None:
            net.load_state_dict(self.state)
        return net

    def check_unseen(self, dataset):
        """Refuse ``dataset`` (a zoo Dataset) if the backbone saw it, by name or by the content of any series."""
        from ..data.corpus import _key, fingerprint

        where = f"backbone '{self.path}'" if self.path else "the backbone"
        names = {_key(s["name"].split("/")[-1]) for s in self.sources} | {_key(s["name"]) for s in self.sources}
        if _key(dataset.name) in names:
            raise BackboneError(f"{where} was pretrained on {dataset.name} (see its data.json): fine-tuning on data "
                                f"it saw leaks; pretrain one with --exclude {dataset.name}")
        if not self.fingerprints:
            return
        seen = total = 0
        for split in (dataset.train, dataset.test):
            x = split.x.detach().cpu().double().numpy()
            mask = None if split.mask is None else split.mask.cpu().numpy()
            for i in range(x.shape[0]):
                rows = x[i] if mask is None else x[i][mask[i]]
                for c in range(rows.shape[-1] if rows.ndim == 2 else 1):
                    f = fingerprint(rows[:, c] if rows.ndim == 2 else rows)
                    total += f is not None
                    seen += f in self.fingerprints
        if seen:
            raise BackboneError(f"{seen} of {total} series of {dataset.name} occur in the data {where} was pretrained "
                                f"on (see its data.json): fine-tuning on data it saw leaks")


def check_architecture(config, where):
    """A backbone is a real-valued, univariate patch transformer whose head reconstructs a patch."""
    try:
        cfg = TransformerConfig(**config)
    except (TypeError, ValueError) as e:
        raise BackboneError(f"{where} does not describe a zoo transformer: {str(e).splitlines()[0]}") from None
    if cfg.vocab_size is not None or cfg.input_dim != 1 or cfg.num_classes != cfg.patch:
        raise BackboneError(f"{where} describes another architecture (input_dim={cfg.input_dim}, vocab_size="
                            f"{cfg.vocab_size}, head of {cfg.num_classes} outputs, patch={cfg.patch}); a backbone is a "
                            f"univariate patch transformer from `bzoo pretrain` whose head reconstructs a patch")
    return cfg


def check_weights(config, state, where):
    """The weights have exactly the names and shapes the config's transformer has."""
    want = {n: tuple(t.shape) for n, t in Transformer(TransformerConfig(**config)).state_dict().items()}
    got = {n: tuple(t.shape) for n, t in state.items() if torch.is_tensor(t)}
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            raise BackboneError(f"'{where}': weight '{name}' has shape {got.get(name)} but the config's architecture "
                                f"needs {want.get(name)}: the weights belong to another architecture")


def _json(path):
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackboneError(f"'{path}' is not readable JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(obj, dict):
        raise BackboneError(f"'{path}' does not hold a JSON object")
    return obj


def write(root, net, config_extra, data):
    """Write a new backbone folder (refused if any of its files exists): weights, config.json, data.json."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise BackboneError(f"output '{root}' exists and is not a folder")
    found = [n for n in FILES if (root / n).exists()]
    if found:
        raise BackboneError(f"output folder '{root}' already holds a backbone ({found[0]}); choose another folder "
                            f"(a backbone folder is never overwritten)")
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    config = net.cfg.to_dict()
    sha = weights_sha256(state)
    from .. import __version__
    write_signed({"format": FORMAT, "kind": "backbone", "format_version": FORMAT_VERSION, "zoo_version": __version__,
                  "config": config, "state": state, "sha256": sha}, root / WEIGHTS)
    _write_json(root / CONFIG, {"backbone": config, "sha256": sha, **config_extra})
    _write_json(root / DATA, data)
    return root


def _write_json(path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    tmp.replace(path)
