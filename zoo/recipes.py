"""The library's documented defaults: model size and, per method, the fit options.

Chosen on ItalyPowerDemand (67 training series of length 24) and written down
once, so ``bzoo fit``, ``bzoo study`` and the docs agree. Any of them can be
overridden from Python (``inference.fit`` options) or the command line.
"""
MODEL = {"d_model": 32, "depth": 2, "heads": 4, "mlp_ratio": 2}
PRIOR = "gaussian:scale=1"

FIT = {
    "map": {"steps": 1000, "lr": 3e-3},
    "mean_field": {"steps": 2000, "lr": 1e-2},
    "low_rank": {"steps": 2000, "lr": 1e-2},
}
GENERIC = {"steps": 1000, "lr": 3e-3}
NUM_SAMPLES = 100  # predictive draws for evaluation


def fit_options(method, **overrides):
    """Default options for ``method`` with the given (non-None) overrides applied."""
    options = dict(FIT.get(method, GENERIC))
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


# The rows of `bzoo study`: where uncertainty lives x prior x guide. Each row is a
# label, a guide (or method), where (`bayes`), optionally a prior and fit options.
STUDY = [
    {"label": "map", "guide": "map"},
    {"label": "mean_field", "guide": "mean_field"},
    {"label": "low_rank", "guide": "low_rank"},
]
# The gold-standard reference row (`bzoo study --reference`).
REFERENCE = {"label": "nuts (reference)", "guide": "nuts"}
