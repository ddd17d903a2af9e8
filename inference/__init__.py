"""Guides by name, the SVI loop, the fitted Posterior, metrics."""
from .elbo import NonFiniteError, elbo_terms
from .fit import fit, method_names, register_method
from .svi import FitError
from .guides import GUIDES
from .metrics import evaluate
from .posterior import Posterior
from .arviz_io import to_inference_data
from .compare import compare
from .prior_predictive import PriorPredictive, prior_predictive
from . import degeneracy
from .mcmc import function_space, predictive_distance, weight_space

__all__ = ["fit", "Posterior", "FitError", "NonFiniteError", "GUIDES", "register_method", "method_names",
           "evaluate", "elbo_terms", "function_space", "weight_space", "predictive_distance"]
__all__ += ["prior_predictive", "PriorPredictive", "to_inference_data", "compare", "degeneracy"]
