"""Guides by name: ``GUIDES[name](model, x, y, mask, **options)`` builds one from a prototype batch.

Weight-space guides live in ``weight``, attention-space guides in ``attention``;
a new family registers its guide here.
"""
from .attention import BAM, Dirichlet
from .lora import BLoB
from .weight import MIN_SCALE, Delta, MeanField, global_sites, low_rank

GUIDES = {
    "map": Delta,
    "mean_field": MeanField,
    "low_rank": low_rank,
    "dirichlet": Dirichlet,
    "bam": BAM,
    "blob": BLoB,
}

__all__ = ["GUIDES", "Delta", "MeanField", "low_rank", "Dirichlet", "BAM", "BLoB", "MIN_SCALE", "global_sites"]
