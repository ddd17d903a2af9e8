"""Work that brings its own thread runtime, run in a child process so it cannot slow the torch work after it.

aeon's MiniRocket runs numba kernels on an OpenMP thread pool. Once that pool has started in a
process, torch's parallel regions there run several times slower (a nested OpenMP region: MKL's
sgemm inside torch's ``parallel_for``): on ItalyPowerDemand the laplace-torch cell took 2.9 s alone
and 195 s after a MiniRocket cell in the same process. ``Child`` is one spawned process that keeps
what it computed between calls (``call(fn, ...)`` runs ``fn(kept, ...)`` there, ``kept`` a dict that
lives as long as the child), so the parent's thread pools never see that runtime.
"""
import multiprocessing
import weakref
from concurrent.futures import ProcessPoolExecutor

_KEPT = {}  # in the child: what earlier calls left for later ones


def _start(threads):
    import torch

    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def _run(fn, args, kwargs):
    return fn(_KEPT, *args, **kwargs)


class Child:
    """A spawned process for thread-runtime-bringing work; ``close()`` (or garbage collection) ends it."""

    def __init__(self, threads=1):
        self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start, initargs=(int(threads),))
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=True)

    def call(self, fn, *args, **kwargs):
        """``fn(kept, *args, **kwargs)`` in the child; ``fn`` must be importable (a module-level function)."""
        return self._pool.submit(_run, fn, args, kwargs).result()

    def close(self):
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
