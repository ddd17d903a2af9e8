"""The peers a researcher would otherwise use, fitted on the same data as the zoo's rows and scored the same way.

``PEERS[name](dataset, model_options, seed, device, **options) -> Predictor``:

- ``dataset``: a ``zoo.data.Dataset``. A peer trains on ``dataset.train`` only and reads
  nothing else but its shape (classes, channels or tokens); a study that carves a
  validation split passes ``dataclasses.replace(dataset, train=part)``.
- ``model_options``: the zoo model's size (``recipes.MODEL`` with ``max_len``, ``patch``,
  ``dropout``), so the network peers build the identical architecture; MiniRocket ignores it.
- ``Predictor.predict(x, mask=None)`` gives class probabilities [S, N, K], float32 on
  the CPU (S = 1 for point predictors); ``fit_seconds`` is the wall time of the fit and
  ``info`` says what was fitted.

The peers: ``plain`` (the identical network in plain PyTorch, Adam + cross-entropy with
the MAP row's steps and lr), ``minirocket`` (aeon's MiniRocket; its ridge classifier's
scores temperature-scaled on held-out folds of training) and ``laplace-torch``
(laplace-torch's last-layer KFAC Laplace on the zoo's own MAP network, exported as a
``PlainTransformer``, with the prior precision chosen by marginal likelihood and
probabilities from Monte Carlo draws of the GLM predictive).
"""
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.checks import DataError

from .. import recipes
from ..models.plain import PlainTransformer, train_step

PREDICT_BATCH = 1024  # inputs per forward pass when predicting
ROCKET_MIN_LENGTH = 9  # MiniRocket's kernels span 9 steps


class Predictor:
    """A fitted peer: ``predict(x, mask=None) -> probs [S, N, K]`` (float32, CPU), with ``fit_seconds`` and ``info``."""

    def __init__(self, predict, fit_seconds, info):
        self._predict, self.fit_seconds, self.info = predict, float(fit_seconds), dict(info)

    @torch.no_grad()
    def predict(self, x, mask=None):
        return self._predict(x, mask).detach().float().cpu()

    def close(self):
        """End the peer's child process, if it has one (``fit_minirocket``); predicting after it fails."""
        if getattr(self, "child", None) is not None:
            self.child.close()


def network_options(dataset, model_options):
    """``PlainTransformer`` keyword arguments for ``dataset``: its input (channels or vocabulary) and the model size."""
    if dataset.tokens:
        return {"input_dim": None, "vocab_size": dataset.vocab_size, **model_options}
    return {"input_dim": dataset.input_dim, **model_options}


def in_batches(fn, x, mask, device):
    """``fn(x, mask)`` over chunks of ``PREDICT_BATCH`` inputs moved to ``device``, concatenated on dim -2 on the CPU."""
    out = []
    for i in range(0, x.shape[0], PREDICT_BATCH):
        m = None if mask is None else mask[i:i + PREDICT_BATCH].to(device)
        out.append(fn(x[i:i + PREDICT_BATCH].to(device), m).cpu())
    return torch.cat(out, dim=-2)


def fit_plain(dataset, model_options, seed, device="cpu", steps=None, lr=None, batch_size=None):
    """The identical network as an ordinary nn.Module, trained with Adam on cross-entropy, masks as in the zoo.

    ``steps`` and ``lr`` default to the MAP row's (``recipes.FIT["map"]``); no prior, a
    constant learning rate, full batch unless ``batch_size`` is given (then the same
    seeded minibatches as ``inference.fit``).
    """
    from core.tensors import minibatches

    options = recipes.fit_options("map", steps=steps, lr=lr)
    torch.manual_seed(seed)
    net = PlainTransformer(num_classes=dataset.num_classes, **network_options(dataset, model_options)).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=options["lr"])
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    mask = None if dataset.train.mask is None else dataset.train.mask.to(device)
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    net.train()
    for idx in minibatches(len(y), batch_size, options["steps"], generator):
        if idx is None:
            train_step(net, optim, x, y, mask)
        else:
            train_step(net, optim, x[idx], y[idx], None if mask is None else mask[idx])
    seconds = time.perf_counter() - started
    net.eval()
    info = {"trainable_parameters": sum(p.numel() for p in net.parameters()), **options}
    return Predictor(lambda x, mask: in_batches(lambda a, m: net(a, m).softmax(-1), x, mask, device)[None],
                     seconds, info)


