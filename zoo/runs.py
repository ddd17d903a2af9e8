"""Run folders: where ``bzoo`` writes a run; locked while written, replaced whole, and no user's file lost.

``RunFolder(path, overwrite=False)``, used as a context manager, is one run's output folder:

- It is checked before any work: a path that is a file, a folder that holds a run
  (any of ``zoo.folder_kinds.MARKERS["run"]``) without ``overwrite``, a folder that cannot be written
  (tested by writing), or one that another run is writing (``RunLock``) is refused
  with one line naming the folder.
- It is locked while the run writes: a second run into it is refused; a lock left by
  a process that died is free again (the operating system releases it).
- With ``overwrite``, a folder that holds a run is replaced whole: the new run writes
  into a fresh folder beside it, which is swapped in when the run completes, so no
  file of the previous run remains. Files that were not the previous run's (it
  lists its own in ``run.json``) are carried over.
- A run that fails leaves no partial run and no empty folder it created: what it
  wrote is removed, except files it asked to keep (a checkpoint to resume from).
- ``record`` writes ``run.json`` (seed, versions, configuration, command line and the
  list of files the run wrote) as the run's last file and completes the run.

``rescue(save, name)`` saves a result somewhere outside a run folder that could not be
written (``bzoo fit`` saves the posterior there and prints the path).
"""
import datetime
import json
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from .folder_kinds import MARKERS, refuse_other_kind

PACKAGES = ("torch", "pyro-ppl", "arviz", "numpy", "numba")
LOCK = ".bzoo.lock"
PROBE = ".bzoo.probe"


class RunFolderError(ValueError):
    """The output folder cannot be used (it holds a run, is locked, is not a writable folder); the message names it."""


def versions():
    """Versions of Python, the numerical stack and this library."""
    from importlib import metadata

    import zoo

    out = {"python": platform.python_version(), "zoo": zoo.__version__}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def to_plain(obj):
    """JSON-ready copy: tensors and arrays become lists, paths strings, non-finite floats strings."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_plain(v) for v in obj]
    if hasattr(obj, "tolist"):  # torch tensors, numpy arrays and scalars
        return to_plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "nan", "inf": strict JSON has no literal for them
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(to_plain(obj), indent=2) + "\n")
    os.replace(tmp, path)
    return path


class RunLock:
    """An exclusive lock on a folder while a run writes into it: ``with RunLock(folder): ...``.

    The lock is ``folder/.bzoo.lock`` held with ``flock``; it records the owner (host,
    pid, start time) for the message a second run gets. A lock file left behind by a
    process that died is not held by anyone, so it is taken over; the file is removed
    on release. The folder must exist. Also for other writers of folders (the study).
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self.fd = None

    def acquire(self):
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise RunFolderError(f"output folder '{self.folder}' cannot be written: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunFolderError(f"output folder '{self.folder}' is being written by another run ({owner}); "
                                     f"wait for it to finish or choose another folder") from None
            try:  # the file we locked must still be the one at the path (a releasing run unlinks it)
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "since": _now(), "command": " ".join(sys.argv[:3])}).encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    @property
    def held(self):
        return self.fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_owner(fd):
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
        return "owner unknown"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


RESUMABLE = ("checkpoint.pt",)  # what a died --overwrite run's fresh folder passes on to the next: its checkpoint


def clear(folder, keep=()):
    """Remove everything in ``folder`` but the files named in ``keep``."""
    for p in folder.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


