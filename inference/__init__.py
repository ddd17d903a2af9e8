"""Guides by name, the SVI loop, the fitted Posterior, metrics."""
from .elbo import NonFiniteError, elbo_terms
from .fit import FitError, fit, method_names, register_method
from .guides import GUIDES
from .metrics import evaluate
from .posterior import Posterior

__all__ = ["fit", "Posterior", "FitError", "NonFiniteError", "GUIDES", "register_method", "method_names",
           "evaluate", "elbo_terms"]
