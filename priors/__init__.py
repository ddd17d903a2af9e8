"""Prior modules: objects that map a sample site to a Pyro distribution."""
from .attention import AttentionPrior, GammaAttention, KeyDirichlet, MaskedDirichlet, SymmetricDirichlet
from .base import Prior, PriorError, Site
from .empirical import Empirical
from .gp import GP
from .hierarchical import HierarchicalGaussian
from .prior_map import PriorMap
from .spec import parse, register
from .weight import Gaussian, Laplace, StudentT

__all__ = ["Prior", "PriorError", "Site", "Gaussian", "Laplace", "StudentT",
           "HierarchicalGaussian", "Empirical", "PriorMap", "parse", "register",
           "AttentionPrior", "SymmetricDirichlet", "KeyDirichlet", "GammaAttention", "MaskedDirichlet", "GP"]
