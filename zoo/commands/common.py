"""What the commands that build a model on a dataset (fit, prior-check) share, and the checks run before any work:
the flags first (declared in ``zoo/options.py`` and checked by ``zoo.cli``; the device here), then the data, the
model, memory and disk, and only then the output folder. The library is imported inside the functions, so
``bzoo --help`` stays fast.
"""
import shutil
from pathlib import Path

from zoo import recipes


def build_adapter_model(args, dataset, prior=None, bayes=None):
    """The LoRAClassifier the flags describe; architecture flags set off their defaults must match the backbone."""
    from zoo.models.lora import LoRAClassifier

    shape = {k: getattr(args, k) for k in recipes.MODEL if getattr(args, k) != recipes.MODEL[k]}
    if args.patch:
        shape["patch"] = args.patch
    return LoRAClassifier.for_dataset(dataset, args.backbone, adapter=args.adapter or "lora", dropout=args.dropout,
                                      bayes=bayes or args.bayes, prior=prior or args.prior or recipes.PRIOR, **shape)


def dataset_name(args):
    return "data" if args.data else args.dataset or recipes.DATASET


def load_data(args):
    from zoo import data

    if getattr(args, "data", None):
        return data.load_file(args.data)
    return data.load(args.dataset or recipes.DATASET)


def check_device(name):
    """``--device NAME`` as a torch.device, refused in one line if this machine lacks it (the one flag the schema,
    which needs no torch, cannot check)."""
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
