"""Fitting one SVI guide: what ``inference.fit`` does for a guide, below the dispatcher so that the methods which
start from a MAP fit (ensembles, Laplace, NUTS's initial values) call it without importing the dispatcher.

Here too: ``FitError`` and ``kl_weight``, which the methods share, the option checks every fit runs first, and the
Adam loop over the ELBO with its checkpoints and early stopping.
"""
import functools
import itertools
import re
import time

import pyro
import torch
from pyro import poutine
from tqdm.auto import tqdm

from core.checks import check_data, check_device
from zoo.options import FIT_OPTIONS
from core.tensors import minibatches, model_device, model_dtype, unpack
from core.training import adam_cosine
from .elbo import NonFiniteError, elbo_terms, first_nonfinite_site
from .guides import GUIDES
from .metrics import nll
from .persist import Checkpoint
from .posterior import Posterior
from .sites import is_latent


class FitError(ValueError):
    """fit() was given an invalid option or data."""


def kl_weight(step, kl_anneal):
    """The KL's (for ``map``: the prior's) weight at 0-based ``step``, ramped linearly to 1 over ``kl_anneal`` steps."""
    return min(1.0, (step + 1) / kl_anneal) if kl_anneal else 1.0


def fit_svi(model, data, guide="map", steps=1000, lr=1e-2, batch_size=None, num_particles=1, kl_anneal=0,
            temperature=1.0, clip_norm=None, seed=0, device=None, progress=True, guide_options=None, checkpoint=None,
            checkpoint_every=100, validation=None, check_every=100, patience=3, stop_at=None, **unknown):
    """``inference.fit`` for an SVI guide (a name in ``GUIDES``, or a Pyro guide callable): the same options, checks
    and result; an option beyond these is a one-line FitError, after the data is checked, as ``fit`` refuses it."""
    options = dict(steps=steps, lr=lr, batch_size=batch_size, num_particles=num_particles, kl_anneal=kl_anneal,
                   temperature=temperature, clip_norm=clip_norm, checkpoint_every=checkpoint_every,
                   progress=progress, check_every=check_every, patience=patience, stop_at=stop_at)
    check_options(seed=seed, **options)
    check_svi(guide, checkpoint=checkpoint, early_stopping=validation is not None, **options)
    return fit_svi_checked(model, data, guide, seed=seed, device=device, guide_options=guide_options,
                           checkpoint=checkpoint, validation=validation, **options, **unknown)


def fit_svi_checked(model, data, guide, steps, lr, batch_size, num_particles, kl_anneal, temperature, clip_norm,
                    seed, device, progress, guide_options, checkpoint, checkpoint_every, validation, check_every,
                    patience, stop_at, **unknown):
    """``fit_svi`` after its option checks: for ``inference.fit``, whose ``check_fit`` ran the same checks."""
    x, y, mask = prepared(model, data, device, seed)
    if unknown:
        raise FitError(f"unknown option(s) for guide '{guide}': {', '.join(unknown)}")
    name, guide = build_guide(guide, model, x, y, mask, guide_options or {})
    if checkpoint is not None:
        checkpoint = Checkpoint(checkpoint, checkpoint_every, fit_fingerprint(
            model, x, y, guide=name, guide_options=dict(guide_options or {}), steps=steps, lr=lr,
            batch_size=batch_size, num_particles=num_particles, kl_anneal=kl_anneal, temperature=temperature,
            clip_norm=clip_norm, seed=seed))
    posterior = functools.partial(svi_posterior, model, name, guide, x, mask, stop_at is not None, {
        "steps": steps, "temperature": temperature, "num_particles": num_particles,
        "guide_options": dict(guide_options or {}), "seed": seed})
    monitor = None if validation is None else validation_monitor(model, validation, lambda: posterior([], 0.0), seed,
                                                                 check_every, patience)
    try:
        losses, seconds, record = svi(model, guide, x, y, mask, steps, lr, batch_size, num_particles, kl_anneal,
                                      temperature, clip_norm, seed, progress, name, checkpoint, monitor, stop_at)
    except NonFiniteError as e:
        e.posterior = posterior(e.losses, e.seconds)  # the last good state, to inspect or save
        raise
    return posterior(losses, seconds, record)


def prepared(model, data, device, seed):
    """Every fit's start: the model moved to ``device``, ``data`` checked as tensors on its device, Pyro seeded."""
    if device is not None:
        model.to(check_device(device, FitError))
    x, y, mask = checked_data(model, data, "fit data")
    pyro.set_rng_seed(seed)
    return x, y, mask


def fit_fingerprint(model, x, y, **settings):
    """What a checkpoint must match to be resumed by a fit: its settings, the model's config and the data's sums."""
    return {**settings, "model": model.config() if hasattr(model, "config") else type(model).__name__,
            "data": [x.shape[0], float(x.double().sum()), float(y.double().sum())]}


