"""The grid of a study: datasets x seeds x methods, checked before any cell runs, and its fingerprints.

``make_plan`` turns what the user asked (lists of datasets, seeds and methods, quick or
not, overrides) into a ``Plan``: every dataset loaded once to fingerprint its data,
every row resolved to the exact options its cells will use. ``Plan.config()`` is what
``study.json`` stores; ``Plan.key(dataset, seed, row)`` is a cell's own fingerprint, so
a finished cell is reused exactly when everything it depends on is unchanged.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core import schema

from .. import data as zdata
from .. import recipes, runs
from ..options import SEED, STUDY
from ..runs import to_plain
from .select import check_row

VERSIONED = ("zoo", "torch", "pyro-ppl", "numpy", "numba")  # numba: the Gamma kernels; a fit on an edge can flip
# between environments (docs/results.md), so a cell from other versions is rerun, not reused
PREDICT_CHUNK = 512 << 20  # bytes per prediction chunk: fixed, so chunking (and the draws) never depend on free memory


class StudyError(ValueError):
    """A study cannot start as asked (a list, a flag, the output folder); the message names the culprit."""


def spell(name):
    """The study's messages name its flags (``--jobs``); an option whose flag is its negation by its Python name."""
    return schema.flag(name) if STUDY[name].cli is None else name


def parse_list(text, flag):
    """``"a, b"`` -> ["a", "b"] (one item alone, a number among them, is a list of one); refuses an empty list and
    duplicates, naming ``flag``."""
    if schema.is_integer(text) or isinstance(text, (float, os.PathLike)):  # numpy ints and Paths too: one item
        text = [text]
    if not isinstance(text, str) and not hasattr(text, "__iter__"):
        raise StudyError(f"{flag} must be a comma-separated string or a list, got {type(text).__name__}")
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else [str(t) for t in text])]
    items = [t for t in items if t]
    if not items:
        raise StudyError(f"{flag} is empty; give at least one item")
    seen = set()
    for item in items:
        if item.lower() in seen:
            raise StudyError(f"{flag} lists '{item}' twice")
        seen.add(item.lower())
    return items


def parse_seeds(text):
    seeds = []
    for item in parse_list(text, "--seeds"):
        if not re.fullmatch(r"\d+", item) or int(item) > SEED.high:
            raise StudyError(f"--seeds: '{item}' is not a seed (an integer >= 0 and <= {SEED.high})")
        seeds.append(int(item))
    if len(set(seeds)) < len(seeds):
        raise StudyError(f"--seeds lists {next(s for s in seeds if seeds.count(s) > 1)} twice")
    return seeds


