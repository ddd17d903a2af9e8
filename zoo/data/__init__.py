"""Data: the datasets that ship inside packages, a user's own files, and out-of-distribution inputs.

``load(name)`` returns a ``Dataset`` of train and test ``Split``s; ``load_file(path)``
reads a user's ``.npz`` or ``.csv``; ``ood.ood_inputs(dataset)`` gives inputs from
elsewhere to test uncertainty on.
"""
from inference.checks import DataError, check_data

from .files import load_file
from .shipped import AEON, DEFAULT_DATASET, OTHER, Dataset, Split, available, build, load

__all__ = ["load", "load_file", "available", "build", "Dataset", "Split", "DataError", "check_data",
           "DEFAULT_DATASET", "AEON", "OTHER"]
