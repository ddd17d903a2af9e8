"""One cell of the study, (dataset, seed, method): selected on validation, fitted, evaluated on test, OOD and shift.

``run_cell(task)`` is all a worker runs: it loads the dataset, seeds every generator
from the cell's seed, sets the torch threads it was given, chooses the row's
hyperparameters on a validation split (``select.py``), fits the winner on the whole
training split, checks the fit for degeneracy on the training inputs (a constant
predictive, a posterior on its prior: ``inference.degeneracy``), and evaluates it once
through ``zoo.evaluation.evaluate_all``, the path ``bzoo fit`` takes too: on test (metrics,
reliability), on the OOD set (AUROC, and the set's scale) and on the shifted test sets
(accuracy and NLL), all through ``Posterior.predict``'s memory-bounded chunks. It returns plain data (a JSON-ready
record and the small arrays the statistics need); the caller writes them, so a
cell never writes files on a remote worker. A library error (a diverged fit, a
refused option) makes a failed cell that names it; anything else is a bug and raises.

``EXTRA_METRICS`` is where later columns plug in: each entry is
``fn(context) -> dict`` of numbers, called after evaluation with a
``CellContext`` (dataset, seed, row, ``predict``, the test probabilities), and its
numbers are stored under the cell's ``extra`` and summarized like every metric.
"""
import dataclasses
import functools
import inspect
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass

import pyro
import torch

from inference import degeneracy, fit
from core.memory import limited
from inference.metrics import accuracy, nll

from .. import recipes
from ..cli import first_line
from ..evaluation import Sets, evaluate_all
from .footprint import PeakSampler
from .peers import PEERS
from .plan import load_dataset, shapes_of
from .select import candidates, choose, validation_split, with_values

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
    """The row's TransformerClassifier for data of these ``shapes`` (``plan.shapes_of``); for an adapter row
    (``recipes.LORA_STUDY``), a LoRAClassifier on an untrained backbone of the pretraining architecture, which
    has the fitted model's size (what a memory estimate needs)."""
    from ..models import TransformerClassifier

    if row.get("adapter"):
        from ..models.backbone import Backbone
        from ..models.lora import LoRAClassifier

        return LoRAClassifier(shapes["classes"], shapes["channels"], Backbone.random(), adapter=row["adapter"],
                              bayes=row.get("bayes", "weights"), prior=row.get("prior", recipes.PRIOR),
                              max_len=max(512, shapes["length"]), **row.get("model", {}))
    return TransformerClassifier(shapes["classes"], input_dim=None if shapes["tokens"] else shapes["channels"],
                                 vocab_size=shapes["vocab"], **model_options(shapes, row),
                                 bayes=row.get("bayes", "weights"), prior=row.get("prior", recipes.PRIOR),
                                 attention_prior=row.get("attention_prior"))


def scaled(options, steps_scale):
    """Fit options with ``steps`` (and a warm-up's ``kl_anneal``, so it keeps its share of the fit) scaled."""
    options = dict(options)
    for key in ("steps", "kl_anneal"):
        if options.get(key):
            options[key] = max(1, int(options[key] * steps_scale))
    return options


