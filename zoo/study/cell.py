"""One cell of the study, (dataset, seed, method): selected on validation, fitted, evaluated on test, OOD and shift.

``run_cell(task)`` is all a worker runs: it loads the dataset, seeds every generator
from the cell's seed, sets the torch threads it was given, chooses the row's
hyperparameters on a validation split (``select.py``), fits the winner on the whole
training split, and evaluates it once on test (metrics, reliability), on the OOD set
(AUROC) and on the shifted test sets (accuracy and NLL), all through
``Posterior.predict``'s memory-bounded chunks. It returns plain data (a JSON-ready
record and the small arrays the statistics need); the caller writes them, so a
cell never writes files on a remote worker. A library error (a diverged fit, a
refused option) makes a failed cell that names it; anything else is a bug and raises.

``EXTRA_METRICS`` is where later columns plug in: each entry is
``fn(context) -> dict`` of numbers, called after evaluation with a
``CellContext`` (dataset, seed, row, ``predict``, the test probabilities), and its
numbers are stored under the cell's ``extra`` and summarized like every metric.
"""
import functools
import inspect
import os
import socket
import time
from dataclasses import dataclass

import numpy as np
import pyro
import torch

from inference import evaluate, fit
from inference.memory import limited
from inference.metrics import accuracy, mean_probs, nll

from .. import recipes
from ..cli import first_line
from ..data.ood import ood_inputs
from .footprint import PeakSampler
from .plan import load_dataset, shapes_of
from .select import candidates, choose, subset, validation_split, with_values

FAILURES = (ValueError, FloatingPointError)  # the library's own errors: FitError, DataError, NonFiniteError, ...
EXTRA_METRICS = []


@dataclass
class CellContext:
    dataset: object
    seed: int
    row: dict
    predict: object  # predict(x, mask, num_samples) -> probs [S, N, K]
    test_probs: torch.Tensor  # posterior predictive mean on the test set [N, K]


@functools.lru_cache(maxsize=2)
def dataset_for(ref):
    return load_dataset(ref)


def seed_everything(seed):
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)  # also seeds Python's and NumPy's generators
    pyro.clear_param_store()


def model_options(shapes, row):
    """The study's model size for data of these ``shapes`` (patched to at most 64 tokens), with the row's overrides."""
    from ..models import default_patch

    sized = {"max_len": shapes["length"], "patch": 1 if shapes["tokens"] else default_patch(shapes["length"])}
    return {**recipes.MODEL, **sized, **row.get("model", {})}  # a resolved row's model holds MODEL already


def make_model(row, shapes):
    """The row's TransformerClassifier for data of these ``shapes`` (``plan.shapes_of``)."""
    from ..models import TransformerClassifier

    return TransformerClassifier(shapes["classes"], input_dim=None if shapes["tokens"] else shapes["channels"],
                                 vocab_size=shapes["vocab"], **model_options(shapes, row),
                                 bayes=row.get("bayes", "weights"), prior=row.get("prior", recipes.PRIOR),
                                 attention_prior=row.get("attention_prior"))


def scaled(options, steps_scale):
    options = dict(options)
    if "steps" in options:
        options["steps"] = max(1, int(options["steps"] * steps_scale))
    return options


def fit_row(row, dataset, train, seed, device, steps_scale):
    """``(posterior, seconds)``: the row's model built from ``seed`` and fitted on ``train``."""
    seed_everything(seed)
    model = make_model(row, shapes_of(dataset))
    started = time.perf_counter()
    posterior = fit(model, train, guide=row["guide"], seed=seed, device=device, progress=False,
                    **scaled(row.get("options", {}), steps_scale))
    return posterior, time.perf_counter() - started


def posterior_predict(posterior):
    return lambda x, mask, s: posterior.predict(x, s, mask)


