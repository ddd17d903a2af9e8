"""What a folder holds, told by the files each verb writes: a run (``bzoo fit``), a study (``bzoo study``) or a
backbone (``bzoo pretrain``).

Every verb that writes a folder refuses one that holds another kind, before any work and with or without
``--overwrite``: ``--overwrite`` replaces output of the verb's own kind, never another's, so a study's cells are
never mixed with a fit's files, nor a backbone with either.
"""
from pathlib import Path

MARKERS = {  # kind -> the files that say a folder holds it
    "run": ("run.json", "metrics.json", "posterior.pt"),
    "study": ("study.json",),
    "backbone": ("backbone.pt", "data.json"),
}


def kind_of(path):
    """(kind, marker file) of what folder ``path`` holds, or (None, None) for a new, empty or foreign folder."""
    root = Path(path)
    if not root.is_dir():
        return None, None
    return next(((kind, m) for kind, markers in MARKERS.items() for m in markers if (root / m).is_file()), (None, None))


def refuse_other_kind(path, kind, error, flag="--out"):
    """A one-line ``error`` when folder ``path`` holds output of a kind other than ``kind``."""
    found, marker = kind_of(path)
    if found is not None and found != kind:
        raise error(f"{flag} '{path}' holds a {found} ({marker}), not a {kind}; choose another folder "
                    f"(--overwrite replaces a {kind}, never a {found})")