def checked_data(model, data, source):
    """``data`` as tensors on the model's device and dtype, checked against its classes, vocabulary and input shape."""
    x, y, mask = unpack(data, model_device(model), model_dtype(model), source=source)
    cfg = getattr(getattr(model, "net", None), "cfg", None)
    check_data(x, y, mask, num_classes=getattr(cfg, "num_classes", None), vocab_size=getattr(cfg, "vocab_size", None),
               source=source)
    if hasattr(getattr(model, "net", None), "check_input"):
        model.net.check_input(x)  # here, not inside a Pyro trace, which would append its shape table
    return x, y, mask


def svi_posterior(model, name, guide, x, mask, stopping, settings, losses, seconds, record=None):
    """The Posterior of an SVI fit: its guide, and the fit's settings, losses and time in ``info`` (the step it
    stopped at, with ``stop_at`` or early stopping; the validation record, with early stopping)."""
    extra = {"stopped_at": len(losses)} if stopping or record else {}
    return Posterior(model, name, guide=guide, point=(name == "map"),
                     info={"losses": losses, **settings, "fit_seconds": seconds, **extra,
                           **({"validation": record} if record else {})},
                     x_proto=x[:2], mask_proto=None if mask is None else mask[:2])


def validation_monitor(model, validation, posterior_now, seed, check_every, patience):
    """Early stopping's monitor: the predictive NLL on ``validation`` of ``posterior_now()``, every ``check_every``
    steps."""
    if getattr(getattr(getattr(model, "net", None), "cfg", None), "num_classes", None) is None:
        raise FitError("early stopping (validation) scores a classifier's predictive NLL; this model is not a "
                       "classifier")
    xv, yv, mv = checked_data(model, validation, "validation data")
    return Monitor(lambda: validation_nll(posterior_now(), xv, yv, mv, seed), check_every, patience)


VALIDATION_DRAWS = 10  # posterior draws per validation check of early stopping


def validation_nll(posterior, x, y, mask, seed):
    """The predictive NLL of the fit as it stands, on a forked RNG so that the fit's own draws do not change."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(seed)
        return nll(posterior.predict(x, VALIDATION_DRAWS, mask), y)


class Monitor:
    """Early stopping's bookkeeping: the validation NLL every ``every`` steps, the best step and state."""

    def __init__(self, score, every, patience):
        self.score, self.every, self.patience = score, every, patience
        self.steps, self.nll, self.best, self.state = [], [], None, None

    def due(self, step, steps):
        return step % self.every == 0 or step == steps

    def check(self, step, params):
        """Score the fit after ``step`` steps; True when it should stop (``patience`` checks without a new best)."""
        value = self.score()
        self.steps.append(step)
        self.nll.append(value)
        if self.best is None or value < self.nll[self.best]:
            self.best = len(self.nll) - 1
            self.state = {n: p.detach().clone() for n, p in params.items()}
        return len(self.nll) - 1 - self.best >= self.patience

    def restore(self, params):
        """Put the best state back; the record for ``info["validation"]``."""
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.state[n])
        return {"steps": self.steps, "nll": self.nll, "best_step": self.steps[self.best],
                "best_nll": self.nll[self.best], "every": self.every, "patience": self.patience,
                "draws": VALIDATION_DRAWS}


def check_options(spell=str, **options):
    """Refuse option values that would fail obscurely (or silently) later, naming the option: each against its
    declaration in ``zoo.options.FIT_OPTIONS``, the table ``bzoo fit``'s flags are built from, and the rules between
    them (``stop_at`` at most ``steps``)."""
    FIT_OPTIONS.check(options, FitError, spell)


def check_svi(guide, spell=str, checkpoint=None, early_stopping=False, **options):
    """The rules of an SVI fit (``spell`` names the options): checkpoints for a guide named in ``GUIDES`` only, and
    not with early stopping; one particle for ``map``."""
    if checkpoint is not None and not (isinstance(guide, str) and guide in GUIDES):
        raise FitError(f"checkpoints (checkpoint, --checkpoint-every) are for the SVI guides ({', '.join(GUIDES)}), "
                       f"not for '{guide}'")
    if early_stopping and checkpoint is not None:
        raise FitError(f"early stopping ({spell('validation')}) and checkpoints cannot be combined: a resumed fit "
                       f"would not know its best state")
    if guide == "map" and options.get("num_particles", 1) != 1:
        raise FitError(f"{spell('num_particles')}={options['num_particles']!r} has no effect with guide 'map' "
                       f"(a point estimate draws the same value for every particle)")


