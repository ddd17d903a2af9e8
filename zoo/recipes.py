"""The library's documented defaults: model size and, per method, the fit options.

Chosen on ItalyPowerDemand (67 training series of length 24) and written down
once, so ``bzoo fit``, ``bzoo study`` and the docs agree. Any of them can be
overridden from Python (``inference.fit`` options) or the command line.
"""
DATASET = "ItalyPowerDemand"  # the default dataset (zoo.data.DEFAULT_DATASET; read here so `bzoo --help` needs no torch)
MODEL = {"d_model": 32, "depth": 2, "heads": 4, "mlp_ratio": 2}
PRIOR = "gaussian:scale=1"

# Every MAP-trained method (map, laplace, ensemble members, mc_dropout, the laplace-torch peer) warms the prior up
# over the first half of its steps: with the N(0, 1) prior at full strength from step 0, 3 of 6 fits (ItalyPowerDemand
# seed 1, ArrowHead seeds 1 and 2) fell into the all-zero network, a constant predictive whose MAP objective is
# higher than the warmed-up fit's (docs/results.md, "The MAP collapse").
MAP_TRAINING = {"steps": 1000, "lr": 3e-3, "kl_anneal": 500}
FIT = {
    "map": MAP_TRAINING,
    "laplace": MAP_TRAINING,
    "fsp-laplace": MAP_TRAINING,
    "ensemble": MAP_TRAINING,
    "mc_dropout": MAP_TRAINING,
    "mean_field": {"steps": 2000, "lr": 1e-2},
    "low_rank": {"steps": 2000, "lr": 1e-2},
    "dirichlet": {"steps": 1500, "lr": 3e-3},
    "bam": {"steps": 1500, "lr": 3e-3},
    "sgpa": {"steps": 1500, "lr": 3e-3},
    "sgpa-decoupled": {"steps": 1500, "lr": 3e-3},
    "kep-svgp": {"steps": 1500, "lr": 3e-3},
    "cgpt": {"steps": 1500, "lr": 3e-3},
    "cgpt-sparse": {"steps": 1500, "lr": 3e-3},
    "fsvi": {"steps": 2000, "lr": 1e-2},
    "ivon": {"steps": 1000, "lr": 0.1, "kl_anneal": 500},  # the warm-up MAP_TRAINING has, for the same reason
    "blob": {"steps": 2000, "lr": 1e-2},
    "laplace_lora": {"steps": 1000, "lr": 1e-2},
    "swag_lora": {"steps": 1000, "lr": 1e-2},
    "lora_ensemble": {"steps": 1000, "lr": 1e-2},
}
GENERIC = {"steps": 1000, "lr": 3e-3}
NUM_SAMPLES = 100  # predictive draws for evaluation


def fit_options(method, **overrides):
    """Default options for ``method`` with the given (non-None) overrides applied."""
    options = dict(FIT.get(method, GENERIC))
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


