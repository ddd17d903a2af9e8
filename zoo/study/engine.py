"""Where cells run: in this process one after another, on a local Dask cluster (``jobs``), or on a user's scheduler.

``Engine(jobs=None, scheduler=None, threads=None)`` is a context manager. With neither,
cells run here (no cluster: the default ``bzoo study`` stays light), using every core.
``jobs=N`` starts a ``distributed.LocalCluster`` of N worker processes with one Dask
thread each, free ports and no dashboard; each cell sets torch to cores // N threads
(or ``threads``) so the cores are not oversubscribed. Cells are prioritized in the
order given (``run_study`` puts the longest first). ``scheduler="tcp://HOST:PORT"``
sends cells to an existing cluster (each worker gets its host's cores shared among the
workers on that host); one where nothing answers within ``CONNECT_TIMEOUT`` seconds is
refused in one line. On Dask a worker that dies has its cell rescheduled by the
scheduler (up to its ``allowed-failures``), and a LocalCluster's nanny restarts the
worker, so the study completes. ``run(tasks, on_done)`` calls ``on_done(result)`` in this process as each
cell finishes, with a progress bar of cells done / total and an ETA.
"""
import logging
import os

from tqdm.auto import tqdm

from .footprint import default_budget
from .plan import StudyError

CONNECT_TIMEOUT = 5  # seconds: an unreachable --scheduler is reported well within 10 s


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Engine:
    def __init__(self, jobs=None, scheduler=None, threads=None):
        if jobs is not None and scheduler is not None:
            raise StudyError("--jobs starts a local cluster and --scheduler uses an existing one; give one of them")
        if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
            raise StudyError(f"--jobs must be an integer >= 1, got {jobs}")
        self.jobs, self.scheduler, self.fixed_threads = jobs, scheduler, threads
        if scheduler is not None:
            probe(scheduler)
        self.client = self.cluster = None
        self._threads = {}

    def __enter__(self):
        if self.jobs is not None:
            self._start_local()
        elif self.scheduler is not None:
            self._connect()
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False

    def _start_local(self):
        import dask
        from distributed import Client, LocalCluster

        with dask.config.set({"distributed.worker.daemon": False}):  # a cell may start processes (NUTS chains)
            # No dashboard; the scheduler's HTTP server (health routes) still starts, on a free port too, not 8787.
            self.cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                        dashboard_address=None, scheduler_port=0, silence_logs=logging.ERROR,
                                        scheduler_kwargs={"dashboard_address": ":0"})
        self.client = Client(self.cluster)
        self.default_threads = max(1, cores() // self.jobs)

    def _connect(self):
        from distributed import Client

        try:
            self.client = Client(self.scheduler, timeout=f"{CONNECT_TIMEOUT}s")
        except (OSError, TimeoutError) as e:
            raise StudyError(f"--scheduler {self.scheduler}: no Dask scheduler answered within {CONNECT_TIMEOUT} s "
                             f"({type(e).__name__})") from None
        workers = self.client.scheduler_info()["workers"]
        if not workers:
            self.client.close()
            raise StudyError(f"--scheduler {self.scheduler}: the cluster has no workers")
        per_host = {}
        for info in workers.values():
            per_host[info["host"]] = per_host.get(info["host"], 0) + 1
        counts = self.client.run(cores)
        self._threads = {address: max(1, counts.get(address, 1) // per_host[info["host"]])
                         for address, info in workers.items()}
        self.default_threads = min(self._threads.values())

    @property
    def workers(self):
        """How many cells run at once."""
        if self.client is None:
            return 1
        return len(self.client.scheduler_info()["workers"])

    def threads(self):
        """Torch threads for one cell: as fixed, else in-process every core, on Dask the worker's share."""
        if self.fixed_threads is not None:
            return self.fixed_threads
        return cores() if self.client is None else self.default_threads

    def default_budget(self):
        """Per-worker bytes when the user gives none: half of what is available, shared by concurrent cells."""
        if self.scheduler is not None:
            limits = [w.get("memory_limit") or 0 for w in self.client.scheduler_info()["workers"].values()]
            if all(limits):
                return int(0.5 * min(limits))
        return default_budget(self.workers)

    def run(self, tasks, on_done, total=None, done=0, progress=True):
        """Run ``tasks`` (dicts for ``run_cell``), calling ``on_done(result)`` here as each finishes."""
        from .cell import run_cell

        bar = tqdm(total=total if total is not None else len(tasks), initial=done, desc="study", unit="cell",
                   disable=not progress, smoothing=0)
        try:
            if self.client is None:
                for task in tasks:
                    on_done(_named(run_cell, task))
                    bar.set_postfix_str(task["label"], refresh=False)
                    bar.update()
            else:
                self._run_dask(run_cell, tasks, on_done, bar)
        finally:
            bar.close()

    def _run_dask(self, run_cell, tasks, on_done, bar):
        from distributed import as_completed

        logging.getLogger("distributed").setLevel(logging.ERROR)  # a dead worker is handled: no traceback noise
        futures = {}
        for rank, task in enumerate(tasks):
            threads = {} if self.fixed_threads is not None else self._threads
            future = self.client.submit(_on_worker, run_cell, task, threads, key=f"bzoo-{task['key']}",
                                        pure=False, priority=len(tasks) - rank)
            futures[future] = task
        try:
            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                except Exception as e:
                    e.add_note(f"in study cell {task['label']}")
                    raise
                on_done(result)
                bar.set_postfix_str(task["label"], refresh=False)
                bar.update()
        finally:
            for future in futures:
                future.cancel()


def probe(address):
    """Refuse at once a scheduler address that is malformed or where nothing listens (a TCP connect, no Dask)."""
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    try:
        scheme, location = parse_address(address, strict=True)
        if scheme not in ("tcp", "tls"):  # inproc:// (a LocalCluster of threads) and other transports: Dask checks
            return
        host, port = parse_host_port(location)
    except ValueError as e:
        raise StudyError(f"--scheduler {address} is not an address such as tcp://HOST:PORT ({e})") from None
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise StudyError(f"--scheduler {address}: nothing answered within {CONNECT_TIMEOUT} s "
                         f"({e.strerror or type(e).__name__})") from None


def _named(run_cell, task):
    try:
        return run_cell(task)
    except Exception as e:
        e.add_note(f"in study cell {task['label']}")
        raise


def _on_worker(run_cell, task, threads):
    """On a Dask worker: the torch threads meant for this worker, then the cell."""
    from distributed import get_worker

    address = get_worker().address
    if address in threads:
        task = {**task, "threads": threads[address]}
    return run_cell(task)
