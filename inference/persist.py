"""Save and load fitted Posteriors, and checkpoint SVI fits so that a killed fit resumes exactly.

A posterior file is one ``torch.save`` of plain types and tensors: format and
library versions, the model's class and ``config()``, the method name and guide
options, the model's state dict, and either the guide's state dict (SVI guides,
rebuilt by name from ``inference.guides.GUIDES``) or the draws (MCMC, ensembles
and other draws-based methods). Loading uses ``torch.load(weights_only=True)``, so
a file can never run code; the model class is looked up only inside the ``zoo``
package.

A checkpoint holds what an SVI loop needs to carry on bit-identically: model,
guide, optimizer and schedule states, every random number generator, the step
and the losses so far, plus a fingerprint of the fit's options so that a
checkpoint is never resumed by a different fit.

Every file ends with a SHA-256 of its bytes (``torch.load`` ignores the trailer), checked
before anything is unpickled: a file with a flipped, lost or added byte is refused with
one line instead of loading wrong numbers.
"""
import importlib
import random
import warnings
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine

import priors
from core import __version__
from core.checks import check_device
from core.schema import Fields
from core.signed import FORMAT, FORMAT_VERSION, PosteriorFileError, read, write
from zoo.options import LOAD

from .guides import GUIDES
from .sites import in_data_plate

NONE, TENSOR = type(None), torch.Tensor
POSTERIOR = Fields("posterior", {  # what read_posterior relies on, beyond the format and version core.signed checks
    "model_class": str, "config": dict, "method": str, "point": bool, "guide_options": dict, "model_state": dict,
    "guide_state": (dict, NONE), "draws": (dict, NONE), "info": dict, "x_proto": (TENSOR, NONE),
    "mask_proto": (TENSOR, NONE), "preprocessing": (dict, NONE), "extra": object},
    entries={"model_state": TENSOR, "guide_state": TENSOR, "draws": TENSOR})
CHECKPOINT = Fields("checkpoint", {
    "fingerprint": dict, "step": int, "model": dict, "guide": dict, "optim": dict, "schedule": dict, "rng": dict,
    "losses": TENSOR}, entries={"model": TENSOR, "guide": TENSOR})


