"""Transformer models as Pyro models, datasets and the ``bzoo`` command line.

The models are imported on first use (PEP 562 ``__getattr__``), so ``bzoo --help``
does not pay for torch and Pyro; ``from zoo import TransformerClassifier`` works as ever.
"""
from core import __version__

_MODELS = ("TransformerClassifier", "BayesianLinearRegression", "Transformer", "TransformerConfig", "ModelError")
__all__ = [*_MODELS, "__version__"]


def __getattr__(name):
    if name in _MODELS:
        from . import models
        return getattr(models, name)
    raise AttributeError(f"module 'zoo' has no attribute '{name}'")
