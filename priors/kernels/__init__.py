"""The sampler kernels behind Gamma-family attention, apart from the priors that use them.

- ``gamma``: the dispatcher and autograd Functions (draws of Dirichlet rows and Weibull weights, their implicit
  gradients, closed-form KLs), on the fast kernels where they serve, else on torch's; held against torch and
  SciPy by ``tests/test_gamma.py``.
- ``numba_gamma``: the fused numba kernels themselves (exact draws, implicit gradients, KLs in one pass);
  ``tests/test_gamma.py`` checks their draws by KS tests against SciPy and their gradients against torch's.
- ``vector_math``: float32 elementwise log, exp, lgamma, digamma and an RNG that LLVM vectorizes inside the
  kernels; ``tests/test_gamma.py::test_vector_math_matches_numpy_and_scipy`` holds them to NumPy and SciPy.
"""
