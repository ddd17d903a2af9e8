"""Transformer models as Pyro models, datasets and the ``bzoo`` command line."""
from .models import BayesianLinearRegression, ModelError, Transformer, TransformerClassifier, TransformerConfig

__version__ = "0.1.0"
__all__ = ["TransformerClassifier", "BayesianLinearRegression", "Transformer", "TransformerConfig", "ModelError", "__version__"]
