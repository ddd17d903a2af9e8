"""The leaf package every other one may import: input checks and memory sizing, with no import of zoo, priors or
inference (docs/architecture.md)."""
__version__ = "0.1.0"  # the library's version (zoo.__version__); a signed file records it