# The rows of `bzoo study`: where uncertainty lives x prior x guide. A row is a dict:
#   label    its name, unique among rows and peers (what `--methods` takes)
#   guide    a guide or method for `inference.fit` (map, mean_field, low_rank, dirichlet, bam, laplace,
#            ensemble, mc_dropout, nuts, or any registered later)
#   bayes    where uncertainty lives (TransformerClassifier's `bayes`; default "weights")
#   prior    the weight prior spec (default PRIOR); `attention_prior` the attention rows' prior
#   model    model options over MODEL (e.g. {"d_model": 8}); `options` fit options over FIT[guide]
#   centre   "map": fit a MAP network on the same series first, for an attention prior centred on its attention
#   select   hyperparameters chosen per dataset and seed on a validation split carved from training,
#            never on test: {key: [candidates, ...]}. A key is a fit option ("temperature", "lr",
#            "steps", "num_members", ...), "model.<option>" ("model.dropout"), "prior" or
#            "attention_prior" (whole specs, e.g. for a prior scale). Several keys make a grid (their
#            product). Each candidate is fitted on the training split less the validation split and
#            scored by validation NLL; the lowest (first on ties) is refitted on the whole training
#            split and evaluated on test once (zoo/study/select.py, docs/study.md).
# Equal selection budgets: every ranked row selects among SELECTION_BUDGET settings of the one knob that matters most
# for it, so the ranks compare methods, not how much tuning each got (docs/study.md): lr for MAP, the ensemble and the
# plain and laplace-torch peers; the temperature for weight-space VI (T = 1 collapses it to the prior on small sets,
# and which colder T fits is a property of the data); the prior scale (prior precision) for Laplace and the
# last-layer posterior; the dropout rate for MC dropout; the KL weight (the likelihood temperature) for the attention
# and GP-attention rows; the GP prior's lengthscale for FSVI. MiniRocket selects its ridge penalty by its own
# internal cross-validation and is reported beside the ranking, not in it ("ranked": False). The GP attention rows
# use the sgpa prior's signal scale 0.1, chosen by 3-fold cross-validation on ItalyPowerDemand's training series
# (docs/gp-attention.md).
SELECTION_BUDGET = 3
LRS = [1e-3, 3e-3, 1e-2]
TEMPERATURES = [1.0, 0.1, 0.01]
KL_WEIGHTS = [1.0, 0.3, 0.1]
PRIOR_SCALES = ["gaussian:scale=0.3", "gaussian:scale=1", "gaussian:scale=3"]
STUDY = [
    {"label": "map", "guide": "map", "select": {"lr": LRS}},
    {"label": "mean_field", "guide": "mean_field", "select": {"temperature": TEMPERATURES}},
    {"label": "low_rank", "guide": "low_rank", "select": {"temperature": TEMPERATURES}},
    {"label": "last-layer mean_field", "guide": "mean_field", "bayes": "last-layer", "select": {"prior": PRIOR_SCALES}},
    {"label": "dirichlet attention", "guide": "dirichlet", "bayes": "attention", "select": {"temperature": KL_WEIGHTS}},
    # Remedies for attention posteriors that sit on their prior (issue 31; docs/attention.md), beside the unchanged
    # row: a KL warm-up from 0, free bits per attention row, a KL weight on the attention sites alone.
    {"label": "dirichlet attention (KL warm-up)", "guide": "dirichlet", "bayes": "attention",
     "select": {"kl_anneal": [250, 750, 1500]}},
    {"label": "dirichlet attention (free bits)", "guide": "dirichlet", "bayes": "attention",
     "select": {"guide_options": [{"free_bits": v} for v in (0.05, 0.2, 1.0)]}},
    {"label": "dirichlet attention (local KL weight)", "guide": "dirichlet", "bayes": "attention",
     "select": {"guide_options": [{"local_kl_weight": v} for v in (1e-2, 1e-3, 1e-4)]}},
    # Two priors that move off Dirichlet(1): its concentration fitted by the ELBO (empirical Bayes), and a Dirichlet
    # centred on the attention of a MAP network fitted first on the same series ("centre": zoo.study.cell).
    {"label": "dirichlet attention (learned prior)", "guide": "dirichlet", "bayes": "attention",
     "select": {"attention_prior": [f"dirichlet-eb:init={v}" for v in (0.1, 1, 10)]}},
    {"label": "dirichlet attention (centred prior)", "guide": "dirichlet", "bayes": "attention", "centre": "map",
     "select": {"attention_prior": [f"centred-dirichlet:strength={v}" for v in (0.01, 0.1, 1)]}},
    {"label": "bam attention", "guide": "bam", "bayes": "bam", "select": {"temperature": KL_WEIGHTS}},
    {"label": "sgpa attention", "guide": "sgpa", "bayes": "sgpa", "select": {"temperature": KL_WEIGHTS}},
    {"label": "sgpa-decoupled attention", "guide": "sgpa-decoupled", "bayes": "sgpa-decoupled",
     "select": {"temperature": KL_WEIGHTS}},
    {"label": "kep-svgp attention", "guide": "kep-svgp", "bayes": "kep-svgp", "select": {"temperature": KL_WEIGHTS}},
    # CGPT has no KL: its knob is the weight lambda of the CGP loss (docs/cgpt.md).
    {"label": "cgpt attention", "guide": "cgpt", "bayes": "cgpt",
     "select": {"guide_options": [{"cgp_weight": v} for v in (1e-4, 1e-3, 1e-2)]}},
    # IVON at T = 1 (docs/ivon.md): its starting Hessian h0 sets the starting posterior width, the knob that decides
    # whether a small data set's fit collapses.
    {"label": "ivon", "guide": "ivon", "select": {"hess_init": [3.0, 30.0, 300.0]}},
    {"label": "laplace", "guide": "laplace", "select": {"prior": PRIOR_SCALES}},
    {"label": "ensemble", "guide": "ensemble", "select": {"lr": LRS}},
    {"label": "mc_dropout", "guide": "mc_dropout", "select": {"model.dropout": [0.05, 0.1, 0.2]}},
    # Function-space VI at T = 1: a GP prior over the logits instead of a weight prior (docs/function-space.md).
    {"label": "fsvi (GP prior)", "guide": "fsvi", "prior": "gp:kernel=rbf,lengthscale=1",
     "select": {"prior": [f"gp:kernel=rbf,lengthscale={v}" for v in (0.5, 1, 2)]}},
    # FSP-Laplace (docs/fsp-laplace.md): a MAP under the GP prior, then a linearized Laplace under it.
    {"label": "fsp-laplace (GP prior)", "guide": "fsp-laplace", "prior": "gp:kernel=rbf,lengthscale=1",
     "select": {"prior": [f"gp:kernel=rbf,lengthscale={v}" for v in (0.5, 1, 2)]}},
    {"label": "last-layer fsvi (GP prior)", "guide": "fsvi", "bayes": "last-layer",
     "prior": "gp:kernel=rbf,lengthscale=1",
     "select": {"prior": [f"gp:kernel=rbf,lengthscale={v}" for v in (0.5, 1, 2)]}},
]
# Bayesian low-rank adapters (docs/lora.md) on a backbone pretrained without the row's dataset, at temperature 1:
# "backbone": "pretrained" means `zoo.pretrain.adapter_model(row, dataset)`, which takes the backbone from
# `zoo.pretrain.cached_backbone(dataset.name)` (pretrained once per excluded dataset, then reused). A "select" key
# is chosen on a validation split carved from training: a fit option, or the row's "prior" when it names it.
# `bzoo bench lora` runs these rows against the full-weight MAP row; `bzoo study --methods "LoRA map,BLoB,..."`
# runs them as study cells (not by default: each dataset first needs its own backbone, up to 15 minutes).
ADAPTER = "lora:rank=4,alpha=8"
LORA_STUDY = [
    {"label": "LoRA map", "guide": "map", "adapter": ADAPTER, "backbone": "pretrained",
     "options": {"steps": 1000, "lr": 1e-2}, "select": {"lr": [3e-3, 1e-2, 3e-2]}},
    {"label": "LoRA mean_field", "guide": "mean_field", "bayes": "adapters", "adapter": ADAPTER,
     "backbone": "pretrained", "options": {"steps": 2000, "lr": 1e-2},
     "select": {"prior": ["gaussian:scale=0.1", "gaussian:scale=0.3", "gaussian:scale=1"]}},
    {"label": "BLoB", "guide": "blob", "bayes": "adapters", "adapter": ADAPTER, "backbone": "pretrained",
     "options": {"steps": 2000, "lr": 1e-2},
     "select": {"prior_scale": [0.1, 0.2, 1.0]}},  # A's prior; B and the head keep the row's prior
    {"label": "Laplace-LoRA", "guide": "laplace_lora", "bayes": "adapters", "adapter": ADAPTER,
     "backbone": "pretrained", "options": {"steps": 1000, "lr": 1e-2}, "select": {"lr": [3e-3, 1e-2, 3e-2]}},
    {"label": "SWAG-LoRA", "guide": "swag_lora", "adapter": ADAPTER, "backbone": "pretrained",
     "options": {"steps": 1000, "lr": 1e-2}, "select": {"swag_lr": [3e-3, 1e-2, 3e-2]}},
    {"label": "LoRA ensemble", "guide": "lora_ensemble", "adapter": ADAPTER, "backbone": "pretrained",
     "options": {"steps": 1000, "lr": 1e-2, "num_members": 5}, "select": {"lr": [3e-3, 1e-2, 3e-2]}},
    {"label": "full fine-tune map", "guide": "map", "adapter": "full", "backbone": "pretrained",
     "options": {"steps": 1000, "lr": 1e-3}, "select": {"lr": [3e-4, 1e-3, 3e-3]}},
]
# The peers of `bzoo study` (zoo/study/peers.py): {"label", "peer": a name in PEERS, "options": {...}}.
STUDY_PEERS = [
    {"label": "plain", "peer": "plain", "select": {"lr": LRS}},
    {"label": "minirocket", "peer": "minirocket", "ranked": False},
    {"label": "laplace-torch", "peer": "laplace-torch", "select": {"lr": LRS}},
]
# The main job (`bzoo study` with no budget flag, `make study`): the rows the verdicts on the seed's three claims rest
# on (docs/results.md), with MiniRocket as the strongest non-Bayesian peer, at MAIN_BUDGET: the sweep's fit lengths
# (shorter fits change the verdicts: at --quick's tenth, mean-field VI and Dirichlet attention on ItalyPowerDemand
# stay at chance, 0.50 and 0.59, where the sweep's quarter learns, 0.68 and 0.97; measured 2026-12-07), with
# --quick's draws and 2-setting grids. `--full` runs every row and peer at its full recipe (about an hour).
MAIN = ["map", "mean_field", "ivon", "laplace", "fsp-laplace (GP prior)", "fsvi (GP prior)", "dirichlet attention",
        "sgpa attention", "cgpt attention", "ensemble", "minirocket"]
