"""The model-free OOD detector of a dataset, computed once per dataset and kept on disk.

A reader of an OOD AUROC needs to know how hard the OOD set is. ``zoo.evaluation.reference_detector`` scores
each input by its distance to the 5th nearest training series (in input space and in MiniRocket features); it
depends on the dataset alone, so it is computed once per dataset, not per cell or fit, and kept as
``<folder>/<dataset>.json`` keyed by the data's fingerprint and ``VERSION`` (bump it when the detector changes):
a study keeps it in its own folder (``detectors/``, committed with the sweep), ``bzoo fit`` in the user's cache.
"""
import json
import os
from pathlib import Path

from .folder import write_json
from .plan import data_fingerprint, load_dataset, slug

VERSION = 1


def default_cache():
    return Path(os.environ.get("BZOO_CACHE", Path.home() / ".cache" / "bzoo")) / "detectors"


def detector_auroc(dataset, folder, fingerprint=None):
    """{"input": AUROC, "minirocket": AUROC} of ``dataset``'s far-OOD set: read from ``folder``, else from the
    user's cache, else computed; written to both."""
    from ..data.ood import ood_inputs
    from ..evaluation import reference_detector

    key = {"fingerprint": fingerprint or data_fingerprint(dataset), "version": VERSION}
    paths = [Path(where) / f"{slug(dataset.name)}.json" for where in dict.fromkeys([Path(folder), default_cache()])]
    auroc = next((a for a in map(lambda p: stored(p, key), paths) if a is not None), None)
    if auroc is None:
        auroc = reference_detector(dataset, ood_inputs(dataset))
    for path in paths:
        if stored(path, key) is None:
            try:
                write_json(path, {"key": key, "auroc": auroc})
            except OSError:
                pass  # a read-only cache costs a recomputation next time, nothing else
    return auroc


def stored(path, key):
    """The AUROCs kept at ``path`` under ``key``, or None."""
    try:
        kept = json.loads(Path(path).read_text())
        return kept["auroc"] if kept.get("key") == key else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def detector_aurocs(plan, folder):
    """dataset id -> the detector's AUROCs, for every dataset of the plan, kept in the study's ``detectors/``."""
    return {entry["id"]: detector_auroc(load_dataset(entry["ref"]), folder.path("detectors"), entry["fingerprint"])
            for entry in plan.datasets}