def select_and_fit(row, dataset, seed, device, evaluation):
    """Choose the row's hyperparameters on validation, refit the winner on all of training.

    Returns ``(predict, fit_seconds, selected, selection)``; ``fit_seconds`` counts every
    candidate's fit, its validation prediction and the refit.
    """
    grid = candidates(row)
    if not row.get("select"):
        posterior, seconds = fit_row(row, dataset, dataset.train, seed, device, evaluation["steps_scale"])
        return posterior_predict(posterior), seconds, {}, None
    started = time.perf_counter()
    part, val, _ = validation_split(dataset.train, seed, evaluation["validation_fraction"])
    scores = []
    for values in grid:
        entry = {"values": values}
        try:
            posterior, entry["fit_seconds"] = fit_row(with_values(row, values), dataset, part, seed, device,
                                                      evaluation["steps_scale"])
            seed_everything(seed)
            probs = posterior.predict(val.x, evaluation["samples"], val.mask)
            entry.update(nll=nll(probs, val.y.to(probs.device)), accuracy=accuracy(probs, val.y.to(probs.device)))
        except FAILURES as e:
            entry.update(nll=float("inf"), error=first_line(e))
        scores.append(entry)
    best = choose([c["nll"] for c in scores])
    if best is None:
        raise ValueError(f"every candidate of row '{row['label']}' failed; first: {scores[0].get('error')}")
    posterior, seconds = fit_row(with_values(row, grid[best]), dataset, dataset.train, seed, device,
                                 evaluation["steps_scale"])
    selection = {"metric": "validation nll", "validation_size": len(val), "fit_size": len(part),
                 "fraction": evaluation["validation_fraction"], "candidates": scores, "refit": True}
    return posterior_predict(posterior), time.perf_counter() - started, grid[best], selection


def peer_fitters():
    """``zoo.study.peers.PEERS`` (issue 19); until it lands, today's plain PyTorch and MiniRocket behind its contract."""
    from . import peers

    return getattr(peers, "PEERS", None) or {"plain": _plain_today, "minirocket": _minirocket_today}


class _Predictor:  # the Predictor contract of zoo.study.peers (predict(x, mask) -> [S, N, K], fit_seconds, info)
    def __init__(self, predict, fit_seconds, info):
        self.predict, self.fit_seconds, self.info = predict, fit_seconds, info


def _plain_today(dataset, model_options, seed, device="cpu", steps=None, lr=None):
    from ..models.plain import PlainTransformer, train_step

    options = recipes.fit_options("map", steps=steps, lr=lr)
    torch.manual_seed(seed)
    net = PlainTransformer(dataset.input_dim, dataset.num_classes, **model_options).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=options["lr"])
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    started = time.perf_counter()
    for _ in range(options["steps"]):
        train_step(net, optim, x, y)
    seconds = time.perf_counter() - started
    net.eval()

    @torch.no_grad()
    def predict(x, mask=None):
        return net(x.to(device), None if mask is None else mask.to(device)).softmax(-1)[None].cpu()
    return _Predictor(predict, seconds, options)


def _minirocket_today(dataset, model_options=None, seed=0, device="cpu"):
    from aeon.classification.convolution_based import MiniRocketClassifier

    if dataset.tokens or dataset.train.mask is not None:
        raise ValueError(f"MiniRocket (today's peer) takes equal-length real-valued series; '{dataset.name}' is not")
    clf = MiniRocketClassifier(random_state=seed)
    started = time.perf_counter()
    clf.fit(dataset.train.x.numpy().transpose(0, 2, 1).astype("float64"), dataset.train.y.numpy())
    seconds = time.perf_counter() - started

    def predict(x, mask=None):
        proba = clf.predict_proba(x.cpu().numpy().transpose(0, 2, 1).astype("float64"))
        full = np.zeros((len(proba), dataset.num_classes))
        full[:, clf.classes_.astype(int)] = proba
        return torch.as_tensor(full, dtype=torch.float32)[None]
    return _Predictor(predict, seconds, {"random_state": seed})


def fit_peer(row, dataset, seed, device, evaluation):
    """A peer fitted on all of training: ``(predict, fit_seconds, info)``, its steps scaled and draws as the study's."""
    fitter = peer_fitters()[row["peer"]]
    options = scaled(row.get("options", {}), evaluation["steps_scale"])
    if "num_samples" in inspect.signature(fitter).parameters:
        options.setdefault("num_samples", evaluation["samples"])
    seed_everything(seed)
    peer = fitter(dataset, model_options(shapes_of(dataset), row), seed, device, **options)
    return (lambda x, mask, s: peer.predict(x, mask)), peer.fit_seconds, to_json_info(peer.info)


@functools.lru_cache(maxsize=2)
def ood_set(ref):
    """``(x, mask)`` of the dataset's OOD inputs, or None (today's ``ood_inputs`` returns a tensor or None)."""
    got = ood_inputs(dataset_for(ref))
    if got is None or isinstance(got, tuple):
        return got
    return got, None


