"""Bayesian low-rank adaptation methods by name: ``laplace_lora``, ``swag_lora`` and ``lora_ensemble``.

Each starts from a model whose sample sites include LoRA matrices (a
``zoo.models.lora.LoRAClassifier``) and returns a draws-based Posterior over its sites;
the guide ``blob`` lives with the guides (``inference.guides.lora``).

- ``laplace_lora`` (Yang et al., ICLR 2024): a MAP fit, then laplace-torch's Laplace
  approximation over the sites (``hessian="kron"``: KFAC of the generalized
  Gauss-Newton, as in the paper), with an isotropic prior precision chosen by
  maximizing laplace-torch's marginal likelihood. It predicts as the paper does, with
  the network linearized in the sites around the MAP (laplace-torch's ``glm``
  predictive, sampled); ``predictive="nn"`` runs the network on the drawn sites instead.
- ``swag_lora`` (Onal et al., 2024): a MAP fit, then SGD at a constant learning rate
  from the MAP, collecting the sites every ``collect_every`` steps; SWAG's Gaussian
  (the iterates' mean, half their diagonal variance plus half a rank-``max_rank``
  covariance from the last deviations) is sampled. Trained parameters that are not
  sites (the head, by default a site) take their SWA mean.
- ``lora_ensemble`` (Balabanov & Linander, 2024): a deep ensemble (``ensemble``)
  whose members differ only in their adapters and head, the backbone shared and frozen.
"""
import copy
import warnings

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from .baselines import fit_ensemble
from .elbo import elbo_terms
from core.tensors import minibatches

from .svi import FitError, fit_svi
from .posterior import Posterior
from .site_vectors import flatten, mode, unflatten

HESSIANS = ("kron", "diag", "full")
PREDICTIVES = ("glm", "nn")
PRIOR_STRUCTURES = ("scalar", "layerwise", "diag")


def _check_lora(model, method):
    if not any(n.startswith("lora.") for n in getattr(model, "sites", {})) and method != "lora_ensemble":
        raise FitError(f"'{method}' needs LoRA matrices among the model's sample sites (a LoRAClassifier with bayes "
                       f"'adapters' or 'weights')")
    if method == "lora_ensemble" and not any(n.startswith("lora.") for n, _ in model.net.named_parameters()):
        raise FitError("'lora_ensemble' needs a model with LoRA adapters on a frozen backbone (a LoRAClassifier)")


class _Packed(torch.nn.Module):
    """The network as laplace-torch wants it: ``f(X)`` with the mask packed as a last input channel."""

    def __init__(self, net, has_mask):
        super().__init__()
        self.net, self.has_mask = net, has_mask

    def forward(self, packed):
        if not self.has_mask:
            return self.net(packed)
        return self.net(packed[..., :-1], packed[..., -1] > 0.5)


def pack(x, mask):
    return x if mask is None else torch.cat([x, mask.to(x.dtype)[..., None]], -1)


def laplace_view(model, values):
    """A copy of the network holding ``values`` at the sites, whose only parameters requiring grad are the sites."""
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in values:
                p.copy_(values[name])
            p.requires_grad_(name in values)
    return net


def fit_laplace_lora(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                     hessian="kron", prior_structure="scalar", prior_steps=100, num_samples=200, predictive="glm"):
    """MAP, then laplace-torch's Laplace over the sites with prior precision by marginal likelihood.

    ``predictive="glm"`` (the paper's) predicts with the network linearized in the sites around the MAP (on a
    copy of the model: the caller's model is left as it is); ``"nn"`` runs the network on the drawn sites.
    """
    try:
        from laplace import Laplace
    except ImportError:
        raise FitError("laplace_lora needs laplace-torch: run `make peers` (it installs it beside the CPU "
                       "torch)") from None
    _check_lora(model, "laplace_lora")
    if predictive not in PREDICTIVES:
        raise FitError(f"laplace_lora: unknown predictive '{predictive}'; valid: {', '.join(PREDICTIVES)}")
    if hessian not in HESSIANS:
        raise FitError(f"laplace_lora: unknown hessian '{hessian}'; valid: {', '.join(HESSIANS)}")
    if prior_structure not in PRIOR_STRUCTURES:
        raise FitError(f"laplace_lora: unknown prior_structure '{prior_structure}'; "
                       f"valid: {', '.join(PRIOR_STRUCTURES)}")
    x, y, mask = data
    map_post = fit_svi(model, data, guide="map", steps=steps, lr=lr, batch_size=batch_size,
                       temperature=temperature, seed=seed, progress=progress)
    values = mode(map_post)
    la, names = laplace_torch(model, values, data, hessian, prior_structure, prior_steps, temperature, batch_size,
                              Laplace)
    samples = la.sample(num_samples, generator=torch.Generator(device=x.device).manual_seed(seed))
    draws = unflatten(samples.detach(), names, [values[n].shape for n in names])
    if predictive == "glm":
        model = copy.deepcopy(model)
        model.linearize(values)
    info = {"temperature": temperature, "seed": seed, "hessian": hessian, "prior_structure": prior_structure,
            "prior_precision": la.prior_precision.detach().cpu(), "log_marginal_likelihood":
            la.log_marginal_likelihood().item(), "num_params": int(samples.shape[-1]), "sites": names,
            "map_losses": map_post.info["losses"], "mode": values, "predictive": predictive}
    return Posterior(model, "laplace_lora", draws=draws, info=info, x_proto=x[:2],
                     mask_proto=None if mask is None else mask[:2])


