"""Honest selection: a row's hyperparameters chosen on a validation split carved from training, never on test.

``validation_split(train, seed, fraction)`` holds out a stratified ``fraction`` of the
training split (per class: round(fraction * n), at least one and at most n - 1, so each
class with two or more series is in both parts; a class with one series stays in the
fitting part). ``candidates(row)`` lists the grid a row's ``select`` names (see
``zoo/recipes.py``); ``with_values(row, values)`` is the row with one candidate's values
in place. ``choose(scores)`` is the index of the lowest validation score, the first on ties.
"""
import itertools
import math

import torch

from ..data import Split

MODEL_PREFIX = "model."
ROW_KEYS = ("prior", "attention_prior")  # whole specs, set on the row itself


def candidates(row):
    """Every combination of the row's ``select`` lists, as dicts key -> value, in grid order ([{}] if none)."""
    grid = row.get("select") or {}
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def with_values(row, values):
    """The row with a candidate's values set: fit options, ``model.<option>``, ``prior`` or ``attention_prior``."""
    row = {**row, "model": dict(row.get("model", {})), "options": dict(row.get("options", {}))}
    row.pop("select", None)
    for key, value in values.items():
        if key.startswith(MODEL_PREFIX):
            row["model"][key[len(MODEL_PREFIX):]] = value
        elif key in ROW_KEYS:
            row[key] = value
        else:
            row["options"][key] = value
    return row


def check_row(row):
    """A one-line ValueError for a ``select`` that cannot work (not a dict of non-empty lists)."""
    grid = row.get("select")
    if grid is None:
        return
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"row '{row['label']}': select must be a non-empty dict of key -> [candidates]")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"row '{row['label']}': select['{key}'] must be a non-empty list of candidates")
        if key.startswith(MODEL_PREFIX) and len(key) == len(MODEL_PREFIX):
            raise ValueError(f"row '{row['label']}': select key 'model.' names no model option")


def validation_split(train, seed, fraction):
    """``(fit, validation, indices)``: a stratified split of ``train`` drawn from ``seed``.

    Per class of n series, round(fraction * n) go to validation, clipped to [1, n - 1];
    a class with a single series keeps it for fitting. ``indices`` are the validation
    positions in ``train`` (sorted), so a test can check they never reach the fit.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"validation fraction must be between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    y = train.y.cpu()
    held = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        n = len(members)
        take = min(max(1, math.floor(fraction * n + 0.5)), n - 1)
        held.append(members[torch.randperm(n, generator=generator)[:take]])
    val = torch.sort(torch.cat(held)).values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val] = False
    fit_idx = torch.nonzero(keep).flatten()
    return subset(train, fit_idx), subset(train, val), val


def subset(split, index):
    index = index.to(split.y.device)
    return Split(split.x[index], split.y[index], None if split.mask is None else split.mask[index])


def choose(scores):
    """Index of the lowest finite score (the first of equals); None when no score is finite."""
    best = None
    for i, score in enumerate(scores):
        if math.isfinite(score) and (best is None or score < scores[best]):
            best = i
    return best
