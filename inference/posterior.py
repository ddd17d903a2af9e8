"""The fitted Posterior every method returns: it draws, predicts, converts, saves and loads."""
from contextlib import nullcontext

import pyro
import torch
from pyro import poutine
from torch.nn.attention import SDPBackend, sdpa_kernel

from core.checks import check_draws, check_output, check_prediction
from core.memory import plan
from core.tensors import model_device, model_dtype

from . import persist
from .arviz_io import to_inference_data
from .sites import is_global, is_sampled, with_local_sites

SAMPLES_DIM = -2  # the plate of posterior draws sits left of the data plate


def draws_plate(s):
    return pyro.plate("samples", s, dim=SAMPLES_DIM) if s > 1 else nullcontext()


class Posterior:
    """A fitted posterior over a model's latent sites.

    It holds either a ``guide`` (SVI methods: draws are sampled on demand, local
    sites such as attention rows given the inputs) or fixed ``draws`` (MCMC,
    ensembles: a dict of parameter name -> tensor [S, *shape], run through the
    network directly). ``point=True`` marks a point estimate (MAP): it predicts once.
    """

    def __init__(self, model, method, guide=None, draws=None, point=False, info=None, x_proto=None,
                 mask_proto=None):
        if (guide is None) == (draws is None):
            raise ValueError("a Posterior holds either a guide or draws")
        self.model, self.method, self.guide, self.draws = model, method, guide, draws
        self.point = point
        self.info = dict(info or {})
        self.x_proto, self.mask_proto = x_proto, mask_proto

    @property
    def device(self):
        return model_device(self.model)

    def model_dtype(self):
        return model_dtype(self.model)

    def num_draws(self, num_samples=None):
        """S for a request: 1 for a point estimate; for stored draws (MCMC, ensembles) at most
        the number held, all of them when ``num_samples`` is None."""
        check_draws(num_samples)
        if self.point:
            return 1
        if self.draws is not None:
            held = next(iter(self.draws.values())).shape[0]
            return held if num_samples is None else min(num_samples, held)
        return num_samples or 100

    @torch.no_grad()
    def sample(self, num_samples=None, x=None, mask=None):
        """Draws of the global latent sites as name -> [S, *shape] (S = 1 for a point estimate).

        Of stored draws (MCMC, ensembles), S evenly spaced over all of them, so that fewer draws
        than are held still come from every chain; a guide draws afresh.
        """
        s = self.num_draws(num_samples)
        if self.draws is not None:
            held = next(iter(self.draws.values())).shape[0]
            index = torch.linspace(0, held - 1, s).round().long() if s < held else slice(None)
            return {n: v[index] for n, v in self.draws.items()}
        if x is None:
            x, mask = self.x_proto, self.mask_proto
        with draws_plate(s):
            trace = poutine.trace(self.guide).get_trace(x, None, mask)
        return {n: site["value"].reshape(s, *site["fn"].event_shape)
                for n, site in trace.iter_stochastic_nodes() if is_global(site)}

    @torch.no_grad()
    def predict(self, x, num_samples=None, mask=None, batch_size=None, draws=None):
        """Class probabilities [S, N, K] for S posterior draws (S = 1 for a point estimate).

        Each of the S rows is one function evaluated on every input: global draws are
        taken once per chunk of draws and shared by all inputs. Pass ``draws`` (from
        ``sample``) to evaluate those same functions, e.g. on train and test data.
        Draws and inputs go through in chunks sized by ``core.memory.plan`` so that
        one chunk fits the memory budget, whatever S and N; ``batch_size`` caps the
        inputs per chunk.
        """
        was_training = self.model.training
        self.model.train(self.info.get("dropout_at_test", False))
        try:
            s = next(iter(draws.values())).shape[0] if draws else self.num_draws(num_samples)
            x, mask = check_prediction(x, mask, batch_size, self.model_dtype())
            classes = getattr(getattr(getattr(self.model, "net", None), "cfg", None), "num_classes", None)
            if classes is not None:
                check_output(s, x.shape[0], classes, self.device)
            x = x.to(self.device)
            if hasattr(getattr(self.model, "net", None), "check_input"):
                self.model.net.check_input(x)  # a one-line error before any Pyro trace
            mask = None if mask is None else mask.to(self.device)
            if draws is None and self.draws is not None:
                draws = self.sample(s)  # views of the stored draws, spread over every chain
            per_chunk, inputs = plan(self.model, x, s)
            inputs = min(inputs, batch_size or inputs)
            rows = []
            for start in range(0, s, per_chunk):
                n = min(per_chunk, s - start)
                chunk = ({k: v[start:start + n] for k, v in draws.items()} if draws is not None
                         else self.sample(n, x[:inputs], None if mask is None else mask[:inputs]))
                rows.append(torch.cat([self._probs(x[i:i + inputs], None if mask is None else mask[i:i + inputs],
                                                   chunk, n) for i in range(0, x.shape[0], inputs)], dim=-2))
            return torch.cat(rows)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def point_weights(self):
        """Every network parameter, with a point estimate's site values in place (feeds ``priors.Empirical``)."""
        params = {n: p.detach() for n, p in self.model.net.named_parameters()}
        params.update({n: v[0] for n, v in self.sample(1).items() if n in params})
        return params

    def to_arviz(self, x, y, mask=None, num_samples=None, var_names=None, test=None, ood=None, seed=0):
        """InferenceData of these draws on data (x, y); see ``inference.arviz_io.to_inference_data``."""
        return to_inference_data(self, x, y, mask, num_samples=num_samples, var_names=var_names, test=test,
                                 ood=ood, seed=seed)

    def save(self, path, preprocessing=None, extra=None, num_samples=200):
        """Write this posterior to one file; see ``inference.persist.save``."""
        return persist.save(self, path, preprocessing=preprocessing, extra=extra, num_samples=num_samples)

    @classmethod
    def load(cls, path, map_location=None):
        """A posterior saved with ``save`` (never runs code from the file); see ``inference.persist.read``."""
        return cls(**persist.read_posterior(path, map_location=map_location))

    def _probs(self, x, mask, draws, s):
        if self.guide is None:  # fixed draws of network parameters: run the network on them directly
            names = dict(self.model.net.named_parameters())
            params = {n: v for n, v in draws.items() if n in names}  # hyper-parameter draws are not needed here
            center = self.info.get("linearized_at")
            if center is not None:  # a linearized Laplace posterior predicts with the linearized network
                center = {n: c.to(x.device) for n, c in center.items()}
                return linearized_logits(self.model.net, x, mask, center, params).softmax(-1)
            logits = self.model.net(x, mask, params, samples=s if s > 1 else None)
            return logits.softmax(-1).expand(s, *logits.shape[-2:])
        values = {n: v.reshape(s, 1, *v.shape[1:]) if s > 1 else v[0] for n, v in draws.items()}
        with draws_plate(s):
            guide_trace = poutine.trace(poutine.condition(self.guide, values)).get_trace(x, None, mask)
            latent = {n: site["value"] for n, site in guide_trace.nodes.items()
                      if is_sampled(site) and not site["infer"].get("is_auxiliary")}  # conditioned: observed
            logits = poutine.condition(with_local_sites(self.model, self.guide), latent)(x, None, mask)
        return logits.softmax(-1).reshape(s, *logits.shape[-2:])


def linearized_logits(net, x, mask, center, draws):
    """[S, N, K] logits of ``net`` linearized at the site values ``center``: f(x; c) + J(x; c) (theta_s - c) for
    each of the S ``draws`` theta_s (a generalized linear model's predictive, one forward-mode product a draw)."""
    def logits(values):
        return net(x, mask, values)

    out = []
    with sdpa_kernel(SDPBackend.MATH):  # fused attention kernels have no forward-mode derivative
        for s in range(next(iter(draws.values())).shape[0]):
            delta = {n: draws[n][s] - c for n, c in center.items()}
            base, tangent = torch.func.jvp(logits, (center,), (delta,))
            out.append(base + tangent)
    return torch.stack(out)