# How the study evaluates a cell (docs/study.md): posterior draws on test and OOD inputs; on each of
# the 12 shifted test sets, fewer draws on at most `shift_inputs` test series (their metrics are
# averaged over the 12 sets); the validation split's fraction of training (stratified, at least one
# series per class in both parts where a class has two). `--quick` cuts steps and draws, and keeps at
# most QUICK_GRID values of each selection list (its two ends: a quick sweep still selects, at 3 fits a row, not 4).
# A fit step sees at most `step_tokens` tokens (series x tokens per series): on the larger sets (digits, OSULeaf,
# JapaneseVowels, Covid3Month_disc, ACSF1) the rows train on seeded minibatches, so a step costs at most about 2.5
# ItalyPowerDemand full-batch steps; the smaller sets stay full batch.
# `protocol` is the revision of what a cell measures, in every cell's key: bump it when a change alters any cell's
# numbers beyond what its key already covers (data, resolved row, evaluation settings, versions, device), so
# stale cells are rerun, not reused. 2: far-OOD in the target's preprocessing, equal selection budgets,
# training-only vocabulary.
EVALUATION = {"protocol": 2, "samples": 50, "shift_samples": 20, "shift_inputs": 256, "validation_fraction": 0.2, "bins": 15,
              "step_tokens": 4096}
