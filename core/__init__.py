"""The leaf package every other one may import: declared inputs and their checks, memory sizing, signed files, tensor
helpers, the optimizer schedule and the Cholesky jitter policy, with no import of zoo, priors or inference
(docs/architecture.md)."""
__version__ = "0.1.0"  # the library's version (zoo.__version__); a signed file records it
