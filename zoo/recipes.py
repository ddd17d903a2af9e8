"""The library's documented defaults: model size and, per method, the fit options.

Chosen on ItalyPowerDemand (67 training series of length 24) and written down
once, so ``bzoo fit``, ``bzoo study`` and the docs agree. Any of them can be
overridden from Python (``inference.fit`` options) or the command line.
"""
DATASET = "ItalyPowerDemand"  # the default dataset (zoo.data.DEFAULT_DATASET; read here so `bzoo --help` needs no torch)
MODEL = {"d_model": 32, "depth": 2, "heads": 4, "mlp_ratio": 2}
PRIOR = "gaussian:scale=1"

FIT = {
    "map": {"steps": 1000, "lr": 3e-3},
    "mean_field": {"steps": 2000, "lr": 1e-2},
    "low_rank": {"steps": 2000, "lr": 1e-2},
    "dirichlet": {"steps": 1500, "lr": 3e-3},
    "bam": {"steps": 1500, "lr": 3e-3},
    "sgpa": {"steps": 1500, "lr": 3e-3},
    "sgpa-decoupled": {"steps": 1500, "lr": 3e-3},
    "kep-svgp": {"steps": 1500, "lr": 3e-3},
    "fsvi": {"steps": 2000, "lr": 1e-2},
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
# low-rank still collapsed at T=0.1 and reached 0.958 at T=0.03). The GP attention rows use the
# sgpa prior's signal scale 0.1, chosen by 3-fold cross-validation on the training series
# (docs/gp-attention.md).
STUDY = [
    {"label": "map", "guide": "map"},
    {"label": "mean_field", "guide": "mean_field"},
    {"label": "mean_field T=0.1", "guide": "mean_field", "options": {"temperature": 0.1}},
    {"label": "low_rank", "guide": "low_rank"},
    {"label": "low_rank T=0.03", "guide": "low_rank", "options": {"temperature": 0.03}},
    {"label": "last-layer mean_field", "guide": "mean_field", "bayes": "last-layer"},
    {"label": "dirichlet attention", "guide": "dirichlet", "bayes": "attention"},
    {"label": "bam attention", "guide": "bam", "bayes": "bam"},
    {"label": "sgpa attention", "guide": "sgpa", "bayes": "sgpa"},
    {"label": "sgpa-decoupled attention", "guide": "sgpa-decoupled", "bayes": "sgpa-decoupled"},
    {"label": "kep-svgp attention", "guide": "kep-svgp", "bayes": "kep-svgp"},
    {"label": "laplace", "guide": "laplace"},
    {"label": "ensemble", "guide": "ensemble"},
    {"label": "mc_dropout", "guide": "mc_dropout", "model": {"dropout": 0.1}},
    # Function-space VI at T = 1: a GP prior over the logits instead of a weight prior (docs/function-space.md).
    # "select" names a grid for a row key, chosen on validation: here the GP's lengthscale.
    {"label": "fsvi (GP prior)", "guide": "fsvi", "prior": "gp:kernel=rbf,lengthscale=1",
     "select": {"prior": [f"gp:kernel=rbf,lengthscale={v}" for v in (0.5, 1, 2)]}},
    {"label": "last-layer fsvi (GP prior)", "guide": "fsvi", "bayes": "last-layer",
     "prior": "gp:kernel=rbf,lengthscale=1",
     "select": {"prior": [f"gp:kernel=rbf,lengthscale={v}" for v in (0.5, 1, 2)]}},
]
# The gold-standard reference row (`bzoo study --reference`): NUTS on a 602-weight, one-block
# transformer, 4 chains in 2 processes (docs/reference.md has how it was chosen and its mixing).
REFERENCE = {"label": "nuts (reference)", "guide": "nuts", "model": {"d_model": 8, "depth": 1, "heads": 2},
             "options": {"num_chains": 4, "warmup": 300, "num_samples": 300, "max_tree_depth": 6,
                         "dense_mass": True, "jit_compile": True, "workers": 2, "steps": 500, "lr": 1e-2}}
