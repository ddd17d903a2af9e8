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
    "dirichlet": {"steps": 1500, "lr": 3e-3},
    "bam": {"steps": 1500, "lr": 3e-3},
}
GENERIC = {"steps": 1000, "lr": 3e-3}
NUM_SAMPLES = 100  # predictive draws for evaluation


def fit_options(method, **overrides):
    """Default options for ``method`` with the given (non-None) overrides applied."""
    options = dict(FIT.get(method, GENERIC))
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


# The rows of `bzoo study`: where uncertainty lives x prior x guide. Each row is a
# label, a guide (or method), where (`bayes`), optionally a prior, model and fit options.
# Weight-space SVI at temperature 1 collapses to the prior on ItalyPowerDemand (67
# series, ~17k weights); the cold rows use temperatures measured to fit (docs/results.md:
# low-rank still collapsed at T=0.1 and reached 0.958 at T=0.03).
STUDY = [
    {"label": "map", "guide": "map"},
    {"label": "mean_field", "guide": "mean_field"},
    {"label": "mean_field T=0.1", "guide": "mean_field", "options": {"temperature": 0.1}},
    {"label": "low_rank", "guide": "low_rank"},
    {"label": "low_rank T=0.03", "guide": "low_rank", "options": {"temperature": 0.03}},
    {"label": "last-layer mean_field", "guide": "mean_field", "bayes": "last-layer"},
    {"label": "dirichlet attention", "guide": "dirichlet", "bayes": "attention"},
    {"label": "bam attention", "guide": "bam", "bayes": "bam"},
    {"label": "laplace", "guide": "laplace"},
    {"label": "ensemble", "guide": "ensemble"},
    {"label": "mc_dropout", "guide": "mc_dropout", "model": {"dropout": 0.1}},
]
# The gold-standard reference row (`bzoo study --reference`): many MCLMC chains started from a deep
# ensemble (guide="reference") on a 602-weight, one-block transformer, in 2 processes; the NUTS
# settings serve sampler="nuts" and `bzoo bench nuts` (docs/reference.md has how both were chosen;
# energy_var 5e-5, not BlackJAX's 5e-4: at 5e-4 the predictive still moves with the step size).
REFERENCE = {"label": "reference", "guide": "reference", "model": {"d_model": 8, "depth": 1, "heads": 2},
             "options": {"sampler": "mclmc", "num_members": 8, "num_chains": 32, "warmup": 1000, "num_samples": 150,
                         "thin": 20, "energy_var": 5e-5, "max_tree_depth": 6, "dense_mass": True, "jit_compile": True,
                         "workers": 2,
                         "steps": 500, "lr": 1e-2}}
