"""Every verb's inputs, declared once: the ``bzoo`` flags and the Python API's checks come from these tables.

One ``Schema`` per verb (``VERBS``) and per public function that takes options (``FIT_OPTIONS`` for
``inference.fit``, ``STUDY`` for ``run_study``, ``PRETRAIN`` for ``pretrain``, ``ADAPTER`` for
``parse_adapter``, ``LOAD`` for ``Posterior.load``). ``zoo.cli`` builds each verb's flags from its
schema and checks the parsed values through it before the verb runs; the functions check their
arguments through the same schema, so a value refused on the command line is refused from Python
with the same words. ``tests/test_schema.py`` generates its bad inputs from these tables.

A leaf beside ``core``: it imports only ``core.schema`` and ``zoo.recipes`` (no torch), so every layer
may read it and ``bzoo --help`` stays fast. What needs torch or the data to check (a device this
machine has, a dataset's name, a prior spec, a guide's own options) is checked where it is used.
"""
import os

from core.schema import Option, Schema, at_most, excludes, requires

from . import recipes

# Names the help texts list; tests/test_schema.py checks them against the registries they mirror (which import torch)
GUIDE_NAMES = ("bam", "blob", "cgpt", "cgpt-sparse", "dirichlet", "ensemble", "fsp-laplace", "fsvi", "ivon",
               "kep-svgp", "laplace", "laplace_lora", "lora_ensemble", "low_rank", "map", "mc_dropout", "mean_field",
               "nuts", "reference", "sgpa", "sgpa-decoupled", "swag_lora")  # inference.method_names()
WHERE = ("weights", "last-layer", "none", "dirichlet", "bam", "sgpa", "sgpa-decoupled", "kep-svgp", "cgpt",
         "cgpt-sparse")  # zoo.models.classifier.WHERE
MAX_TOKENS = 64  # zoo.models.MAX_TOKENS

# --- shared options -------------------------------------------------------------------------------------------

SEED = Option("seed", "int", "random seed, 0 to 2**32-1", default=0, low=0, high=2 ** 32 - 1)
DEVICE = Option("device", "str", "cpu, cuda, cuda:1, ...", default="cpu")  # whether this machine has it: check_device
OUT = Option("out", "path", "run folder to write, refused if it holds a run (default runs/COMMAND-DATASET-...-SEED)",
             optional=True, metavar="DIR")
OVERWRITE = Option("overwrite", "bool", "replace a run already in --out whole (files that are not the run's are kept)",
                   default=False)
CORES = os.cpu_count() or 1
THREADS = Option("threads", "int", f"CPU threads, at most {4 * CORES} (4 per core: more only wait, and "
                 "thousands exhaust memory)", low=1, high=4 * CORES, optional=True)

# --- inference.fit ----------------------------------------------------------------------------------------------

FIT_OPTIONS = Schema("inference.fit", (
    Option("steps", "int", "optimizer steps", default=1000, low=0),
    Option("lr", "float", "Adam learning rate", default=1e-2, low=0),
    Option("batch_size", "int", "minibatch size (default: full batch)", low=1, optional=True),
    Option("num_particles", "int", "vectorized ELBO particles", default=1, low=1),
    Option("kl_anneal", "int", "steps of linear KL warm-up", default=0, low=0),
    Option("temperature", "float", "likelihood temperature T; T < 1 is a cold posterior", default=1.0, low=0),
    Option("clip_norm", "float", "clip the gradient norm to this value (default: no clipping)", low=0, optional=True),
    Option("checkpoint_every", "int", "save a checkpoint every N steps", default=100, low=1),
    Option("progress", "bool", "show a progress bar", default=True),
    Option("check_every", "int", "steps between validation checks (early stopping)", default=100, low=1),
    Option("patience", "int", "validation checks without a new best before stopping", default=3, low=1),
    Option("stop_at", "int", "end the fit after this many steps of its schedule", low=1, optional=True),
    SEED.but(help="random seed"),
), rules=(at_most("stop_at", "steps"),))