def step_batch(shapes, row, n, evaluation):
    """Series per fit step: None (full batch) unless ``n`` series exceed ``evaluation["step_tokens"]`` tokens, then
    as many as fit in it (at least one). An adapter row counts one token per step (its backbone's patch is larger)."""
    budget = evaluation.get("step_tokens")
    if not budget:
        return None
    patch = 1 if row.get("adapter") else model_options(shapes, row)["patch"]
    batch = max(1, budget // math.ceil(shapes["length"] / patch))
    return None if batch >= n else batch


def fit_options(row, shapes, n, evaluation):
    """The row's fit options as a study cell runs them: steps scaled, minibatches within the token budget."""
    options = scaled(row.get("options", {}), evaluation["steps_scale"])
    batch = step_batch(shapes, row, n, evaluation)
    if batch is not None:
        options.setdefault("batch_size", batch)
    return options


def fit_row(row, dataset, train, seed, device, evaluation):
    """``(predict, seconds, posterior)``: the row's model built from ``seed`` and fitted on ``train``."""
    if row.get("centre") == "map":
        return fit_centred(row, dataset, train, seed, device, evaluation)
    seed_everything(seed)
    shapes = shapes_of(dataset)
    if row.get("adapter"):  # the backbone pretrained without this dataset, cached across cells and seeds
        from ..pretrain import adapter_model

        model = adapter_model(row, dataset, progress=False)
    else:
        model = make_model(row, shapes)
    started = time.perf_counter()
    posterior = fit(model, train, guide=row["guide"], seed=seed, device=device, progress=False,
                    **fit_options(row, shapes, len(train), evaluation))
    return posterior_predict(posterior), time.perf_counter() - started, posterior


def fit_centred(row, dataset, train, seed, device, evaluation):
    """A row whose attention prior is centred on a MAP network (``"centre": "map"``): that network is fitted first,
    on the same ``train`` (so a validation split never reaches it), with the map row's recipe, and its weights reach
    the prior (``centred-dirichlet``) as a file that the model reads once when it is built. Seconds count both fits."""
    started = time.perf_counter()
    map_row = {"label": "map", "guide": "map", "bayes": "weights", "prior": row["prior"], "model": row["model"],
               "options": recipes.fit_options("map")}
    _, _, centre = fit_row(map_row, dataset, train, seed, device, evaluation)
    with tempfile.TemporaryDirectory() as folder:
        weights = os.path.join(folder, "map.pt")
        torch.save(centre.point_weights(), weights)
        centred = {k: v for k, v in row.items() if k != "centre"}
        centred["attention_prior"] = f"{row['attention_prior']},path={weights}"
        predict, _, posterior = fit_row(centred, dataset, train, seed, device, evaluation)
    return predict, time.perf_counter() - started, posterior


def posterior_predict(posterior):
    return lambda x, mask, s: posterior.predict(x, s, mask)


def fit_peer(row, dataset, train, seed, device, evaluation):
    """``(predict, fit_seconds, info)``: a peer fitted on ``train``, its steps scaled and draws as the study's."""
    fitter = PEERS[row["peer"]]
    accepted = inspect.signature(fitter).parameters
    shapes = shapes_of(dataset)
    options = {k: v for k, v in fit_options(row, shapes, len(train), evaluation).items() if k in accepted}
    if "num_samples" in accepted:
        options.setdefault("num_samples", evaluation["samples"])
    seed_everything(seed)
    peer = fitter(dataclasses.replace(dataset, train=train), model_options(shapes, row), seed, device, **options)

    def predict(x, mask, s):
        return peer.predict(x, mask)

    predict.close = peer.close
    return predict, peer.fit_seconds, to_json_info(peer.info)


def select_and_fit(row, dataset, seed, device, evaluation):
    """Choose the row's (or peer's) hyperparameters on validation, refit the winner on all of training.

    Returns ``(predict, fit_seconds, fitted, selected, selection)``, ``fitted`` the posterior of a row or the
    info of a peer; ``fit_seconds`` counts every candidate's fit, its validation prediction and the refit.
    """
    fit_on = fit_peer if "peer" in row else fit_row
    if not row.get("select"):
        predict, seconds, fitted = fit_on(row, dataset, dataset.train, seed, device, evaluation)
        return predict, seconds, fitted, {}, None
    grid = candidates(row)
    started = time.perf_counter()
    part, val, _ = validation_split(dataset.train, seed, evaluation["validation_fraction"])
    scores = []
    for values in grid:
        entry = {"values": values}
        try:
            predict, entry["fit_seconds"], _ = fit_on(with_values(row, values), dataset, part, seed, device,
                                                      evaluation)
            seed_everything(seed)
            probs = predict(val.x, val.mask, evaluation["samples"])
            close(predict)
            entry.update(nll=nll(probs, val.y.to(probs.device)), accuracy=accuracy(probs, val.y.to(probs.device)))
        except FAILURES as e:
            entry.update(nll=float("inf"), error=first_line(e))
        scores.append(entry)
    best = choose([c["nll"] for c in scores])
    if best is None:
        raise ValueError(f"every candidate of row '{row['label']}' failed; first: {scores[0].get('error')}")
    predict, _, fitted = fit_on(with_values(row, grid[best]), dataset, dataset.train, seed, device, evaluation)
    selection = {"metric": "validation nll", "validation_size": len(val), "fit_size": len(part),
                 "fraction": evaluation["validation_fraction"], "candidates": scores, "refit": True}
    return predict, time.perf_counter() - started, fitted, grid[best], selection


@functools.lru_cache(maxsize=2)
def sets_for(ref, seed, shift_inputs):
    """The OOD inputs (with their scale) and shifted test sets of a cell (``zoo.evaluation.Sets``); the model-free
    detector is computed once per dataset by the report (``zoo.study.detectors``)."""
    return Sets.build(dataset_for(ref), seed, shift_inputs)


def run_cell(task):
    """Run one cell; ``task`` is plain data (see ``zoo.study.run``). Returns ``{"record", "arrays"}``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(task["threads"])
    cuda = torch.device(task["device"]).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(task["device"])
    started, cpu = time.perf_counter(), cpu_seconds()
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
              **record, "seconds": time.perf_counter() - started, "cpu_seconds": cpu_seconds() - cpu,
              "threads": task["threads"],
              "worker": f"{socket.gethostname()}:{os.getpid()}",
              "memory": {"estimate": task["estimate"], "budget": task["budget"], "start_rss": peak.start,
                         "peak_rss": peak.peak, "peak_above_start": peak.peak - peak.start,
                         "peak_device": torch.cuda.max_memory_allocated(task["device"]) if cuda else None}}
    return {"record": record, "arrays": arrays}


def cpu_seconds():
    """CPU seconds of this process and of the children it has waited for (a peer's isolated process, NUTS workers):
    a cell's whole cost, since each cell ends its children before it returns."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def close(predict):
    """End what a fitted predictor holds outside this process (a peer's child), so its CPU time counts here."""
    getattr(predict, "close", lambda: None)()


def prepare(task):
    """Load the cell's data (cached per worker) before its memory is measured: the peak above start is the cell's."""
    try:
        sets_for(task["ref"], task["seed"], task["evaluation"]["shift_inputs"])
    except FAILURES:
        pass  # the cell itself reports it


def _run(task):
    row, seed, evaluation = task["row"], task["seed"], task["evaluation"]
    dataset = dataset_for(task["ref"])
    device = torch.device(task["device"])
    predict, fit_seconds, fitted, selected, selection = select_and_fit(row, dataset, seed, device, evaluation)
    if "peer" in row:
        info = fitted
    else:
        info = {"trained_parameters": trained_parameters(row, dataset), **convergence_of(fitted, dataset.test),
                "degeneracy": degeneracy.check(fitted, dataset.train.x, dataset.train.mask).to_dict()}
    seed_everything(seed)  # the evaluation's draws do not depend on how many the fit took
    started = time.perf_counter()
    sets = sets_for(task["ref"], seed, evaluation["shift_inputs"])
    metrics, shift, test_probs = evaluate_all(predict, dataset, sets, evaluation)
    close(predict)
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


def convergence_of(posterior, test):
    """For a many-chain posterior (the reference: superchains from an ensemble), its function-space
    convergence on the test inputs (nested R-hat, R-hat, ESS, between-mode share), so a distance to it comes
    with how far it can be trusted; {} for any other posterior."""
    if not posterior.info.get("superchains"):
        return {}
    from inference.mcmc import function_space

    return {"convergence": function_space(posterior, test.x, test.mask)}


def trained_parameters(row, dataset):
    """How many network numbers the row's fit trains (for an adapter row: the adapters and the head only)."""
    return sum(p.numel() for p in make_model(row, shapes_of(dataset)).net.parameters())


def to_json_info(info):
    """A peer's ``info`` kept to its JSON-friendly scalars."""
    return {k: v for k, v in dict(info).items() if isinstance(v, (bool, int, float, str)) or v is None}