def plain(obj, key="info"):
    """A copy made of tensors and plain types only (what weights_only loading accepts), or None."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, np.ndarray):
        return torch.as_tensor(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        items = [plain(v, key) for v in obj]
        return None if any(v is None and o is not None for v, o in zip(items, obj)) else type(obj)(items)
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        items = {k: plain(v, f"{key}.{k}") for k, v in obj.items()}
        return None if any(items[k] is None and obj[k] is not None for k in obj) else items
    return None


def _plain_info(info):
    kept, dropped = {}, []
    for k, v in info.items():
        p = plain(v)
        if p is None and v is not None:
            dropped.append(k)
        else:
            kept[k] = p
    if dropped:
        warnings.warn(f"Posterior.info entries {dropped} are not tensors or plain types and are not saved")
    return kept


def _model_class(name, path):
    """The model class named in a file, looked up only inside the ``zoo`` package."""
    module, _, qualname = name.rpartition(".")
    if not (module == "zoo" or module.startswith("zoo.")):
        raise PosteriorFileError(f"'{path}' names model class '{name}', which is not a zoo model")
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        raise PosteriorFileError(f"'{path}' names model class '{name}', which this zoo version lacks") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise PosteriorFileError(f"'{path}' names '{name}', which is not a model class")
    return cls


def save(posterior, path, preprocessing=None, extra=None, num_samples=200):
    """Write ``posterior`` to ``path`` as one file; returns the path.

    ``preprocessing`` records the data standardization (``Dataset.preprocessing``)
    so inputs can be prepared the same way later; ``extra`` is any further plain
    metadata. A guide that cannot be rebuilt by name (Laplace, a user's callable)
    is stored as ``num_samples`` draws of its global sites, which is exact for what
    it predicts up to Monte Carlo error; one with local sites (attention rows)
    cannot be, and is refused.
    """
    model = posterior.model
    if not hasattr(model, "config"):
        raise PosteriorFileError(f"cannot save: model {type(model).__name__} has no config() to rebuild it from")
    guide_based = posterior.guide is not None and posterior.method in GUIDES
    draws = posterior.draws
    if posterior.guide is not None and not guide_based:
        draws = _as_draws(posterior, num_samples)
    config = dict(model.config())
    for name, value in (("config", config), ("preprocessing", preprocessing), ("extra", extra)):
        if value is not None and plain(value) is None:
            raise PosteriorFileError(f"cannot save: {name} must hold only tensors and plain types")
    cls = type(model)
    obj = {
        "format": FORMAT, "kind": "posterior", "format_version": FORMAT_VERSION,
        "zoo_version": __version__,
        "torch_version": str(torch.__version__), "pyro_version": str(pyro.__version__),
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "config": plain(config),
        "prior": plain(config.get("prior")),
        "method": posterior.method,
        "point": bool(posterior.point),
        "guide_options": plain(dict(posterior.info.get("guide_options") or {})),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "guide_state": ({k: v.detach().cpu() for k, v in posterior.guide.state_dict().items()}
                        if guide_based else None),
        "draws": None if guide_based else {k: v.detach().cpu() for k, v in draws.items()},
        "info": {**_plain_info(posterior.info),
                 **({"stored_as_draws": True} if posterior.guide is not None and not guide_based else {})},
        "x_proto": plain(posterior.x_proto),
        "mask_proto": plain(posterior.mask_proto),
        "preprocessing": plain(preprocessing),
        "extra": plain(extra),
    }
    write(obj, path)
    return Path(path)


def _as_draws(posterior, num_samples):
    """Draws standing in for a guide that cannot be rebuilt; refused if the guide has local (per-input) sites."""
    with torch.no_grad():
        trace = poutine.trace(posterior.guide).get_trace(posterior.x_proto, None, posterior.mask_proto)
    local = [n for n, site in trace.iter_stochastic_nodes()
             if in_data_plate(site) and not site["infer"].get("is_auxiliary")]
    if local:
        raise PosteriorFileError(f"cannot save: guide '{posterior.method}' is not one of the named guides and has "
                                 f"local sites ({local[0]}), which fixed draws cannot represent")
    return posterior.sample(1 if posterior.point else num_samples)


def read_posterior(path, map_location=None):
    """What ``Posterior(**...)`` takes to rebuild the posterior saved at ``path``, on ``map_location`` (default:
    CPU): model, method, guide or draws, point, info and prototypes. Never runs code from the file."""
    if isinstance(map_location, torch.device):  # what torch.load takes, so taken here too
        map_location = str(map_location)
    LOAD.check({"path": path, "map_location": map_location}, PosteriorFileError)
    device = check_device(map_location if map_location is not None else "cpu", PosteriorFileError, "map_location")
    obj = POSTERIOR.check(read(path, "posterior", map_location="cpu"), path, PosteriorFileError)
    if (obj["guide_state"] is None) == (obj["draws"] is None):
        raise PosteriorFileError(f"posterior file '{path}' must hold either a guide's state or draws, not "
                                 f"{'both' if obj['draws'] is not None else 'neither'}")
    cls = _model_class(obj["model_class"], path)
    config = dict(obj["config"])
    try:  # files a prior reads (an empirical prior's weights) are found beside the posterior file
        for key in ("prior", "attention_prior"):
            if key in config and isinstance(config[key], (str, dict)):
                config[key] = priors.parse(config[key], base=Path(path).parent)
        model = cls(**config)
    except (TypeError, ValueError) as e:
        raise PosteriorFileError(f"'{path}': cannot rebuild the {cls.__name__} it describes: "
                                 f"{str(e).splitlines()[0]}") from None
    model.to(device)
    x_proto, mask_proto = obj["x_proto"], obj["mask_proto"]
    x_proto = None if x_proto is None else x_proto.to(device)
    mask_proto = None if mask_proto is None else mask_proto.to(device)
    info = {**obj["info"], "preprocessing": obj["preprocessing"], "extra": obj["extra"],
            "zoo_version": obj["zoo_version"]}
    guide = None
    if obj["guide_state"] is not None:
        if obj["method"] not in GUIDES:
            raise PosteriorFileError(f"'{path}' was fitted with guide '{obj['method']}', which this zoo version "
                                     f"lacks; valid: {', '.join(GUIDES)}")
        y_proto = torch.zeros(x_proto.shape[0], dtype=torch.long, device=device)  # seen as data, not a latent
        guide = GUIDES[obj["method"]](model, x_proto, y_proto, mask_proto, **obj["guide_options"])
    try:  # the model's state after the guide is built, in case building the guide extends the model
        model.load_state_dict(obj["model_state"])
        if guide is not None:
            guide.load_state_dict(obj["guide_state"])
    except RuntimeError as e:
        raise PosteriorFileError(f"'{path}': the saved state does not fit the rebuilt model and guide: "
                                 f"{str(e).splitlines()[0]}") from None
    parts = {"model": model, "method": obj["method"], "point": obj["point"], "info": info, "x_proto": x_proto,
             "mask_proto": mask_proto}
    if guide is None:
        return {**parts, "draws": {k: v.to(device) for k, v in obj["draws"].items()}}
    return {**parts, "guide": guide.to(device)}


def rng_state():
    """Every random number generator a fit draws from, as tensors and plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpoint:
    """Snapshots of an SVI loop every ``every`` steps at ``path``, and resumption from them.

    ``fingerprint`` is a dict of the fit's options (and a data checksum); a
    checkpoint written under a different fingerprint is refused, naming the option
    that differs, so a stale file never silently seeds an unrelated fit.
    """

    def __init__(self, path, every, fingerprint):
        if not (isinstance(every, int) and every >= 1):
            raise PosteriorFileError(f"checkpoint_every must be a positive integer, got {every!r}")
        self.path, self.every, self.fingerprint = Path(path), every, plain(fingerprint)

    def resume(self, model, guide, optim, schedule):
        """Restore the saved state into these objects; returns (steps done, losses, seconds spent so far)."""
        if not self.path.exists():
            return 0, [], 0.0
        obj = CHECKPOINT.check(read(self.path, "checkpoint"), self.path, PosteriorFileError)
        for key, value in self.fingerprint.items():
            if obj["fingerprint"].get(key) != value:
                raise PosteriorFileError(
                    f"checkpoint '{self.path}' was written by a fit with {key}={obj['fingerprint'].get(key)!r}, "
                    f"this fit has {key}={value!r}; use another checkpoint path or the same options")
        model.load_state_dict(obj["model"])
        guide.load_state_dict(obj["guide"])
        optim.load_state_dict(obj["optim"])
        schedule.load_state_dict(obj["schedule"])
        set_rng_state(obj["rng"])
        return obj["step"], obj["losses"].tolist(), float(obj.get("seconds", 0.0))

    def due(self, done, total):
        return done % self.every == 0 or done == total

    def save(self, done, model, guide, optim, schedule, losses, seconds=0.0):
        """Write the state after ``done`` steps and ``seconds`` of fitting (atomically: a kill mid-write keeps
        the previous one)."""
        write({"format": FORMAT, "kind": "checkpoint", "format_version": FORMAT_VERSION,
                "zoo_version": __version__, "fingerprint": self.fingerprint, "step": done,
                "model": model.state_dict(), "guide": guide.state_dict(), "optim": optim.state_dict(),
                "schedule": schedule.state_dict(), "rng": rng_state(),
                "losses": torch.tensor(losses, dtype=torch.float64), "seconds": float(seconds)}, self.path)