# --- the command line's verbs -----------------------------------------------------------------------------------

DATA = (
    Option("dataset", "str", f"a shipped dataset (default {recipes.DATASET}; see `bzoo datasets`)", optional=True),
    Option("data", "path", "your own .npz (X [N,T,C] or [N,T], y [N]) or .csv (default: none, use --dataset)",
           optional=True, metavar="FILE"),
)
DATA_RULE = excludes("dataset", "data", why="cannot be combined: a run fits one dataset, a shipped one or your file")


def model_options(many_priors=False):
    """Where uncertainty lives, the priors and the network's size (``recipes.MODEL``)."""
    return (
        Option("bayes", "str", "where uncertainty lives: {where}, or comma-separated globs over parameter names",
               default="weights"),
        Option("prior", "str", f"NAME[:key=value,...] or a JSON file of glob -> spec (default {recipes.PRIOR})"
               + ("; repeat to compare priors" if many_priors else ""), optional=True, repeat=many_priors,
               metavar="SPEC"),
        Option("attention_prior", "str",
               "prior of attention rows with --bayes attention|bam (e.g. dirichlet:concentration=1, key-dirichlet, "
               "bam-gamma), or of GP attention with --bayes sgpa|sgpa-decoupled (sgpa:kernel=exponential|ard,"
               "lengthscale=L,scale=S) or kep-svgp (kep:rank=R,ksvd=W), or of correlated-GP attention with --bayes "
               "cgpt|cgpt-sparse (cgpt-sparse:inducing=M); default: the family's own, DEFAULT_ATTENTION_PRIOR in "
               "zoo/models/classifier.py)", optional=True, metavar="SPEC"),
        *(Option(key, "int", "model size", default=value, low=1) for key, value in recipes.MODEL.items()),
        Option("dropout", "float", "dropout rate, in [0, 1) (MC dropout uses it)", default=0.0, low=0,
               high=1, closed=("low",)),
        Option("patch", "int", "time steps per token (default: the fewest that keep a series at most {max_tokens} "
               "tokens)", low=1, optional=True),
    )


ADAPTER_FLAGS = (
    Option("backbone", "path", "fine-tune a frozen backbone from `bzoo pretrain` through adapters instead of training "
           "a transformer from scratch (default: none)", optional=True, metavar="DIR"),
    Option("adapter", "str", "with --backbone: lora[:rank=4,alpha=8,targets=*.attn.[qv]] or full (default lora)",
           optional=True, metavar="SPEC"),
)
ADAPTER_RULE = requires("adapter", "backbone", why="adapters fine-tune a pretrained backbone (a folder from "
                        "`bzoo pretrain`); without one, leave --adapter out to train from scratch")
RUN = (SEED, OUT, OVERWRITE, DEVICE)


def per_guide(name, help):
    """A fit option on the command line: its default is the guide's recipe (``zoo/recipes.py``), so None here."""
    return FIT_OPTIONS[name].but(default=None, optional=True, help=help)


FIT = Schema("fit", (
    *DATA, *model_options(), *ADAPTER_FLAGS,
    Option("guide", "str", "one of: {guides}", default="mean_field"),  # registered names: inference.fit.check_fit
    per_guide("steps", "optimizer steps (default per guide, see zoo/recipes.py)"),
    per_guide("lr", "Adam learning rate (default per guide, see zoo/recipes.py)"),
    per_guide("batch_size", "minibatch size (default: full batch)"),
    per_guide("num_particles", "vectorized ELBO particles (default 1)"),
    per_guide("temperature", "likelihood temperature T; T < 1 is a cold posterior (default 1)"),
    per_guide("kl_anneal", "steps of linear KL warm-up (default 0)"),
    per_guide("clip_norm", "clip the gradient norm to this value (default: no clipping)"),
    Option("num_samples", "int", f"predictive draws (default {recipes.NUM_SAMPLES}; a point estimate such as map "
           "has one)", low=1, optional=True),
    Option("option", "str", "a guide or method setting, repeatable: e.g. num_chains=4, warmup=200 (nuts), "
           "num_members=5 (ensemble), rank=10 (low_rank), init_concentration=100 (dirichlet) (default: none)",
           default=[], repeat=True, metavar="KEY=VALUE"),
    per_guide("checkpoint_every", "save DIR/checkpoint.pt every N steps; rerunning the same command resumes from it "
              "(default: no checkpoint)").but(metavar="N"),
    *RUN,
), rules=(DATA_RULE, ADAPTER_RULE))

