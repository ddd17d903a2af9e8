"""Flags shared by the commands that build a model on a dataset (fit, prior-check), and the checks run on them
before any work: flags first (one line naming the flag), then the data, the model, memory and disk, and only
then the output folder. The library is imported inside the functions, so ``bzoo --help`` stays fast.
"""
import shutil
from pathlib import Path

from zoo import recipes


def flag(name):
    """``d_model`` -> ``--d-model``: how the command line names an option in its messages."""
    return "--" + name.replace("_", "-")


def add_data_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", default=recipes.DATASET, help="a shipped dataset (see `bzoo datasets`)")
    group.add_argument("--data", metavar="FILE", help="your own .npz (X [N,T,C] or [N,T], y [N]) or .csv "
                                                      "(default: none, use --dataset)")


def add_model_arguments(parser, many_priors=False):
    parser.add_argument("--bayes", default="weights",
                        help="where uncertainty lives: {where}, or comma-separated globs over parameter names")
    parser.add_argument("--prior", metavar="SPEC", action="append" if many_priors else "store",
                        help=f"NAME[:key=value,...] or a JSON file of glob -> spec (default {recipes.PRIOR})"
                        + ("; repeat to compare priors" if many_priors else ""))
    parser.add_argument("--attention-prior", metavar="SPEC",
                        help="prior of attention rows with --bayes attention|bam (e.g. dirichlet:concentration=1, "
                             "key-dirichlet, bam-gamma), or of GP attention with --bayes sgpa|sgpa-decoupled "
                             "(sgpa:kernel=exponential|ard,lengthscale=L,scale=S) or kep-svgp (kep:rank=R,ksvd=W), or of "
                             "correlated-GP attention with --bayes cgpt|cgpt-sparse (cgpt-sparse:inducing=M); "
                             "default: the family's own, DEFAULT_ATTENTION_PRIOR in zoo/models/classifier.py)")
    for key, value in recipes.MODEL.items():
        parser.add_argument(flag(key), type=int, default=value, help="model size")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate, in [0, 1) (MC dropout uses it)")
    parser.add_argument("--patch", type=int, help="time steps per token (default: the fewest that keep a series "
                                                  "at most {max_tokens} tokens)")


def add_adapter_arguments(parser):
    parser.add_argument("--backbone", metavar="DIR", help="fine-tune a frozen backbone from `bzoo pretrain` through "
                                                          "adapters instead of training a transformer from scratch (default: none)")
    parser.add_argument("--adapter", metavar="SPEC",
                        help="with --backbone: lora[:rank=4,alpha=8,targets=*.attn.[qv]] or full (default lora)")


def build_adapter_model(args, dataset, prior=None, bayes=None):
    """The LoRAClassifier the flags describe; architecture flags set off their defaults must match the backbone."""
    from zoo.models.lora import LoRAClassifier

    shape = {k: getattr(args, k) for k in recipes.MODEL if getattr(args, k) != recipes.MODEL[k]}
    if args.patch:
        shape["patch"] = args.patch
    return LoRAClassifier.for_dataset(dataset, args.backbone, adapter=args.adapter or "lora", dropout=args.dropout,
                                      bayes=bayes or args.bayes, prior=prior or args.prior or recipes.PRIOR, **shape)