def rocket_inputs(x, mask, length):
    """[N, T, C] (masked) -> float64 [N, C, length] for MiniRocket, which takes equal-length series of >= 9 steps.

    Series that are shorter than ``length`` (variable-length data, or every series of a
    dataset shorter than 9 steps) have their real steps linearly resampled to ``length``.
    """
    x = x.double().transpose(1, 2)  # [N, C, T]
    lengths = [x.shape[-1]] * len(x) if mask is None else mask.sum(1).tolist()
    if all(n == length for n in lengths):
        return x[..., :length].numpy()
    out = torch.stack([F.interpolate(x[i:i + 1, :, :n], size=length, mode="linear", align_corners=True)[0]
                       if n > 1 else x[i, :, :1].expand(-1, length) for i, n in enumerate(lengths)])
    return out.numpy()


def fit_minirocket(dataset, model_options=None, seed=0, device="cpu", n_kernels=10000, calibrate=True, folds=5):
    """aeon's MiniRocket (``n_kernels`` kernels, ridge classifier) on every dataset, in a child process.

    MiniRocket takes equal-length series of at least 9 steps: variable-length series
    (and series shorter than 9 steps, like digits' 8 rows) are linearly resampled over
    their real steps to max(9, T). Its ridge classifier gives scores, not probabilities.
    With ``calibrate`` they become softmax(scores / T), the temperature T chosen by NLL on held-out
    scores (temperature scaling, Guo et al. 2017): those of ``folds`` MiniRocket fits, each on
    training less one stratified fold, pooled so that every training series is held out once (a
    single small validation split is often classified perfectly, which sends T to 0). The
    classifier is then refitted on all of training; the class it predicts is the ridge's own. Without
    it the predicted class gets probability 1 (hard probabilities: an NLL and an entropy that say nothing).
    The classifier lives in a ``zoo.isolated.Child``: its numba thread runtime would slow every later torch
    cell of this process.
    """
    from ..isolated import Child

    if dataset.tokens:
        raise DataError(f"MiniRocket takes real-valued series; '{dataset.name}' holds token ids")
    length = max(ROCKET_MIN_LENGTH, dataset.max_len)
    child = Child(torch.get_num_threads())
    seconds, temperature = child.call(rocket_fit, dataset.train, dataset.num_classes, length, n_kernels, seed,
                                      calibrate, folds)

    def predict(x, mask):
        s = child.call(rocket_scores, x.cpu(), None if mask is None else mask.cpu())
        if temperature is None:
            return F.one_hot(s.argmax(-1), dataset.num_classes).float()[None]
        return (s / temperature).softmax(-1)[None]

    peer = Predictor(predict, seconds, {"n_kernels": n_kernels, "length": length, "temperature": temperature,
                                        "resampled": length != dataset.max_len or dataset.train.mask is not None})
    peer.child = child  # ends with the peer
    return peer


def rocket_fit(kept, train_split, num_classes, length, n_kernels, seed, calibrate, folds):
    """In the child: fit (and calibrate) MiniRocket on ``train_split``, keep it; ``(seconds, temperature)``."""
    from aeon.classification.convolution_based import MiniRocketClassifier

    def train(split):
        clf = MiniRocketClassifier(n_kernels=n_kernels, random_state=seed)
        return clf.fit(rocket_inputs(split.x, split.mask, length), split.y.numpy())

    def scores(clf, x, mask):
        """[N, K] ridge scores; classes absent from the classifier's training get -inf."""
        d = clf.pipeline_.decision_function(rocket_inputs(x, mask, length))
        d = np.stack([np.zeros_like(d), d], 1) if d.ndim == 1 else d  # binary: the score of classes_[1]
        full = torch.full((len(d), num_classes), -math.inf)
        full[:, torch.as_tensor(clf.classes_.astype(int))] = torch.as_tensor(d, dtype=torch.float32)
        return full

    started = time.perf_counter()
    temperature = fit_temperature(*held_out_scores(train_split, folds, seed, train, scores)) if calibrate else None
    kept["rocket"] = (train(train_split), scores)
    return time.perf_counter() - started, temperature


def rocket_scores(kept, x, mask):
    """In the child: the kept classifier's [N, K] ridge scores."""
    clf, scores = kept["rocket"]
    return scores(clf, x, mask)


