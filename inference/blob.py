"""BLoB's fit as its paper and reference implementation (Wang-ML-Lab/bayesian-peft) have it: Flipout on the LoRA
``A`` matrices, BLoB's prior N(0, 0.2^2) on them, and optionally the reference's KL re-weighting and its separate
optimizer for the KL (docs/lora.md, "BLoB as its paper has it"). The guide itself is ``inference.guides.lora.BLoB``.
"""
import math
import time
from contextlib import nullcontext

import torch
from torch.distributions import Normal, kl_divergence
from tqdm.auto import tqdm

from core.tensors import minibatches
from core.training import adam_cosine
from zoo.models.lora import flipout as flipout_context

from .elbo import NonFiniteError, elbo_terms
from .svi import FitError
from .guides.lora import BLoB
from .posterior import Posterior

KL_WEIGHTINGS = ("blob", "elbo")


def kl_cycle(num_data, batch_size, gamma=8.0):
    """M, the period of BLoB's KL re-weighting, by the reference's dataset rescaling:
    ``int(100 N^(pi / gamma) / B)`` for N series in minibatches of B (at least 1)."""
    return max(1, int(100 * num_data ** (math.pi / gamma) / batch_size))


def reweighting(step, cycle):
    """The KL's weight at 0-based ``step`` relative to the mean NLL: ``2^i / (2^(M+1) - 1)``, ``i = step mod M + 1``
    (the reference's re-weighting, after Blundell et al. 2015: within each period of M steps it doubles per step)."""
    i = step % cycle + 1
    return 2.0 ** (i - cycle - 1) / (1 - 2.0 ** -(cycle + 1))


def linear_warmup(step, steps, warmup=0.06):
    """The reference's learning-rate factor: linear from 0 over the first 6% of steps, then linear down to 0."""
    rise = max(1, int(steps * warmup))
    return step / rise if step < rise else max(0.0, (steps - step) / max(1, steps - rise))


def blob_kl(guide, terms, prior_scale):
    """The KL of the fit: the ELBO's (every site against the model's prior) when ``prior_scale`` is None, else
    with each A site's part in closed form against ``N(0, prior_scale^2)`` instead."""
    if prior_scale is None:
        return terms.kl
    scales, means = guide.scales(), guide.means()
    kl = sum((v for n, v in terms.kl_sites.items() if n not in scales), 0.0)
    return kl + sum(kl_divergence(Normal(means[n], scales[n]), Normal(0.0, prior_scale)).sum() for n in scales)


def step_with(steps):
    """Each (optimizer, params, loss) steps on the gradient of its own loss, all taken at the same point first."""
    grads = [torch.autograd.grad(loss, list(params.values()), retain_graph=True, allow_unused=True)
             for _, params, loss in steps]
    for (optim, params, _), g in zip(steps, grads):
        for p, grad in zip(params.values(), g):
            p.grad = grad
        optim.step()


def check_options(kl_weighting, kl_lr, prior_scale, gamma):
    """One-line FitErrors for fit_blob's own options, before any work."""
    if kl_weighting not in KL_WEIGHTINGS:
        raise FitError(f"blob: unknown kl_weighting '{kl_weighting}'; valid: {', '.join(KL_WEIGHTINGS)}")
    for name, value in (("kl_lr", kl_lr), ("prior_scale", prior_scale), ("gamma", gamma)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise FitError(f"blob: {name} must be a positive number, got {value!r}")
    if gamma is None:
        raise FitError("blob: gamma must be a positive number, got None")


def fit_blob(model, data, *, steps=2000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
             flipout=True, kl_weighting="elbo", kl_lr=None, gamma=8.0, prior_scale=0.2, init_eps=0.05):
    """Fit ``BLoB`` as the reference implementation does; returns a Posterior holding the guide.

    Each step draws every A once, and with ``flipout`` each example of the minibatch sees that draw's deviation
    from the mean under random signs of its own (``zoo.models.lora.flipout``). The loss is ``mean NLL / T + w KL``:
    ``kl_weighting="blob"`` takes ``w = reweighting(step, kl_cycle(N, B, gamma))``, ``"elbo"`` takes ``w = 1 / N``
    (the negative ELBO per series). ``kl_lr=None`` steps both terms with one Adam (``lr``, cosine-decayed to
    lr / 10, as every SVI guide); a number steps the NLL with that Adam and ``w KL`` with SGD at ``kl_lr`` under
    the reference's linear warm-up and decay. ``prior_scale``: A's prior ``N(0, prior_scale^2)`` (BLoB's 0.2;
    None keeps the model's prior); every other site keeps the model's prior as a penalty.
    """
    check_options(kl_weighting, kl_lr, prior_scale, gamma)
    x, y, mask = data
    n = x.shape[0]
    try:
        guide = BLoB(model, x[:2], y[:2], None if mask is None else mask[:2], init_eps=init_eps).to(x.device)
    except TypeError as e:
        raise FitError(f"guide 'blob': {e}") from None
    params = {k: p for k, p in [*model.named_parameters(), *(("guide." + k, v) for k, v in guide.named_parameters())]
              if p.requires_grad}
    adam, schedule = adam_cosine(params.values(), lr, steps)
    sgd = None
    if kl_lr is not None:
        sgd = torch.optim.SGD(params.values(), lr=kl_lr)
        sgd_schedule = torch.optim.lr_scheduler.LambdaLR(sgd, lambda t: linear_warmup(t, steps))
    cycle = kl_cycle(n, min(batch_size or n, n), gamma)
    generator = torch.Generator().manual_seed(seed)
    losses, started = [], time.perf_counter()
    model.train()
    bar = tqdm(minibatches(n, batch_size, steps, generator), total=steps, desc="fit blob", disable=not progress,
               leave=False)
    for step, idx in enumerate(bar):
        xb, yb, mb = (x, y, mask) if idx is None else (x[idx], y[idx], None if mask is None else mask[idx])
        scale = n * reweighting(step, cycle) if kl_weighting == "blob" else 1.0  # the KL's weight against the sum NLL
        with flipout_context(model.net, guide.means(), xb.shape[0]) if flipout else nullcontext():
            terms = elbo_terms(model, guide, xb, yb, mb, n)
        kl = blob_kl(guide, terms, prior_scale)
        loss = -terms.loglik / temperature + scale * kl  # as the SVI loop's: with weight 1 / N, the same fit
        if not torch.isfinite(loss):
            raise NonFiniteError(f"blob: loss is {loss.item()} at step {step} (try a lower lr or kl_lr)")
        if sgd is None:
            adam.zero_grad(set_to_none=True)
            loss.backward()
            adam.step()
        else:  # both gradients at the same point; the reference takes the KL's after the NLL's step
            step_with([(adam, params, -terms.loglik / (temperature * n)), (sgd, params, scale / n * kl)])
            sgd_schedule.step()
        schedule.step()
        losses.append(loss.item() / n)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    info = {"losses": losses, "steps": steps, "temperature": temperature, "seed": seed,
            "guide_options": {"init_eps": init_eps}, "fit_seconds": time.perf_counter() - started,
            "blob": {"flipout": flipout, "kl_weighting": kl_weighting, "kl_cycle": cycle, "kl_lr": kl_lr,
                     "gamma": gamma, "prior_scale": prior_scale}}
    return Posterior(model, "blob", guide=guide, info=info, x_proto=x[:2],
                     mask_proto=None if mask is None else mask[:2])
