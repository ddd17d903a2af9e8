"""The study: a grid of cells (dataset, seed, method), each selected on validation, fitted and evaluated,
run here or on Dask, written as it finishes, resumed after any interruption, and summarized with statistics.

Rooms: ``plan`` (the grid and its fingerprints), ``select`` (validation split and grids),
``cell`` (one cell), ``footprint`` (memory), ``engine`` (where cells run), ``folder``
(the study folder), ``stats`` and ``report`` (results), ``peers``.
"""
from .cell import EXTRA_METRICS, CellContext
from .plan import StudyError
from .run import run_study

__all__ = ["run_study", "StudyError", "EXTRA_METRICS", "CellContext"]
