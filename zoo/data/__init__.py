"""Data: the datasets that ship inside packages, a user's own files, and out-of-distribution inputs.

``load(name)`` returns a ``Dataset`` of train and test ``Split``s (``available()`` lists
the names, ``info(name)`` sizes and shapes); ``load_file(path)`` reads a user's ``.npz``
or ``.csv``; ``ood.ood_inputs(dataset)`` gives inputs from elsewhere to test
uncertainty on, and ``shift.shifts(split)`` the same split under graded corruptions.
"""
from core.checks import DataError, check_data

from .files import load_file
from .shipped import DEFAULT_DATASET, DIGITS, Dataset, Info, Split, available, build, info, load, skipped

__all__ = ["load", "load_file", "available", "info", "skipped", "build", "Dataset", "Split", "Info", "DataError",
           "check_data", "DEFAULT_DATASET", "DIGITS"]