QUICK = {"steps_scale": 0.1, "samples": 10, "shift_samples": 5, "shift_inputs": 128}
MAIN_BUDGET = {**QUICK, "steps_scale": 0.25}
QUICK_GRID = 2
# `--sweep`: the budget of the full sweep (every shipped dataset x 3 seeds x every row and peer), which at the
# recipes' steps costs tens of hours on 2 cores. Fewer steps (warm-ups shortened alike), fewer draws, and at most
# SWEEP_GRID values of each selection list (its ends and middle). docs/results.md compares its cells with
# full-recipe cells of the same datasets and seeds.
SWEEP = {"steps_scale": 0.25, "samples": 25, "shift_samples": 10, "shift_inputs": 128}
SWEEP_GRID = 3
# The gold-standard reference row (`bzoo study --reference`): many MCLMC chains started from a deep
# ensemble (guide="reference") on a 602-weight, one-block transformer, in 2 processes; the NUTS
# settings serve sampler="nuts" and `bzoo bench nuts` (docs/reference.md has how both were chosen;
# energy_var 5e-5, not BlackJAX's 5e-4: at 5e-4 the predictive still moves with the step size; 300 draws per
# chain, not 150: at 150 the lowest function-space ESS was 128-155, at 300 it is 197-203).
REFERENCE = {"label": "reference", "guide": "reference", "ranked": False, "model": {"d_model": 8, "depth": 1, "heads": 2},
             "options": {"sampler": "mclmc", "num_members": 8, "num_chains": 32, "warmup": 1000, "num_samples": 300,
                         "thin": 20, "energy_var": 5e-5, "max_tree_depth": 6, "dense_mass": True, "jit_compile": True,
                         "workers": 2, "steps": 500, "lr": 1e-2}}
