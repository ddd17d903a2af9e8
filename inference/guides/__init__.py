"""Guides by name: ``GUIDES[name](model, x, y, mask, **options)`` builds one from a prototype batch.

Weight-space guides live in ``weight``, attention-space guides in ``attention``, the
function-space guide (a GP prior over the logits) in ``fsvi``; a new family registers its guide here.
"""
from .attention import BAM, Dirichlet
from .cgpt import CGPT, SparseCGPT
from .fsvi import FSVI
from .gp import KEPSVGP, SGPA, DecoupledSGPA
from .lora import BLoB
from .weight import MIN_SCALE, Delta, MeanField, global_sites, low_rank

GUIDES = {
    "map": Delta,
    "mean_field": MeanField,
    "low_rank": low_rank,
    "dirichlet": Dirichlet,
    "bam": BAM,
    "sgpa": SGPA,
    "sgpa-decoupled": DecoupledSGPA,
    "kep-svgp": KEPSVGP,
    "cgpt": CGPT,
    "cgpt-sparse": SparseCGPT,
    "fsvi": FSVI,
    "blob": BLoB,
    "ivon": MeanField,  # fitted by the ivon method (inference.guides.ivon); its posterior is a MeanField
}

__all__ = ["GUIDES", "Delta", "MeanField", "low_rank", "Dirichlet", "BAM", "SGPA", "DecoupledSGPA", "KEPSVGP",
           "CGPT", "SparseCGPT", "FSVI", "BLoB", "MIN_SCALE", "global_sites"]