PRIOR_CHECK = Schema("prior-check", (
    *DATA, *model_options(many_priors=True),
    Option("num_samples", "int", "functions drawn per prior, at least 2", default=200, low=2),
    Option("split", "str", "inputs to evaluate on", default="train", choices=("train", "test")),
    Option("sites", "str", "prior sites to store in the .nc (repeatable; default all)", optional=True, repeat=True,
           metavar="GLOB"),
    *RUN,
), rules=(DATA_RULE,))

STUDY = Schema("study", (
    Option("out", "path", "study folder (default runs/study-DATASET-SEEDS); rerun to resume", optional=True,
           metavar="DIR"),
    Option("datasets", "list", f"comma-separated shipped datasets or .npz/.csv files, or 'all' (default "
           f"{recipes.DATASET}; see `bzoo datasets`)", optional=True),
    Option("seeds", "list", "comma-separated seeds (default 0)", optional=True),
    Option("methods", "list", "comma-separated rows and peers: "
           + ", ".join(row["label"] for row in [*recipes.STUDY, *recipes.STUDY_PEERS])
           + f" (default: {', '.join(recipes.MAIN)}; all of them with --full, --sweep or --quick)", optional=True),
    Option("peers", "bool", "leave the peers out of the default methods", default=True, cli="--no-peers"),
    Option("reference", "bool", "add the reference posterior (many MCLMC chains from a deep ensemble, on a small "
           "transformer) as a row; cells then report tv, kl to it", default=False),
    Option("reference_arm", "bool", "every row and peer at the reference's network size, beside the reference row: "
           "distances to the reference (tv, kl) are reported in this arm only, where they measure approximation "
           "error on one network", default=False),
    Option("near_ood", "bool", "the near-OOD arm: each dataset (of 3 or more classes) trained without its last "
           "class, whose test series are the OOD set", default=False),
    Option("quick", "bool", f"a fast check of the machinery: steps x{recipes.QUICK['steps_scale']}, "
           f"{recipes.QUICK['samples']} draws, at most {recipes.QUICK_GRID} values per selection grid (docs/study.md)",
           default=False),
    Option("sweep", "bool", f"the full sweep's budget: steps x{recipes.SWEEP['steps_scale']}, "
           f"{recipes.SWEEP['samples']} draws, at most {recipes.SWEEP_GRID} values per selection grid "
           "(docs/study.md)", default=False),
    Option("full", "bool", "every row and peer at its full recipe, about an hour on one dataset (default: the "
           f"verdicts' rows at steps x{recipes.MAIN_BUDGET['steps_scale']}, {recipes.MAIN_BUDGET['samples']} draws, "
           f"{recipes.QUICK_GRID} settings per grid)", default=False),
    Option("steps_scale", "float", "multiply every row's optimizer steps (default 1, or --quick's or --sweep's; this "
           "flag overrides them)", low=0, optional=True),
    Option("num_samples", "int", f"predictive draws on test and OOD (default {recipes.EVALUATION['samples']})",
           low=1, optional=True),
    Option("jobs", "int", "run cells on a local Dask cluster of N worker processes (default: cells run here, one by "
           "one)", low=1, optional=True),
    Option("scheduler", "str", "run cells on an existing Dask cluster (default: none)", optional=True,
           metavar="tcp://HOST:PORT"),
    Option("shortest_first", "bool", "with --jobs/--scheduler, start the cheapest cells first, banking the most "
           "finished cells before a deadline (default: longest first, the shortest total time)", default=False),
    THREADS.but(help="torch threads per cell (default: the cores / --jobs)"),
    Option("memory_budget", "size", "memory one cell may use, e.g. 4G (default: half the available memory / "
           "concurrent cells)", optional=True, metavar="SIZE"),
    Option("overwrite", "bool", "accept a study folder of another configuration (shared cells kept, nothing "
           "deleted)", default=False),
    Option("report_only", "bool", "run nothing: report the finished cells of this study in --out, list the missing "
           "ones (with --out alone: the study its study.json names)", default=False),
    DEVICE.but(help="cpu, cuda, cuda:1, ... (default cpu)"),
    Option("progress", "bool", "no progress bar", default=True, cli="--no-progress"),
), rules=(
    excludes("quick", "sweep", "full", why="are budgets; give one"),
    excludes("jobs", "scheduler", why="cannot be combined: --jobs starts a local cluster and --scheduler uses an "
             "existing one; give one of them"),
    excludes("report_only", "jobs", why="cannot be combined: --report-only runs no cell"),
    excludes("report_only", "scheduler", why="cannot be combined: --report-only runs no cell"),
))

