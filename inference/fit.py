"""``inference.fit``: one entry point for every method, returning a Posterior.

It dispatches on the name: an SVI guide of ``inference.guides.GUIDES`` is fitted by
``inference.svi.fit_svi_checked`` (its checks run once, in ``check_fit``), any other method is looked up in the
table ``inference.methods.METHODS``.
"""
import difflib
import inspect
import os
import time

from .guides import GUIDES
from .methods import METHODS
from .svi import FitError, check_options, check_svi, fit_svi_checked, prepared


def register_method(name):
    """Add a method of your own to the table under ``inference.fit(..., guide=name)``, at run time, as a decorator.

    The library's own methods are lines of ``inference.methods.METHODS``; this is for one defined outside it."""
    def wrap(fn):
        METHODS[name] = fn
        return fn
    return wrap


def method_names():
    """Every name ``fit`` takes, once (blob and ivon are both a guide, to load their posteriors, and a method)."""
    return sorted({*GUIDES, *METHODS})


def canonical(guide):
    """A guide or method name as registered: ``laplace-lora``, ``laplace_lora`` and ``Laplace-LoRA`` (or ``kep_svgp``)
    are one name, so any spelling of a name works; anything else is returned unchanged."""
    if not isinstance(guide, str) or guide in GUIDES or guide in METHODS:
        return guide
    spelled = {name.replace("-", "_"): name for name in method_names()}
    return spelled.get(guide.replace("-", "_").lower(), guide)


def near(guide):
    """'; did you mean X?' for the closest registered name, or ''."""
    match = difflib.get_close_matches(str(guide), method_names(), n=1)
    return f"; did you mean '{match[0]}'?" if match else ""


def fit(model, data, guide="mean_field", steps=1000, lr=1e-2, batch_size=None, num_particles=1,
        kl_anneal=0, temperature=1.0, clip_norm=None, seed=0, device=None, progress=True,
        guide_options=None, checkpoint=None, checkpoint_every=100, validation=None, check_every=100, patience=3,
        stop_at=None, **method_options):
    """Fit ``model`` to ``data`` with a guide or method chosen by name, and return a Posterior.

    SVI options: ``steps`` of Adam at ``lr`` (cosine-decayed to lr/10), minibatches of ``batch_size`` (the
    likelihood is scaled to the full data), ``num_particles`` vectorized ELBO particles, ``kl_anneal`` steps of
    linear KL warm-up, ``temperature`` T on the likelihood (T < 1 is a cold posterior), ``clip_norm`` for gradient
    clipping. ``guide`` may also be a Pyro guide callable, or a method of ``inference.methods.METHODS`` (for
    example ``nuts``), which receives the remaining options.

    ``checkpoint=PATH`` saves the SVI state every ``checkpoint_every`` steps and, if
    PATH already holds a checkpoint of this same fit, resumes from it: the resumed
    fit ends bit-identical to an uninterrupted one (same machine). A NonFiniteError
    carries ``.posterior``, the fit as it stood after the last good step.

    Early stopping (SVI guides): with ``validation`` data, the posterior predictive's NLL on
    it is measured every ``check_every`` steps (``VALIDATION_DRAWS`` draws, on a forked RNG,
    so the training draws are those of the same fit without it); the fit stops after
    ``patience`` checks without a new best and returns the best state, its step in
    ``info["validation"]["best_step"]``. ``stop_at`` ends a fit after that many steps of its
    ``steps``-long schedule: a refit on more data to the step validation chose. Names take either spelling,
    ``laplace-lora`` or ``laplace_lora``, in any case.
    """
    guide = canonical(guide)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise FitError(f"checkpoint must be a path (str or pathlib.Path), got {checkpoint!r}")
    check_fit(guide, seed=seed, checkpoint=checkpoint, steps=steps, lr=lr, batch_size=batch_size,
              num_particles=num_particles, kl_anneal=kl_anneal, temperature=temperature, clip_norm=clip_norm,
              checkpoint_every=checkpoint_every, progress=progress, check_every=check_every, patience=patience,
              stop_at=stop_at, early_stopping=validation is not None)
    seed = int(seed)  # a NumPy integer is a valid seed; Pyro's and torch's seeding take a Python int
    if isinstance(guide, str) and guide in METHODS:
        svi_options = {"num_particles": num_particles, "kl_anneal": kl_anneal, "clip_norm": clip_norm}
        return fit_method(guide, model, prepared(model, data, device, seed),
                          {**(guide_options or {}), **method_options}, svi_options, steps=steps, lr=lr,
                          batch_size=batch_size, temperature=temperature, seed=seed, progress=progress)
    return fit_svi_checked(model, data, guide, steps=steps, lr=lr, batch_size=batch_size,
                           num_particles=num_particles, kl_anneal=kl_anneal, temperature=temperature,
                           clip_norm=clip_norm, seed=seed, device=device, progress=progress,
                           guide_options=guide_options, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
                           validation=validation, check_every=check_every, patience=patience, stop_at=stop_at,
                           **method_options)


def fit_method(guide, model, data, options, svi_options, **common):
    """Run the registered method ``guide`` (not an SVI guide) with its ``options``, the SVI ones it accepts, and
    the ``common`` ones every method takes; an option it has no parameter for is a one-line FitError."""
    fitter = METHODS[guide]
    accepted = inspect.signature(fitter).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = [k for k in options if k not in accepted]
        if unknown:
            valid = [k for k in accepted if k not in ("model", "data")]
            raise FitError(f"method '{guide}' has no option '{unknown[0]}'; valid: {', '.join(valid)}")
    options = {**options, **{k: v for k, v in svi_options.items() if k in accepted}}  # check_fit refused the rest
    started = time.perf_counter()
    posterior = fitter(model, data, **common, **options)
    posterior.info.setdefault("fit_seconds", time.perf_counter() - started)
    return posterior


SVI_ONLY = {"num_particles": 1, "kl_anneal": 0, "clip_norm": None}  # SVI options and their no-op values


def check_fit(guide, spell=str, seed=0, checkpoint=None, early_stopping=False, **options):
    """Every fit option valid, and none that would have no effect with ``guide`` (the reason named).

    ``fit`` calls this first; the command line calls it on its flags (``spell`` names them)
    before it reads data or creates a folder.
    """
    check_options(spell, **options, seed=seed)
    guide = canonical(guide)
    if not callable(guide) and not (isinstance(guide, str) and guide in [*GUIDES, *METHODS]):
        raise FitError(f"unknown guide '{guide}'{near(guide)} (valid: {', '.join(method_names())})")
    check_svi(guide, spell, checkpoint, early_stopping, **options)
    svi_guide = isinstance(guide, str) and guide in GUIDES or callable(guide) and not isinstance(guide, str)
    if (early_stopping or options.get("stop_at") is not None) and not svi_guide:
        raise FitError(f"early stopping ({spell('validation')}, {spell('stop_at')}) is for the SVI guides "
                       f"({', '.join(GUIDES)}), not for '{guide}'")
    if isinstance(guide, str) and guide in METHODS:
        accepted = inspect.signature(METHODS[guide]).parameters
        for name, idle in SVI_ONLY.items():
            if name in options and options[name] != idle and name not in accepted:
                raise FitError(f"{spell(name)}={options[name]!r} has no effect with method '{guide}' "
                               f"(it is an option of the SVI guides: {', '.join(GUIDES)})")
