"""Prior modules: objects that map a sample site to a Pyro distribution."""
from .attention import (AttentionPrior, GammaAttention, KeyDirichlet, MaskedDirichlet, MaskedGamma, MaskedWeibull,
                        SymmetricDirichlet)
from .attention_learned import CentredDirichlet, LearnedDirichlet
from .base import Prior, PriorError, Site
from .cgpt import CGPConditional, CGPTPrior, SparseCGPTPrior
from .context import AttentionRecord, CorrelatedContext, EigenContext, KernelContext, KeyContext
from .empirical import Empirical
from .gp import GP
from .gp_attention import CholeskyError, GPPrior, KEPPrior, SGPAPrior
from .hierarchical import HierarchicalGaussian
from .prior_map import PriorMap
from .spec import parse, register
from .weight import Gaussian, Laplace, StudentT

__all__ = ["Prior", "PriorError", "Site", "Gaussian", "Laplace", "StudentT",
           "HierarchicalGaussian", "Empirical", "PriorMap", "parse", "register",
           "AttentionPrior", "SymmetricDirichlet", "KeyDirichlet", "GammaAttention", "MaskedDirichlet",
           "LearnedDirichlet", "CentredDirichlet", "MaskedWeibull", "MaskedGamma", "SGPAPrior", "KEPPrior", "GPPrior",
           "CholeskyError", "GP",
           "CGPTPrior", "SparseCGPTPrior", "CGPConditional", "KeyContext", "KernelContext", "EigenContext",
           "CorrelatedContext", "AttentionRecord"]