def held_out_scores(train_split, folds, seed, train, scores):
    """(scores, labels) of every series of ``train_split`` from a classifier fitted without its fold: stratified
    ``folds``-fold (at most as many folds as the largest class has series, at least two)."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    from .select import subset

    y = train_split.y.cpu()
    k = max(2, min(folds, int(torch.bincount(y).max())))
    held, labels = [], []
    with warnings.catch_warnings():  # a class with fewer series than folds: sklearn warns and still stratifies
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y.numpy()))
    for fit_idx, val_idx in splits:
        part, val = subset(train_split, torch.as_tensor(fit_idx)), subset(train_split, torch.as_tensor(val_idx))
        held.append(scores(train(part), val.x, val.mask))
        labels.append(val.y.cpu())
    return torch.cat(held), torch.cat(labels)


def fit_temperature(logits, y):
    """The T > 0 that minimizes the NLL of softmax(logits / T) for labels ``y`` (log T searched in [-7, 7]).

    Rows whose label has no score (-inf: a class its classifier never saw) are left out: no T changes them.
    """
    from scipy.optimize import minimize_scalar

    logits, y = logits.double(), y.cpu()
    seen = logits[torch.arange(len(y)), y].isfinite()
    logits, y = logits[seen], y[seen]

    def nll(log_t):
        return float(-(logits / math.exp(log_t)).log_softmax(-1)[torch.arange(len(y)), y].mean())

    return math.exp(minimize_scalar(nll, bounds=(-7.0, 7.0), method="bounded").x)


def export_map(model, posterior):
    """The zoo's fitted MAP network as a plain ``PlainTransformer`` (every parameter at its MAP value), in eval mode."""
    cfg = model.net.cfg
    net = PlainTransformer(cfg.input_dim, cfg.num_classes, d_model=cfg.d_model, depth=cfg.depth, heads=cfg.heads,
                           mlp_ratio=cfg.mlp_ratio, max_len=cfg.max_len, dropout=cfg.dropout, patch=cfg.patch,
                           vocab_size=cfg.vocab_size)
    net.load_state_dict(posterior.point_weights())
    return net.to(next(model.net.parameters()).device).eval()


class PackedMask(nn.Module):
    """``net`` fed one tensor with the padding mask packed in as a last channel (laplace-torch passes one tensor)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    @staticmethod
    def pack(x, mask):
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        if x.is_floating_point():
            return torch.cat([x, mask[..., None].to(x.dtype)], -1)
        return torch.stack([x, mask.to(x.dtype)], -1)

    def forward(self, packed):
        x = packed[..., :-1] if packed.is_floating_point() else packed[..., 0]
        return self.net(x, packed[..., -1] > 0)


def fit_laplace(dataset, model_options, seed, device="cpu", steps=None, lr=None, batch_size=None, kl_anneal=None,
                num_samples=recipes.NUM_SAMPLES):
    """laplace-torch's last-layer Laplace (KFAC, prior precision by marginal likelihood) on the zoo's MAP network.

    The MAP network is ``inference.fit(model, train, guide="map")`` with the MAP row's
    options (same model, prior and seed as the study's MAP row), exported as a
    ``PlainTransformer``. Probabilities are ``num_samples`` Monte Carlo draws of the GLM
    (linearized) predictive, softmax(f), f ~ N(f_MAP, J Sigma J^T), so they are scored
    like the zoo's own draws.
    """
    from laplace import Laplace

    from inference import fit

    from ..models import TransformerClassifier

    options = recipes.fit_options("map", steps=steps, lr=lr, batch_size=batch_size, kl_anneal=kl_anneal)
    torch.manual_seed(seed)
    net_options = network_options(dataset, model_options)
    model = TransformerClassifier(dataset.num_classes, **net_options, bayes="weights", prior=recipes.PRIOR)
    started = time.perf_counter()
    posterior = fit(model, dataset.train, guide="map", seed=seed, device=device, progress=False, **options)
    map_seconds = time.perf_counter() - started
    packed = PackedMask(export_map(model, posterior))
    train = torch.utils.data.TensorDataset(PackedMask.pack(dataset.train.x, dataset.train.mask), dataset.train.y)
    loader = torch.utils.data.DataLoader(train, batch_size=PREDICT_BATCH)
    started = time.perf_counter()
    la = Laplace(packed, "classification", subset_of_weights="last_layer", hessian_structure="kron")
    la.fit(loader)
    la.optimize_prior_precision(pred_type="glm", method="marglik")
    laplace_seconds = time.perf_counter() - started
    generator = torch.Generator(device=device).manual_seed(seed)

    def predict(x, mask):
        def draws(a, m):
            return la.predictive_samples(PackedMask.pack(a, m), pred_type="glm", n_samples=num_samples,
                                         generator=generator)
        return in_batches(draws, x, mask, device)

    info = {"map_seconds": map_seconds, "laplace_seconds": laplace_seconds, "num_samples": num_samples,
            "prior_precision": float(la.prior_precision.mean()), "last_layer_parameters": int(la.n_params),
            "hessian": "kron", "predictive": "glm, Monte Carlo", **options}
    return Predictor(predict, map_seconds + laplace_seconds, info)


PEERS = {"plain": fit_plain, "minirocket": fit_minirocket, "laplace-torch": fit_laplace}