def build_guide(guide, model, x, y, mask, options):
    if callable(guide) and not isinstance(guide, str):
        guide(x[:2], None, None if mask is None else mask[:2])  # let lazily built guides create parameters
        return getattr(guide, "name", type(guide).__name__), guide
    if guide not in GUIDES:
        raise FitError(f"unknown guide '{guide}'; valid: {', '.join(GUIDES)}")
    proto = (x[:2], y[:2], None if mask is None else mask[:2])
    try:
        built = GUIDES[guide](model, *proto, **options).to(x.device)
    except (TypeError, ValueError) as e:  # a guide refusing its options, or Pyro's own check (rank=0)
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        raise FitError(f"guide '{guide}' has no option '{unknown.group(1)}'" if unknown
                       else f"guide '{guide}': {str(e).splitlines()[0]}") from None
    if guide != "map" and getattr(built, "local", None) is None and not latent_sites(built, *proto):
        bayes = getattr(model, "bayes", None)
        raise FitError(f"guide '{guide}' has nothing to fit: the model has no latent sites"
                       + (f" (bayes={bayes!r})" if bayes is not None else "")
                       + "; use guide='map' to train the network, or choose where uncertainty lives "
                         "(bayes='weights', 'last-layer', 'attention', ...)")
    return guide, built


def latent_sites(guide, x, y, mask):
    """Names of the latent sites ``guide`` draws on a prototype batch."""
    with torch.no_grad(), poutine.block(hide_types=["param"]):
        trace = poutine.trace(guide).get_trace(x, None, mask)
    return [n for n, site in trace.nodes.items() if is_latent(site)]


def diagnose(model, guide, x, y, mask, n, num_particles):
    """Re-run a failed step without distribution validation to name the first non-finite site."""
    with pyro.validation_enabled(False), torch.no_grad():
        return first_nonfinite_site(elbo_terms(model, guide, x, y, mask, n, num_particles=num_particles))


def step_terms(model, guide, batch, n, num_particles, step, stop):
    """The ELBO's terms on one minibatch; a distribution refusing non-finite parameters, or a pass finding its own
    numbers unusable (a kernel matrix's Cholesky), becomes ``stop(message)`` naming the step and the site."""
    try:
        return elbo_terms(model, guide, *batch, n, num_particles=num_particles)
    except ValueError as e:
        if "invalid values" not in str(e):
            raise
        raise stop(f"a distribution got non-finite parameters at step {step}; first non-finite site: "
                   f"'{diagnose(model, guide, *batch, n, num_particles)}'; parameters are kept from "
                   f"before step {step}") from None
    except FloatingPointError as e:
        raise stop(f"{e} at step {step}; parameters are kept from before step {step}") from None


def nonfinite_gradient(params):
    """The name of the first parameter whose gradient is not finite, or None (one norm over all of them first)."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads or [torch.zeros(())]]))
    if torch.isfinite(norm):
        return None
    return next(k for k, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all())


def svi(model, guide, x, y, mask, steps, lr, batch_size, num_particles, kl_anneal, temperature, clip_norm,
        seed, progress, name, checkpoint=None, monitor=None, stop_at=None):
    """Minimize the negative ELBO with Adam; stops with the step and site if anything turns non-finite.

    With a ``Checkpoint`` it starts from the saved state, if any, and saves as it goes; with a
    ``Monitor`` it stops early and ends in the best state. Returns (losses, seconds, validation record).
    """
    params = {n: p for n, p in [*model.named_parameters(), *(("guide." + k, v) for k, v in guide.named_parameters())]
              if p.requires_grad}
    if not params:
        return [], 0.0, None
    optim, schedule = adam_cosine(params.values(), lr, steps)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed)
    start, losses, before = checkpoint.resume(model, guide, optim, schedule) if checkpoint else (0, [], 0.0)
    started = time.perf_counter()

    def seconds():  # fit time, counting every earlier part of a resumed fit
        return before + time.perf_counter() - started
    batches = itertools.islice(minibatches(n, batch_size, steps, generator), start, stop_at)  # replays the draws
    bar = tqdm(batches, initial=start, total=stop_at or steps, desc=f"fit {name}", disable=not progress, leave=False)

    def stop(message):
        error = NonFiniteError(message)
        error.losses, error.seconds = list(losses), seconds()
        return error

    model.train()
    for step, idx in enumerate(bar, start):
        xb, yb, mb = (x, y, mask) if idx is None else (x[idx], y[idx], None if mask is None else mask[idx])
        terms = step_terms(model, guide, (xb, yb, mb), n, num_particles, step, stop)
        loss = terms.loss(temperature, kl_weight(step, kl_anneal))
        if not torch.isfinite(loss):
            raise stop(f"loss is {loss.item()} at step {step}; first non-finite site: "
                       f"'{first_nonfinite_site(terms)}'; parameters are kept from before step {step}")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        bad = nonfinite_gradient(params)  # checked before clipping, which would spread a NaN to every gradient
        if bad is not None:
            raise stop(f"gradient of '{bad.replace('__', '.')}' is not finite at step {step}; "
                       f"parameters are kept from before step {step} (try clip_norm or a lower lr)")
        if clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params.values(), clip_norm)
        optim.step()
        schedule.step()
        losses.append(loss.item() / n)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if checkpoint and checkpoint.due(step + 1, steps):
            checkpoint.save(step + 1, model, guide, optim, schedule, losses, seconds())
        if monitor and monitor.due(step + 1, steps) and monitor.check(step + 1, params):
            break
    model.eval()
    return losses, seconds(), monitor.restore(params) if monitor else None