def laplace_torch(model, values, data, hessian, prior_structure, prior_steps, temperature, batch_size, Laplace):
    """laplace-torch's Laplace over the sites at ``values``, fitted and prior-tuned; and the site order it uses."""
    x, y, mask = data
    net = laplace_view(model, values)
    net.eval()
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    wrapped = _Packed(net, mask is not None)
    la = Laplace(wrapped, "classification", subset_of_weights="all", hessian_structure=hessian,
                 temperature=temperature)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(pack(x, mask), y),
                                         batch_size=batch_size or len(y))
    with sdpa_kernel(SDPBackend.MATH), warnings.catch_warnings():  # fused attention has no forward-mode derivative
        warnings.filterwarnings("ignore", message="By default `link_approx`")  # it concerns predictions we do not make
        la.fit(loader)
        la.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=prior_steps, lr=1e-1,
                                    prior_structure=prior_structure)
    return la, names


def fit_swag_lora(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                  swag_steps=300, swag_lr=1e-2, collect_every=10, max_rank=10, scale=0.5, num_samples=200):
    """MAP, then SWAG moments of the sites along constant-rate SGD (momentum 0.9) from the MAP."""
    _check_lora(model, "swag_lora")
    if not (isinstance(collect_every, int) and collect_every >= 1 and swag_steps >= 2 * collect_every):
        raise FitError(f"swag_lora: needs collect_every >= 1 and swag_steps >= 2 * collect_every (two snapshots); "
                       f"got swag_steps={swag_steps}, collect_every={collect_every}")
    if max_rank < 2:
        raise FitError(f"swag_lora: max_rank must be >= 2, got {max_rank}")
    x, y, mask = data
    map_post = fit_svi(model, data, guide="map", steps=steps, lr=lr, batch_size=batch_size,
                       temperature=temperature, seed=seed, progress=progress)
    guide = map_post.guide
    others = {n: p for n, p in model.net.named_parameters() if p.requires_grad}  # trained, not sites
    params = [*guide.parameters(), *others.values()]
    optim = torch.optim.SGD(params, lr=swag_lr, momentum=0.9)
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed + 1)
    snapshots, averages = [], {k: torch.zeros_like(p) for k, p in others.items()}
    model.train()
    batches = minibatches(n, batch_size, swag_steps, generator)
    for step, idx in enumerate(tqdm(batches, total=swag_steps, desc="swag_lora", disable=not progress, leave=False)):
        xb, yb, mb = (x, y, mask) if idx is None else (x[idx], y[idx], None if mask is None else mask[idx])
        loss = elbo_terms(model, guide, xb, yb, mb, n).loss(temperature) / n
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if (step + 1) % collect_every == 0:
            snapshots.append(flatten(mode(map_post)))
            for k, p in others.items():
                averages[k] += p.detach()
    model.eval()
    with torch.no_grad():
        for k, p in others.items():
            p.copy_(averages[k] / len(snapshots))
    like = mode(map_post)
    draws = unflatten(swag_samples(torch.stack(snapshots), max_rank, scale, num_samples, seed).detach(), list(like),
                      [v.shape for v in like.values()])
    info = {"temperature": temperature, "seed": seed, "swag_steps": swag_steps, "swag_lr": swag_lr,
            "collect_every": collect_every, "snapshots": len(snapshots), "max_rank": max_rank, "scale": scale,
            "map_losses": map_post.info["losses"]}
    return Posterior(model, "swag_lora", draws=draws, info=info, x_proto=x[:2],
                     mask_proto=None if mask is None else mask[:2])


def swag_samples(snapshots, max_rank, scale, num_samples, seed):
    """Draws from SWAG's Gaussian given the collected iterates [K, P] (Maddox et al., 2019).

    mean + sqrt(scale) * (sqrt(diag variance) z1 + D^T z2 / sqrt(K - 1)), D the last
    ``max_rank`` deviations from the mean; ``scale = 0.5`` is SWAG's 1/2 on each part.
    """
    mean = snapshots.mean(0)
    var = (snapshots.pow(2).mean(0) - mean.pow(2)).clamp_min(1e-30)
    deviations = (snapshots - mean)[-max_rank:]
    k = deviations.shape[0]
    g = torch.Generator(device=snapshots.device).manual_seed(seed)
    z1 = torch.randn(num_samples, mean.numel(), generator=g, device=snapshots.device, dtype=snapshots.dtype)
    z2 = torch.randn(num_samples, k, generator=g, device=snapshots.device, dtype=snapshots.dtype)
    return mean + scale ** 0.5 * (var.sqrt() * z1 + z2 @ deviations / max(k - 1, 1) ** 0.5)


def fit_lora_ensemble(model, data, *, steps=1000, lr=1e-2, batch_size=None, temperature=1.0, seed=0, progress=True,
                      num_members=5):
    """A deep ensemble of adapters: ``num_members`` MAP fits from fresh adapters and head, one frozen backbone."""
    _check_lora(model, "lora_ensemble")
    posterior = fit_ensemble(model, data, steps=steps, lr=lr, batch_size=batch_size, temperature=temperature,
                             seed=seed, progress=progress, num_members=num_members)
    posterior.method = "lora_ensemble"
    return posterior