def slug(text):
    """A file-system name for a label or dataset: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9._]+", "-", str(text).lower()).strip("-") or "x"


def digest(obj, n=16):
    return hashlib.sha256(json.dumps(to_plain(obj), sort_keys=True).encode()).hexdigest()[:n]


def data_fingerprint(dataset):
    """sha256 over the tensors of both splits (values, labels, masks) and the class list."""
    h = hashlib.sha256()
    for split in (dataset.train, dataset.test):
        for t in (split.x, split.y, split.mask):
            if t is not None:
                h.update(str((t.dtype, tuple(t.shape))).encode())
                h.update(t.contiguous().numpy().tobytes())
    h.update(json.dumps([str(c) for c in dataset.classes]).encode())
    return h.hexdigest()[:16]


def load_dataset(ref):
    """A shipped dataset by name, or a user's ``.npz``/``.csv`` file by path; ``"NAME:held-out"``: less its last
    class, which becomes its near-OOD set (``zoo.data.near_ood``)."""
    from ..data.near_ood import held_out, parse

    ref, near = parse(ref)
    dataset = zdata.load_file(ref) if Path(ref).suffix.lower() in (".npz", ".csv") else zdata.load(ref)
    return held_out(dataset) if near else dataset


def shipped_names():
    return list(zdata.available())


def dataset_entry(ref, selects=False):
    """``{"id", "ref", "fingerprint", "shapes"}`` of one dataset, loaded once here. ``selects``: a row chooses its
    settings on a validation split, which takes series only from classes of 2 or more (``select.validation_split``)."""
    try:
        dataset = load_dataset(ref)
    except ValueError as e:
        raise StudyError(f"--datasets: {e}") from None
    if selects and int(torch.bincount(dataset.train.y).max()) < 2:
        raise StudyError(f"--datasets: '{ref}' has one training series per class, too few to hold out the validation "
                         f"split the rows select their settings on; give it more series")
    is_file = Path(ref).suffix.lower() in (".npz", ".csv")
    return {"id": slug(Path(ref).stem) if is_file else dataset.name,
            "ref": str(Path(ref).resolve()) if is_file else dataset.name,
            "fingerprint": data_fingerprint(dataset), "shapes": shapes_of(dataset)}


def shapes_of(dataset):
    """What a model and a memory estimate need to know of a dataset: sizes, length, channels, classes, vocabulary."""
    vocab = dataset.vocab_size  # from the training split alone
    return {"n_train": len(dataset.train), "n_test": len(dataset.test), "length": dataset.max_len,
            "channels": dataset.input_dim or 1, "classes": dataset.num_classes, "tokens": dataset.tokens,
            "vocab": vocab}


def methods_offered(reference=False):
    """Every row ``--methods`` may name; the LoRA rows are offered but not run by default (each dataset first
    needs its own pretrained backbone, up to 15 minutes)."""
    return [*recipes.STUDY, *recipes.STUDY_PEERS, *recipes.LORA_STUDY, *([recipes.REFERENCE] if reference else [])]


def resolve_row(row):
    """A row with every default written out (what its cells depend on): model size, prior, fit options.

    A peer gets the MAP row's steps and lr where its fitter takes them, and its fitter's other keyword
    defaults written out under ``defaults`` (``zoo.study.peers``; the study may still set some of them,
    such as ``num_samples`` or a token budget's ``batch_size``).
    """
    import inspect

    from .peers import PEERS

    model = {**recipes.MODEL, **row.get("model", {})}
    if "peer" in row:
        accepted = inspect.signature(PEERS[row["peer"]]).parameters
        options = {**{k: v for k, v in recipes.FIT["map"].items() if k in accepted}, **row.get("options", {})}
        defaults = {k: p.default for k, p in accepted.items()  # in the key, so a changed default reruns the cell
                    if p.default is not p.empty and k not in options and k not in ("model_options", "seed", "device")}
        check_row(row)
        return {"label": row["label"], "peer": row["peer"], "model": model, "options": options,
                "defaults": defaults, "select": row.get("select"),
                **({"ranked": False} if row.get("ranked") is False else {})}
    check_row(row)
    if row.get("adapter"):  # the backbone's architecture, not MODEL, sizes an adapter row
        return {"label": row["label"], "guide": row["guide"], "bayes": row.get("bayes", "weights"),
                "prior": row.get("prior", recipes.PRIOR), "adapter": row["adapter"], "backbone": row["backbone"],
                "model": row.get("model", {}), "options": recipes.fit_options(row["guide"], **row.get("options", {})),
                "select": row.get("select")}
    return {"label": row["label"], "guide": row["guide"], "bayes": row.get("bayes", "weights"),
            "prior": row.get("prior", recipes.PRIOR), "attention_prior": row.get("attention_prior"),
            "model": model, "options": recipes.fit_options(row["guide"], **row.get("options", {})),
            "select": row.get("select"), **({"ranked": False} if row.get("ranked") is False else {}),
            **({"centre": row["centre"]} if row.get("centre") else {})}


@dataclass
class Plan:
    datasets: list  # dataset entries
    seeds: list
    rows: list  # resolved rows and peers
    evaluation: dict
    profile: str  # "full" (the recipes), "sweep" (recipes.SWEEP), "quick" (recipes.QUICK) or "main" (MAIN_BUDGET)
    device: str = "cpu"
    versions: dict = field(default_factory=dict)
    arm: str | None = None  # "reference": every row at the reference's network size; "near-ood": a class held out

    def config(self):
        """Everything the cells depend on; ``study.json`` stores it and its digest."""
        return to_plain({"datasets": [d["id"] for d in self.datasets],
                         "data": {d["id"]: d["fingerprint"] for d in self.datasets},
                         "seeds": self.seeds, "methods": [r["label"] for r in self.rows],
                         "rows": {r["label"]: r for r in self.rows}, "evaluation": self.evaluation,
                         "profile": self.profile, "device": self.device, "versions": self.versions,
                         **({"arm": self.arm} if self.arm else {})})

    def fingerprint(self):
        return digest(self.config())

    def key(self, dataset, seed, row):
        """The fingerprint of one cell: its data, seed, resolved row, evaluation settings and versions."""
        return digest({"data": dataset["fingerprint"], "seed": seed, "row": row, "evaluation": self.evaluation,
                       "device": self.device, "versions": self.versions})

    def cells(self):
        """(dataset entry, seed, row) in grid order: dataset, then seed, then method."""
        return [(d, s, r) for d in self.datasets for s in self.seeds for r in self.rows]


def versions():
    """The versions a cell's numbers depend on: this library, torch, Pyro, NumPy and numba."""
    return {k: v for k, v in runs.versions().items() if k in VERSIONED}


PROFILES = {"full": ({}, None), "sweep": (recipes.SWEEP, recipes.SWEEP_GRID),
            "quick": (recipes.QUICK, recipes.QUICK_GRID), "main": (recipes.MAIN_BUDGET, recipes.QUICK_GRID)}  # a budget's evaluation settings and grid size


def make_plan(datasets=None, seeds=None, methods=None, quick=False, peers=True, reference=False, steps_scale=None,
              num_samples=None, device="cpu", chunk=PREDICT_CHUNK, sweep=False, reference_arm=False, near_ood=False,
              full=False):
    """Check every list and option and build the Plan; any problem is a one-line StudyError naming it.

    Names, seeds, methods and options are checked before any dataset is loaded. ``quick`` and
    ``sweep`` are budgets (``recipes.QUICK``, ``recipes.SWEEP``): fewer steps and draws, thinner grids. ``full``
    is every row's full recipe. With none of them, the plan is the main job ("main"): ``recipes.MAIN_BUDGET``, and
    by default only the rows of the verdicts (``recipes.MAIN``).
    ``reference_arm``: every row and peer at the reference's network size, with the reference row, so
    a distance to the reference measures approximation error on one network (``at_reference_size``).
    ``near_ood``: each dataset less its last class, whose test series are its OOD set (``zoo.data.near_ood``;
    with ``datasets="all"``, the shipped sets of 3 or more classes).
    """
    asked = dict(datasets=datasets, seeds=seeds, methods=methods, quick=quick, sweep=sweep, full=full, peers=peers,
                 reference=reference, reference_arm=reference_arm, near_ood=near_ood, steps_scale=steps_scale,
                 num_samples=num_samples, device=device)
    STUDY.check(asked, StudyError, spell)
    reference = reference or reference_arm
    profile = "quick" if quick else "sweep" if sweep else "full" if full else "main"
    budget, grid = PROFILES[profile]
    names = dataset_names(datasets)
    if near_ood:
        names = held_out_names(names, all_shipped=str(datasets).strip().lower() == "all")
    seeds = parse_seeds(seeds if seeds is not None else "0")
    rows = chosen_rows(methods, peers, reference, reference_arm, profile, grid)
    evaluation = {**recipes.EVALUATION, "steps_scale": 1.0, "predict_chunk": int(chunk)}
    evaluation.update(budget)
    if steps_scale is not None:
        evaluation["steps_scale"] = float(steps_scale)
    if num_samples is not None:
        evaluation["samples"] = int(num_samples)
    entries = [dataset_entry(n, selects=any(r.get("select") for r in rows)) for n in names]
    ids = [e["id"] for e in entries]
    for i in ids:
        if ids.count(i) > 1:
            raise StudyError(f"--datasets names dataset '{i}' twice")
    return Plan(entries, seeds, rows, evaluation, profile, str(torch.device(device)), versions(),
                "reference" if reference_arm else "near-ood" if near_ood else None)


def chosen_rows(methods, peers, reference, reference_arm, profile, grid):
    """The study's rows, resolved: ``methods`` by label (default: the main job's rows, or all but the adapter rows with
    a budget flag; the peers unless ``peers`` is false), at the reference's size in the reference arm, their
    packages present, their selection grids thinned to ``grid`` values."""
    offered = methods_offered(reference)
    if methods is None:
        rows = [r for r in offered if (peers or "peer" not in r) and "adapter" not in r
                and (profile != "main" or r["label"] in recipes.MAIN or r["label"] == recipes.REFERENCE["label"])]
    else:
        by_label = {r["label"].lower(): r for r in offered}
        wanted = parse_list(methods, "--methods")
        unknown = [m for m in wanted if m.lower() not in by_label]
        if unknown:
            raise StudyError(f"--methods: unknown method '{unknown[0]}'; methods are: "
                             f"{', '.join(r['label'] for r in offered)}")
        rows = [by_label[m.lower()] for m in wanted]
    if reference_arm:
        rows = at_reference_size(rows)
    check_packages(rows)
    try:
        rows = [resolve_row(r) for r in rows]
    except ValueError as e:
        raise StudyError(str(e)) from None
    if grid is not None:
        rows = [{**r, "select": {k: thin(v, grid) for k, v in r["select"].items()}} if r.get("select") else r
                for r in rows]
    slugs = [slug(r["label"]) for r in rows]
    for r, s in zip(rows, slugs):
        if slugs.count(s) > 1:
            raise StudyError(f"two methods share the file name '{s}' (one is '{r['label']}'); rename a row")
    return rows


OPTIONAL = {"laplace-torch": ("laplace", "laplace-torch"), "laplace_lora": ("laplace", "laplace-torch")}
# a peer or guide -> (the module it imports, the package that provides it): `make peers` installs them


def check_packages(rows):
    """Refuse, before the study starts, a row whose optional package is missing, naming the row and the fix."""
    import importlib.util

    for row in rows:
        need = OPTIONAL.get(row.get("peer") or row.get("guide"))
        if need and importlib.util.find_spec(need[0]) is None:
            raise StudyError(f"row '{row['label']}' needs {need[1]}, which is not installed: run `make peers` "
                             f"(it installs it beside the CPU torch), or leave the row out (--no-peers or --methods)")


def at_reference_size(rows):
    """The rows at the reference's network size (``recipes.REFERENCE["model"]``), the reference row last; adapter rows,
    whose network is their backbone's, are refused."""
    label = recipes.REFERENCE["label"]
    adapters = [r["label"] for r in rows if r.get("adapter")]
    if adapters:
        raise StudyError(f"--reference-arm: '{adapters[0]}' is an adapter row, whose network is its backbone's; "
                         f"leave it out")
    sized = [{**r, "model": {**r.get("model", {}), **recipes.REFERENCE["model"]}} for r in rows if r["label"] != label]
    return [*sized, recipes.REFERENCE]


def thin(values, most):
    """At most ``most`` of a grid's values, spread over it, the ends kept: [1, .3, .1, .03, .01] -> [1, .1, .01]
    (``most=3``), [1, .01] (``most=2``)."""
    values = list(values)
    if len(values) <= most:
        return values
    return [values[round(i * (len(values) - 1) / (most - 1))] for i in range(most)]


def held_out_names(names, all_shipped):
    """The near-OOD references of ``names`` (``"NAME:held-out"``); for every shipped set, those of >= 3 classes."""
    from ..data.near_ood import SUFFIX

    if all_shipped:
        names = [n for n in names if len(zdata.info(n).classes) >= 3]
    return [n + SUFFIX for n in names]


def dataset_names(datasets):
    """The asked datasets as shipped names or file paths, each checked to exist (``all``: every shipped one)."""
    names = parse_list(datasets if datasets is not None else zdata.DEFAULT_DATASET, "--datasets")
    shipped = shipped_names()
    if len(names) == 1 and names[0].lower() == "all":
        return shipped
    known = {n.lower() for n in shipped}
    for name in names:
        if name.lower() == "all":
            raise StudyError("--datasets: 'all' stands alone; it means every shipped dataset")
        if Path(name).suffix.lower() in (".npz", ".csv"):
            if not Path(name).is_file():
                raise StudyError(f"--datasets: data file '{name}' does not exist")
        elif name.lower() not in known:
            raise StudyError(f"--datasets: unknown dataset '{name}'; shipped: {', '.join(shipped)} "
                             f"(or a .npz/.csv file)")
    return names
