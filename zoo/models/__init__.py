"""The transformer models: the deterministic network, its Pyro classifier, attention forms, peers."""
from .classifier import ModelError, TransformerClassifier
from .linear import BayesianLinearRegression
from .transformer import InputShapeError, Transformer, TransformerConfig

__all__ = ["TransformerClassifier", "Transformer", "TransformerConfig", "BayesianLinearRegression", "ModelError",
           "InputShapeError"]