PRETRAIN_DEFAULTS = {"d_model": 64, "depth": 4, "heads": 4, "mlp_ratio": 4, "patch": 4, "length": 64, "steps": 6000,
                     "batch_size": 128, "lr": 1e-3, "mask_ratio": 0.4, "min_crop": 16, "max_crop": 512}
PRETRAIN_RANGES = {"mask_ratio": {"high": 1, "closed": ("high",)}}  # the share of patch tokens masked
PRETRAIN = Schema("pretrain", (
    Option("exclude", "list", "the dataset(s) to leave out, comma-separated: the ones you will fine-tune on "
           "(required)", required=True, metavar="DATASET"),
    Option("out", "path", "backbone folder to write, never overwritten (required)", required=True, metavar="DIR"),
    *(Option(key, "int", f"default {value}", default=value, low=1) if isinstance(value, int) else
      Option(key, "float", f"default {value}", default=value, low=0, **PRETRAIN_RANGES.get(key, {}))
      for key, value in PRETRAIN_DEFAULTS.items()),
    THREADS.but(default=2, optional=False, help="CPU threads (default 2)"),
    SEED, DEVICE.but(help="cpu, cuda, ... (default cpu)", optional=True),
), rules=(at_most("min_crop", "max_crop"),))  # length a multiple of patch: zoo.pretrain

DIAGNOSE = Schema("diagnose", (
    Option("run_dir", "path", "a run folder holding posterior.nc (from bzoo fit)", required=True, cli="positional",
           metavar="RUN_DIR"),
    Option("var_names", "str", "posterior sites for the trace plot (repeatable; default: up to 3 of the smallest)",
           optional=True, repeat=True, metavar="GLOB"),
    Option("bins", "int", "confidence bins for ECE and reliability, at least 1", default=15, low=1),
))

BENCHMARKS = ("speed", "nuts", "reference", "memory", "lora")
BENCH = Schema("bench", (
    Option("which", "str", "which benchmark", choices=BENCHMARKS, required=True, cli="positional"),
    Option("options", "list", "options passed to the benchmark (see `bzoo bench NAME -h`)", cli="positional"),
))

DATASETS = Schema("datasets", ())

VERBS = {"study": STUDY, "fit": FIT, "prior-check": PRIOR_CHECK, "diagnose": DIAGNOSE, "datasets": DATASETS,
         "bench": BENCH, "pretrain": PRETRAIN}

# --- functions of the library -----------------------------------------------------------------------------------

ADAPTER = Schema("adapter", (
    Option("rank", "int", "LoRA rank", default=4, low=1, valid_text="a whole number >= 1"),
    Option("alpha", "float", "LoRA scale", default=8.0, low=0, valid_text="a positive number"),
    Option("targets", "str", "globs of the adapted layers, joined by |"),
))
LOAD = Schema("Posterior.load", (
    Option("path", "path", "a posterior file written by Posterior.save", required=True),
    Option("map_location", "str", "the device to load onto, a name or a torch.device (default cpu)", optional=True),
))
