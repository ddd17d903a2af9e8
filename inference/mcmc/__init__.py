"""Markov chain Monte Carlo: the NUTS sampler (``guide="nuts"``), the many-chain reference from a deep ensemble
(``guide="reference"``, MCLMC or NUTS) and their function-space diagnostics."""
from .diagnostics import (by_chain, convergence, function_space, mode_variance, nested_rhat, predictive_distance,
                          weight_space)
from .nuts import Tempered, chain_start, fit_nuts, tempered
from .reference import fit_reference

__all__ = ["fit_nuts", "fit_reference", "chain_start", "Tempered", "tempered", "function_space", "weight_space",
           "predictive_distance", "convergence", "nested_rhat", "mode_variance", "by_chain"]
