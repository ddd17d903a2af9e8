"""A cell's memory: estimated before it starts (from the model's own working-set figures), measured while it runs.

``estimate(model, shapes, evaluation, chunk)`` gives the bytes a cell adds to its worker's
baseline: the fit's working set (activations kept for the backward pass of every block
on the whole training split, from ``model.bytes_per_pair``; parameters, gradients and
optimizer state from ``model.bytes_per_draw``), the prediction chunk (at most ``chunk``,
the budget ``Posterior.predict`` plans its chunks under) and the data with its OOD and
shifted copies. ``PeakSampler`` reads the process's resident memory every few
milliseconds on a thread, so a cell records the peak it actually reached.
"""
import threading

import psutil

from core.memory import MemoryBudgetError
from core.memory import _show as show

TRAIN_FACTOR = 4  # autograd keeps about this many times one block's inference working set, per block
PARAM_COPIES = 6  # parameters, guide (loc, scale), gradients and two Adam moments, in units of one draw / 2
ROCKET_FEATURES = 10_000  # MiniRocket's features per series (float64, kept for the ridge classifier)
SHIFT_SETS = 12


def data_bytes(shapes):
    """Inputs of train, test, the OOD set and the shifted test sets (float32, with masks)."""
    per_step = 4 * shapes["channels"] + 1
    test = shapes["n_test"] * shapes["length"] * per_step
    return shapes["n_train"] * shapes["length"] * per_step + (2 + SHIFT_SETS) * test


def estimate(model, shapes, evaluation, chunk, peer=None):
    """Bytes one cell is expected to add at its peak: ``{"fit", "predict", "data", "total"}``.

    ``model`` is the row's TransformerClassifier (or the peer network's twin); ``shapes``
    has n_train, n_test, length, channels, classes; ``chunk`` caps one prediction chunk.
    """
    pair = model.bytes_per_pair(shapes["length"])
    draw = model.bytes_per_draw()
    n, depth = shapes["n_train"], model.cfg.depth
    fit = TRAIN_FACTOR * depth * n * pair + PARAM_COPIES * draw
    if peer == "minirocket":
        fit = 2 * 8 * ROCKET_FEATURES * (shapes["n_train"] + shapes["n_test"])
    samples = max(evaluation["samples"], 1)
    largest = max(shapes["n_test"], shapes["n_train"])
    predict = min(chunk, samples * largest * pair + samples * draw)
    outputs = 4 * samples * largest * shapes["classes"] * 3  # test and OOD draws, plus their mean
    data = data_bytes(shapes)
    return {"fit": int(fit), "predict": int(predict + outputs), "data": int(data),
            "total": int(max(fit, predict + outputs) + data)}


def check(label, need, limit):
    """Refuse a cell whose estimate exceeds the per-worker budget, naming the cell and both figures."""
    if need > limit:
        raise MemoryBudgetError(f"cell {label} needs about {show(need)}, more than the memory budget of "
                                f"{show(limit)} per worker; raise --memory-budget, lower --jobs or leave it out")


class PeakSampler:
    """``with PeakSampler() as peak: ...``; then ``peak.start`` and ``peak.peak`` are resident bytes."""

    def __init__(self, interval=0.005):
        self.interval, self.process = interval, psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _watch(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._watch, name="bzoo-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return False


def default_budget(workers, available=None, fraction=0.5):
    """Per-worker bytes: ``fraction`` of the memory available now, shared among ``workers`` concurrent cells."""
    available = psutil.virtual_memory().available if available is None else available
    return int(fraction * available / max(1, workers))
