"""Transformer models as Pyro models, datasets and the ``bzoo`` command line."""
from .classifier import ModelError, TransformerClassifier
from .linear import BayesianLinearRegression
from .transformer import Transformer, TransformerConfig

__version__ = "0.1.0"
__all__ = ["TransformerClassifier", "BayesianLinearRegression", "Transformer", "TransformerConfig", "ModelError", "__version__"]