@functools.lru_cache(maxsize=2)
def shift_sets(ref, seed, inputs):
    """The graded shifts of at most ``inputs`` test series (drawn from ``seed``), or {} where none is defined."""
    try:
        from ..data.shift import shifts
    except ImportError:  # zoo.data.shift lands with issue 19
        return {}
    test = dataset_for(ref).test
    if len(test) > inputs:
        test = subset(test, torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:inputs].sort().values)
    try:
        return shifts(test, seed=seed)
    except ValueError:  # token data has no shift
        return {}


def evaluate_cell(predict, ref, seed, evaluation):
    """Metrics on test (with OOD scores) and under shift, and the test predictive mean [N, K]."""
    test = dataset_for(ref).test
    probs = predict(test.x, test.mask, evaluation["samples"]).cpu()
    ood = ood_set(ref)
    ood_probs = None if ood is None else predict(ood[0], ood[1], evaluation["samples"]).cpu()
    metrics = evaluate(probs, test.y, ood_probs, evaluation["bins"])
    metrics.setdefault("ood_auroc", None)
    shift = {}
    for key, split in shift_sets(ref, seed, evaluation["shift_inputs"]).items():
        p = predict(split.x, split.mask, evaluation["shift_samples"]).cpu()
        shift[key] = {"accuracy": accuracy(p, split.y), "nll": nll(p, split.y)}
        del p
    metrics["shift_accuracy"] = float(np.mean([s["accuracy"] for s in shift.values()])) if shift else None
    metrics["shift_nll"] = float(np.mean([s["nll"] for s in shift.values()])) if shift else None
    return metrics, shift, mean_probs(probs).float()


def run_cell(task):
    """Run one cell; ``task`` is plain data (see ``zoo.study.run``). Returns ``{"record", "arrays"}``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(task["threads"])
    cuda = torch.device(task["device"]).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(task["device"])
    started, cpu = time.perf_counter(), time.process_time()
    try:
        prepare(task)
        with PeakSampler() as peak, limited(task["evaluation"]["predict_chunk"]):
            try:
                record, arrays = _run(task)
            except FAILURES as e:
                record, arrays = {"status": "failed", "error": first_line(e)}, {}
    finally:
        torch.set_num_threads(threads)
    record = {"dataset": task["dataset"], "seed": task["seed"], "method": task["row"]["label"], "key": task["key"],
              **record, "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
              "threads": task["threads"],
              "worker": f"{socket.gethostname()}:{os.getpid()}",
              "memory": {"estimate": task["estimate"], "budget": task["budget"], "start_rss": peak.start,
                         "peak_rss": peak.peak, "peak_above_start": peak.peak - peak.start,
                         "peak_device": torch.cuda.max_memory_allocated(task["device"]) if cuda else None}}
    return {"record": record, "arrays": arrays}


def prepare(task):
    """Load the cell's data (cached per worker) before its memory is measured: the peak above start is the cell's."""
    try:
        dataset_for(task["ref"])
        ood_set(task["ref"])
        shift_sets(task["ref"], task["seed"], task["evaluation"]["shift_inputs"])
    except FAILURES:
        pass  # the cell itself reports it


def _run(task):
    row, seed, evaluation = task["row"], task["seed"], task["evaluation"]
    dataset = dataset_for(task["ref"])
    device = torch.device(task["device"])
    if "peer" in row:
        predict, fit_seconds, info = fit_peer(row, dataset, seed, device, evaluation)
        selected, selection = {}, None
    else:
        predict, fit_seconds, selected, selection = select_and_fit(row, dataset, seed, device, evaluation)
        info = {}
    seed_everything(seed)  # the evaluation's draws do not depend on how many the fit took
    started = time.perf_counter()
    metrics, shift, test_probs = evaluate_cell(predict, task["ref"], seed, evaluation)
    predict_seconds = time.perf_counter() - started
    context = CellContext(dataset, seed, row, predict, test_probs)
    extra = {}
    for fn in EXTRA_METRICS:
        extra.update(fn(context))
    record = {"status": "ok", **metrics, "shift": shift, "fit_seconds": fit_seconds,
              "predict_seconds": predict_seconds, "selected": selected, "selection": selection, "info": info,
              "extra": extra}
    arrays = {"test_probs": test_probs.numpy(), "y": dataset.test.y.numpy()}
    return record, arrays


def to_json_info(info):
    """A peer's ``info`` kept to its JSON-friendly scalars."""
    return {k: v for k, v in dict(info).items() if isinstance(v, (bool, int, float, str)) or v is None}