def add_run_arguments(parser):
    parser.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32-1")
    parser.add_argument("--out", metavar="DIR", help="run folder to write, refused if it holds a run "
                                                     "(default runs/COMMAND-DATASET-...-SEED)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --out whole (files that are not the run's are kept)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def check_run_arguments(args, model=True):
    """The flags every model-building command has, checked before anything is read or written; the device."""
    from core.checks import check, check_seed
    from zoo.cli import UserError
    from zoo.models import ModelError
    from zoo.models.transformer import SIZES

    check_seed(args.seed, UserError, flag)
    if args.out is not None and not args.out.strip():
        raise UserError("--out must be a folder path, got ''")
    if getattr(args, "data", None) is not None and not args.data.strip():
        raise UserError("--data must be a file path, got ''")
    if getattr(args, "adapter", None) is not None and not getattr(args, "backbone", None):
        raise UserError(f"--adapter {args.adapter} needs --backbone DIR (a folder from `bzoo pretrain`): adapters "
                        f"fine-tune a pretrained backbone; without one, leave --adapter out to train from scratch")
    if model:
        sizes = {k: getattr(args, k) for k in (*recipes.MODEL, "dropout", "patch") if getattr(args, k) is not None}
        check(sizes, SIZES, ModelError, flag)
    return check_device(args.device)


def dataset_name(args):
    return "data" if args.data else args.dataset


def load_data(args):
    from zoo import data

    if getattr(args, "data", None):
        return data.load_file(args.data)
    return data.load(args.dataset)


def check_device(name):
    """``--device NAME`` as a torch.device, refused in one line if this machine lacks it."""
    from core.checks import check_device as check
    from zoo.cli import UserError

    return check(name, UserError, "--device")


def seed_everything(seed):
    import pyro
    import torch

    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def build_model(args, dataset, prior=None, bayes=None):
    """The TransformerClassifier the flags describe, sized for ``dataset``; flags it would ignore are refused."""
    from zoo import TransformerClassifier
    from zoo.cli import UserError
    from zoo.models import default_patch

    if args.patch is not None and not dataset.tokens and args.patch > dataset.max_len:
        raise UserError(f"--patch {args.patch} is longer than the series ({dataset.max_len} steps): every series "
                        f"would be a single token")
    if args.patch is not None and args.patch > 1 and dataset.tokens:
        raise UserError(f"--patch {args.patch} has no effect on token data ({dataset.name} holds token ids)")
    model = TransformerClassifier(
        dataset.num_classes, input_dim=dataset.input_dim,
        vocab_size=dataset.vocab_size,
        d_model=args.d_model, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
        max_len=max(512, dataset.max_len), dropout=args.dropout,
        patch=args.patch or (1 if dataset.tokens else default_patch(dataset.max_len)), bayes=bayes or args.bayes,
        prior=prior or args.prior or recipes.PRIOR, attention_prior=getattr(args, "attention_prior", None))
    if (prior or args.prior) and not model.sites:
        raise UserError(f"--prior has no effect: --bayes {model.bayes} puts no distribution on weights "
                        f"(drop --prior, or use --attention-prior for attention rows)")
    return model


def check_output(what, draws, numbers, inputs, classes, train, folder, ood=0, memory=True, disk=True):
    """Refuse ``draws`` draws whose arrays would not fit in memory or on the disk of ``folder``, before any work.

    What ``to_arviz`` keeps and ``posterior.nc`` holds per draw: ``numbers`` latent weights
    (float32), class probabilities [N, K] for every input (train, test and ``ood``;
    float32, with float64 copies while the groups are built), and for the ``train``
    inputs a log-likelihood (float64) and a drawn label (int64).
    """
    from core.checks import check_memory, show_bytes
    from zoo.cli import UserError

    n = inputs + ood
    if memory:
        per_draw = 3 * 4 * numbers + 4 * 4 * n * classes + 3 * 8 * train
        check_memory(draws * per_draw, f"{what} ({draws} draws of {numbers} weights and of {classes}-class "
                                       f"probabilities on {n} inputs, in memory)", "cpu", UserError,
                     hint="lower --num-samples")
    if disk:
        per_draw = 4 * numbers + 4 * n * classes + 2 * 8 * train
        free = shutil.disk_usage(folder).free
        if draws * per_draw > free:
            raise UserError(f"{what} would write about {show_bytes(draws * per_draw)} to '{folder}', more than "
                            f"the {show_bytes(free)} free on its disk; lower --num-samples (at most "
                            f"{max(1, free // per_draw)} fit)")


def self_contained(out, model):
    """Copy the files the model's priors read (an empirical prior's weights) into ``out`` and point the priors
    at the copies, so the run folder (and its ``posterior.pt``) loads from anywhere, whole."""
    from priors import PriorMap

    copied = {}
    for prior in (model.prior.priors() if isinstance(model.prior, PriorMap) else [model.prior]):
        source = getattr(prior, "path", None)
        if source is None:
            continue
        source = Path(source).resolve()
        if source not in copied:
            name = f"prior/{source.stem}-{len(copied)}{source.suffix}"
            copied[source] = out.copy_in(source, name)
        prior.path = copied[source]
    return {str(k): v for k, v in copied.items()}
