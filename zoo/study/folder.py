"""The study folder: ``study.json`` (the configuration and its fingerprint) and one file pair per finished cell.

Layout of ``DIR``::

    study.json                               configuration, fingerprint, versions, command
    cells/<dataset>/seed<k>/<method>.json    one finished cell (metrics, selection, memory, key)
    cells/<dataset>/seed<k>/<method>.npz     its test predictive mean and labels
    results.md, results.json, *.png          the statistics, rewritten from the cells after each run

Every file is written to a temporary name, flushed to disk and renamed, the arrays
before the JSON, so a cell counts as finished only once both are whole. A cell file
is finished for this study when its ``key`` equals the cell's fingerprint; reruns skip
those and never write to them. ``StudyFolder.check`` refuses, before anything is
written, an ``--out`` that is a file, a non-empty folder that holds no study, or a
study of another configuration (naming what differs) unless ``overwrite``: then the
new ``study.json`` replaces the old, finished cells that the new configuration shares
are reused, the others are recomputed and replaced when done, and nothing is deleted.
"""
import datetime
import hashlib
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import psutil

from core.schema import Fields

from ..folder_kinds import refuse_other_kind
from ..runs import LOCK, to_plain
from .plan import StudyError, slug

NUMBER = (float, int)
CELL = Fields("study cell", {"dataset": str, "seed": int, "method": str, "key": str, "status": str, "checksum": str})
OK_CELL = Fields("study cell", {**CELL.types, **{m: (*NUMBER, type(None)) for m in ("accuracy", "nll", "ece", "brier")},
                                "fit_seconds": NUMBER, "seconds": NUMBER, "cpu_seconds": NUMBER})

MARKER = "study.json"


def atomic_write(path, data):
    """Write bytes to ``path`` via a temporary file in the same folder, fsync'd, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json(path, obj):
    return atomic_write(path, (json.dumps(to_plain(obj), indent=2) + "\n").encode())


def checksum(record, arrays):
    """sha256 of a cell's record (less its checksum) and its arrays' bytes: what ``read_cell`` trusts."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode() + arrays).hexdigest()


def differences(old, new):
    """What differs between two configurations, as short phrases naming each key (and rows by label)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "rows" and isinstance(a, dict) and isinstance(b, dict):
            changed = [label for label in b if label in a and a[label] != b[label]]
            if changed:
                out.append(f"row '{changed[0]}' has other options")
            continue
        if key == "data" and isinstance(a, dict) and isinstance(b, dict):
            changed = [d for d in b if d in a and a[d] != b[d]]
            if changed:
                out.append(f"the data of '{changed[0]}' changed")
            continue
        if isinstance(a, list) and isinstance(b, list):
            out.append(f"{key} {','.join(map(str, a))} -> {','.join(map(str, b))}")
        elif isinstance(a, dict) and isinstance(b, dict):
            keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            out.append(f"{key} ({', '.join(f'{k} {a.get(k)} -> {b.get(k)}' for k in keys)})")
        else:
            out.append(f"{key} {a} -> {b}")
    return out


def _locked(root):
    """The folder's ``RunLock`` (a StudyError naming the holder if another writer has it)."""
    from ..runs import RunFolderError, RunLock

    try:
        return RunLock(root).acquire()
    except RunFolderError as e:
        raise StudyError(str(e)) from None


