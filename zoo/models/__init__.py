"""The transformer models: the deterministic network, its Pyro classifier, attention forms, peers."""
from .classifier import TransformerClassifier
from .errors import ModelError
from .linear import BayesianLinearRegression
from .transformer import MAX_TOKENS, InputShapeError, Transformer, TransformerConfig, default_patch

__all__ = ["TransformerClassifier", "Transformer", "TransformerConfig", "BayesianLinearRegression", "ModelError",
           "InputShapeError", "default_patch", "MAX_TOKENS"]
