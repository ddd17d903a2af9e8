"""Markov chain Monte Carlo: the NUTS reference (``guide="nuts"``) and its function-space diagnostics."""
from .diagnostics import by_chain, convergence, function_space, predictive_distance, weight_space
from .nuts import Tempered, chain_start, fit_nuts, tempered

__all__ = ["fit_nuts", "chain_start", "Tempered", "tempered", "function_space", "weight_space",
           "predictive_distance", "convergence", "by_chain"]