class StudyFolder:
    """``StudyFolder.check(path, config, overwrite)`` refuses what cannot be used; ``open`` then writes ``study.json``."""

    def __init__(self, root, config, fingerprint, overwrite, resuming):
        self.root, self.config, self.fingerprint = Path(root), config, fingerprint
        self.overwrite, self.resuming = overwrite, resuming

    @classmethod
    def check(cls, path, config, fingerprint, overwrite=False):
        root = Path(path)
        if root.exists() and not root.is_dir():
            raise StudyError(f"--out '{root}' is a file, not a folder")
        refuse_other_kind(root, "study", StudyError)
        if root.is_dir():  # a study writing here now: refused before any work (``open`` takes the lock for real)
            _locked(root).release()
        marker = root / MARKER
        resuming = False
        if marker.is_file():
            try:
                old = json.loads(marker.read_text())
                stored = old["config"]
            except (OSError, ValueError, KeyError, TypeError):
                if not overwrite:
                    raise StudyError(f"--out '{root}': {MARKER} cannot be read; choose another folder or pass "
                                     f"--overwrite (nothing is deleted)") from None
                stored = None
            if stored is not None:
                diff = differences(stored, config)
                resuming = not diff
                if diff and not overwrite:
                    raise StudyError(f"--out '{root}' holds a study of another configuration ({'; '.join(diff)}); "
                                     f"choose another folder or pass --overwrite (shared cells are kept, "
                                     f"nothing is deleted)")
        elif root.is_dir() and any(p.name != LOCK for p in root.iterdir()) and not overwrite:
            raise StudyError(f"--out '{root}' is not empty and holds no study ({MARKER}); choose a new or empty "
                             f"folder, or pass --overwrite to add a study to it (nothing is deleted)")
        return cls(root, config, fingerprint, overwrite, resuming)

    def open(self):
        """Create the folder, take its lock (a second writer is refused, naming the first) and write ``study.json``
        (left untouched when resuming the same configuration); ``close`` releases the lock."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StudyError(f"cannot create --out '{self.root}': {e.strerror}") from None
        self.lock = _locked(self.root)
        for stale in self.root.glob("cells/*/*/.*.tmp"):  # left by a process killed mid-write
            if not psutil.pid_exists(int(stale.name.rsplit(".", 2)[-2])):
                stale.unlink(missing_ok=True)
        if not self.resuming:
            import zoo

            write_json(self.root / MARKER, {
                "fingerprint": self.fingerprint, "config": self.config, "zoo": zoo.__version__,
                "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        return self

    def close(self):
        if getattr(self, "lock", None) is not None:
            self.lock.release()

    def cell_path(self, dataset, seed, method, suffix=".json"):
        return self.root / "cells" / slug(dataset) / f"seed{seed}" / (slug(method) + suffix)

    def read_cell(self, dataset, seed, method, key):
        """The finished cell's record (with ``arrays`` loaded lazily by ``arrays``), or None if not finished here.

        A cell whose bytes do not match its checksum (edited, damaged, or written before cells were signed) is
        not trusted: a warning names it, and the study recomputes it."""
        path = self.cell_path(dataset, seed, method)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        arrays = self.cell_path(dataset, seed, method, ".npz")
        if record.get("status") == "ok" and not arrays.is_file():
            return None
        if record.get("checksum") != checksum(record, arrays.read_bytes() if arrays.is_file() else b""):
            warnings.warn(f"study cell '{path}' does not match its checksum (edited or damaged); it is recomputed",
                          stacklevel=2)
            return None
        try:  # signed but not a cell this code can read (written by another version, or by hand and re-signed)
            (OK_CELL if record.get("status") == "ok" else CELL).check(record, path, StudyError)
        except StudyError as e:
            warnings.warn(f"{e}; it is recomputed", stacklevel=2)
            return None
        return record

    def arrays(self, record):
        with np.load(self.cell_path(record["dataset"], record["seed"], record["method"], ".npz")) as f:
            return {k: f[k] for k in f.files}

    def write_cell(self, result):
        """Write a cell: its arrays first, then its record (whose presence marks the cell finished)."""
        record = to_plain(result["record"])
        where = (record["dataset"], record["seed"], record["method"])
        arrays = b""
        if result.get("arrays"):
            buffer = io.BytesIO()
            np.savez(buffer, **result["arrays"])
            arrays = buffer.getvalue()
            atomic_write(self.cell_path(*where, ".npz"), arrays)
        write_json(self.cell_path(*where), {**record, "checksum": checksum(record, arrays)})

    def path(self, name):
        return self.root / name