class RunFolder:
    """An output folder for one run: ``with RunFolder("runs/fit1", overwrite=False) as out: ...``.

    ``path(name)`` gives a file path in the folder being written (``root``; for an
    overwrite, the fresh folder until the run completes), ``write_json(name, obj)``
    writes atomically, ``copy_in(src, name)`` copies a file the run depends on into
    the folder, ``record(config, seed)`` writes ``run.json`` and completes the run.
    Leaving the ``with`` block by an exception removes what the run wrote (but files
    written with ``path(name, keep=True)``) and a folder it created; leaving it
    normally completes the run if ``record`` has not. ``target`` is the final folder.
    """

    def __init__(self, path, overwrite=False):
        self.target = Path(path)
        if not str(path).strip():
            raise RunFolderError("output folder must be a path, got an empty string")
        if self.target.exists() and not self.target.is_dir():
            raise RunFolderError(f"output folder '{self.target}' exists and is not a folder")
        refuse_other_kind(self.target, "run", RunFolderError)
        self.written, self.kept, self.done = [], set(), False
        missing = [p for p in (self.target, *self.target.parents) if not p.exists()]
        self.created = None  # the topmost folder this run created, removed again if the run fails
        try:
            self.target.mkdir(parents=True)
            self.created = missing[-1] if missing else self.target
        except FileExistsError:
            pass
        except OSError as e:
            raise RunFolderError(f"cannot create output folder '{self.target}': {e.strerror}") from None
        self.lock = RunLock(self.target)
        try:
            self.lock.acquire()
            found = [m for m in MARKERS["run"] if (self.target / m).exists()]
            if found and not overwrite:
                raise RunFolderError(f"output folder '{self.target}' already holds a run ({found[0]}); choose "
                                     f"another folder or pass --overwrite (the run is replaced whole; files that "
                                     f"are not the run's are kept)")
            self.root = self.target
            if found:  # overwrite: a fresh folder beside it, swapped in when the run completes
                self.root = self.target.parent / f".{self.target.name}.bzoo-new"
                try:
                    if self.root.exists():  # left by a run that died (we hold the lock): keep what resumes it
                        clear(self.root, keep=RESUMABLE)
                    self.root.mkdir(exist_ok=True)
                except OSError as e:
                    raise RunFolderError(f"cannot create the fresh folder '{self.root}' that replaces the run in "
                                         f"'{self.target}': {e.strerror}") from None
            probe(self.root)
        except BaseException:
            self.lock.release()
            self._remove_created()
            raise

    def path(self, name, keep=False):
        """Path of ``name`` inside the folder (sub-folders are created); recorded as written by this run.

        ``keep=True`` marks a file that survives a failed run (a checkpoint to resume from).
        """
        p = self.root / name
        if self.root.resolve() not in p.resolve().parents:
            raise RunFolderError(f"file name '{name}' points outside the run folder '{self.target}'")
        p.parent.mkdir(parents=True, exist_ok=True)
        if p not in self.written:
            self.written.append(p)
        if keep:
            self.kept.add(p)
        return p

    def write_json(self, name, obj):
        """Write ``obj`` as indented JSON, atomically (a crash never leaves half a file)."""
        return write_json(self.path(name), obj)

    def copy_in(self, source, name):
        """Copy ``source`` into the folder as ``name`` (a file the run needs, so the folder stands alone)."""
        shutil.copyfile(source, self.path(name))
        return name

    def record(self, config, seed):
        """Write ``run.json`` (seed, versions, configuration, command line, time, the run's files) and complete."""
        files = sorted({str(p.relative_to(self.root)) for p in self.written} | {"run.json"})
        path = self.write_json("run.json", {
            "seed": seed,
            "versions": versions(),
            "config": config,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "platform": platform.platform(),
            "created": _now(),
            "files": files,
        })
        self.commit()
        return self.target / path.name

    def commit(self):
        """Complete the run: swap a fresh (overwrite) folder into place, release the lock."""
        if self.done:
            return
        if self.root != self.target:
            old = self.target.parent / f".{self.target.name}.bzoo-old"
            if old.exists():
                shutil.rmtree(old)
            owned = run_files(self.target)
            for entry in self.target.iterdir():  # what is not the previous run's comes along
                if entry.name not in owned | {LOCK, PROBE} and not (self.root / entry.name).exists():
                    shutil.move(str(entry), str(self.root / entry.name))
            os.rename(self.target, old)
            os.rename(self.root, self.target)
            self.written = [self.target / p.relative_to(self.root) for p in self.written]
            self.root, self.lock.path = self.target, old / LOCK  # the lock file moved with the old folder
            self.lock.release()
            shutil.rmtree(old, ignore_errors=True)
        self.lock.release()
        self.done = True

    def abort(self):
        """Undo a failed run: remove what it wrote (not files marked ``keep``) and any folder it created empty."""
        if self.done:
            return
        for p in self.written:
            if p not in self.kept and p.is_file():
                p.unlink()
        for p in sorted({q.parent for q in self.written}, key=lambda q: len(q.parts), reverse=True):
            if p != self.root and p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        if self.root != self.target and not any(self.root.iterdir()):
            self.root.rmdir()
        self.lock.release()
        self._remove_created()
        self.done = True

    def _remove_created(self):
        folder = self.target
        while self.created is not None and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            if folder == self.created:
                break
            folder = folder.parent

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if kind is None:
            self.commit()
        else:
            self.abort()

    def __truediv__(self, name):
        return self.path(name)

    def __repr__(self):
        return f"RunFolder('{self.target}')"


def probe(folder):
    """Write and remove a small file: the only sure test that ``folder`` can be written (permissions, read-only
    file systems, a full disk)."""
    p = Path(folder) / PROBE
    try:
        p.write_bytes(b"bzoo")
        p.unlink()
    except OSError as e:
        raise RunFolderError(f"output folder '{folder}' cannot be written: {e.strerror}") from None


def run_files(folder):
    """Top-level names in ``folder`` that its run wrote (``run.json``'s ``files``; none known without one)."""
    try:
        files = json.loads((Path(folder) / "run.json").read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {Path(f).parts[0] for f in files if f}


def claim(folder, names):
    """Add ``names`` (files or sub-folders a later command wrote for this run, e.g. ``diagnose``) to the run's
    list in ``run.json``, so an overwrite replaces them with the run."""
    path = Path(folder) / "run.json"
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(run, dict) and isinstance(run.get("files"), list):
        run["files"] = sorted(set(run["files"]) | set(names))
        write_json(path, run)


def rescue(save, name):
    """Call ``save(path)`` with ``path`` in the first folder outside a run that takes it; returns the path or None.

    Tried in order: ``~/.cache/bzoo/rescued`` and the system's temporary folder, each in a
    sub-folder named by time and process, so nothing earlier is overwritten.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    for base in (Path.home() / ".cache" / "bzoo" / "rescued", Path(tempfile.gettempdir()) / "bzoo-rescued"):
        try:
            folder = base / stamp
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            save(path)
            return path
        except Exception:  # noqa: BLE001 - any failure here means: try the next place
            continue
    return None
