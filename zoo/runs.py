"""Run folders: where ``bzoo`` writes a run, without ever clobbering or deleting a user's files.

A folder "holds a run" when it contains any of ``RUN_MARKERS``. ``RunFolder`` refuses
such a folder unless ``overwrite=True``, and even then only rewrites the file names
it is asked to write: it never deletes anything. ``record`` writes ``run.json`` with
the seed, library versions, full configuration and command line, so a run can be
reproduced from its folder alone.
"""
import datetime
import json
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

RUN_MARKERS = ("run.json", "metrics.json", "posterior.pt")
PACKAGES = ("torch", "pyro-ppl", "arviz", "numpy")


class RunFolderError(ValueError):
    """The output folder cannot be used (it holds a run, or is not a folder); the message names it."""


def versions():
    """Versions of Python, the numerical stack and this library."""
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


class RunFolder:
    """An output folder for one run: ``RunFolder("runs/fit1", overwrite=False)``.

    Creates the folder if needed; refuses one that already holds a run (names the
    file found) unless ``overwrite``. ``path(name)`` gives a file path inside it,
    ``write_json(name, obj)`` writes atomically, ``record(config, seed)`` writes
    ``run.json``. ``written`` lists the files this object wrote.
    """

    def __init__(self, path, overwrite=False):
        self.root = Path(path)
        if self.root.exists() and not self.root.is_dir():
            raise RunFolderError(f"output folder '{self.root}' exists and is not a folder")
        found = [m for m in RUN_MARKERS if (self.root / m).exists()]
        if found and not overwrite:
            raise RunFolderError(f"output folder '{self.root}' already holds a run ({found[0]}); "
                                 f"choose another folder or pass --overwrite (files are replaced, never deleted)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunFolderError(f"cannot create output folder '{self.root}': {e.strerror}") from None
        self.written = []

    def path(self, name):
        """Path of ``name`` inside the folder (sub-folders are created); records it as written by us."""
        p = self.root / name
        if self.root.resolve() not in p.resolve().parents:
            raise RunFolderError(f"file name '{name}' points outside the run folder '{self.root}'")
        p.parent.mkdir(parents=True, exist_ok=True)
        if p not in self.written:
            self.written.append(p)
        return p

    def write_json(self, name, obj):
        """Write ``obj`` as indented JSON, atomically (a crash never leaves half a file)."""
        p = self.path(name)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(to_plain(obj), indent=2) + "\n")
        os.replace(tmp, p)
        return p

    def record(self, config, seed):
        """Write ``run.json``: seed, versions, full configuration, command line and time."""
        return self.write_json("run.json", {
            "seed": seed,
            "versions": versions(),
            "config": config,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "platform": platform.platform(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })

    def __truediv__(self, name):
        return self.path(name)

    def __repr__(self):
        return f"RunFolder('{self.root}')"
