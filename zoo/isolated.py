"""Work that brings its own thread runtime, run in a child process so it cannot slow the torch work after it.

aeon's MiniRocket runs numba kernels on an OpenMP thread pool. Once that pool has started in a
process, torch's parallel regions there run several times slower (a nested OpenMP region: MKL's
sgemm inside torch's ``parallel_for``): on ItalyPowerDemand the laplace-torch cell took 2.9 s alone
and 195 s after a MiniRocket cell in the same process. ``Child`` is one ``python -m zoo.isolated``
process that keeps what it computed between calls (``call(fn, ...)`` runs ``fn(kept, ...)`` there,
``kept`` a dict that lives as long as the child), so the parent's thread pools never see that
runtime. A plain subprocess, not multiprocessing: nothing of the caller's ``__main__`` is re-run.
"""
import os
import pickle
import struct
import subprocess
import sys
import weakref


class ChildError(RuntimeError):
    """The child process died or its work raised; the message carries the child's error."""


def _send(stream, obj):
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    return pickle.loads(stream.read(struct.unpack("<Q", head)[0]))


class Child:
    """A child process for thread-runtime-bringing work; ``close()`` (or garbage collection) ends it."""

    def __init__(self, threads=1):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
        self._process = subprocess.Popen([sys.executable, "-m", "zoo.isolated"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, cwd=os.getcwd())
        self._finalizer = weakref.finalize(self, _stop, self._process)

    def call(self, fn, *args, **kwargs):
        """``fn(kept, *args, **kwargs)`` in the child; ``fn`` must be importable (a module-level function)."""
        try:
            _send(self._process.stdin, (fn, args, kwargs))
            ok, value = _receive(self._process.stdout)
        except (EOFError, BrokenPipeError) as e:
            raise ChildError(f"the isolated child process ended (exit code {self._process.poll()})") from e
        if not ok:
            raise value
        return value

    def close(self):
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _stop(process):
    if process.poll() is None:
        process.stdin.close()
        process.wait()


def serve():
    """The child's loop: requests on stdin, replies on the original stdout (print goes to stderr)."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests, kept = sys.stdin.buffer, {}
    while True:
        try:
            fn, args, kwargs = _receive(requests)
        except EOFError:
            return
        try:
            reply = (True, fn(kept, *args, **kwargs))
        except Exception as e:  # noqa: BLE001 - sent back and raised in the parent
            reply = (False, e)
        _send(replies, reply)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    serve()
