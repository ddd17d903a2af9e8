"""The one error a model's configuration raises, in a module of its own so every model module can raise it."""


class ModelError(ValueError):
    """A model was configured with an invalid option."""
