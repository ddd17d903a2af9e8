"""Flags shared by the commands that build a model on a dataset (fit, prior-check, study)."""
import pyro
import torch

from zoo import TransformerClassifier, data, recipes
from zoo.models import MAX_TOKENS, default_patch
from zoo.models.classifier import WHERE


def add_data_arguments(parser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--dataset", default=data.DEFAULT_DATASET,
                       help=f"a shipped dataset (see `bzoo datasets`; default {data.DEFAULT_DATASET})")
    group.add_argument("--data", metavar="FILE", help="your own .npz (X [N,T,C] or [N,T], y [N]) or .csv")


def add_model_arguments(parser, many_priors=False):
    parser.add_argument("--bayes", default="weights",
                        help=f"where uncertainty lives: {', '.join(WHERE)}, or comma-separated globs over "
                             "parameter names (default weights)")
    parser.add_argument("--prior", metavar="SPEC", action="append" if many_priors else "store",
                        default=None, help=f"NAME[:key=value,...] or a JSON file of glob -> spec (default {recipes.PRIOR})"
                        + ("; repeat to compare priors" if many_priors else ""))
    parser.add_argument("--attention-prior", metavar="SPEC",
                        help="prior of attention rows with --bayes attention|bam (e.g. dirichlet:concentration=1, "
                             "key-dirichlet, bam-gamma)")
    for key, value in recipes.MODEL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=value, help=f"default {value}")
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout rate (MC dropout uses it)")
    parser.add_argument("--patch", type=int, help="time steps per token (default: the fewest that keep a series "
                                                  f"at most {MAX_TOKENS} tokens)")


def add_adapter_arguments(parser):
    parser.add_argument("--backbone", metavar="DIR", help="fine-tune a frozen backbone from `bzoo pretrain` through "
                                                          "adapters instead of training a transformer from scratch")
    parser.add_argument("--adapter", metavar="SPEC", default="lora",
                        help="with --backbone: lora[:rank=4,alpha=8,targets=*.attn.[qv]] or full (default lora)")


def build_adapter_model(args, dataset, prior=None, bayes=None):
    """The LoRAClassifier the flags describe; architecture flags set off their defaults must match the backbone."""
    from zoo.models.lora import LoRAClassifier

    shape = {k: getattr(args, k) for k in recipes.MODEL if getattr(args, k) != recipes.MODEL[k]}
    if args.patch:
        shape["patch"] = args.patch
    return LoRAClassifier.for_dataset(dataset, args.backbone, adapter=args.adapter, dropout=args.dropout,
                                      bayes=bayes or args.bayes, prior=prior or args.prior or recipes.PRIOR, **shape)


def add_run_arguments(parser):
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", metavar="DIR", help="run folder to write (refused if it holds a run)")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of a run already in --out")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")


def load_data(args):
    if getattr(args, "data", None):
        return data.load_file(args.data)
    return data.load(args.dataset)


def seed_everything(seed):
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def build_model(args, dataset, prior=None, bayes=None):
    """The TransformerClassifier the flags describe, sized for ``dataset``."""
    return TransformerClassifier(
        dataset.num_classes, input_dim=dataset.input_dim,
        vocab_size=int(max(dataset.train.x.max(), dataset.test.x.max())) + 1 if dataset.tokens else None,
        d_model=args.d_model, depth=args.depth, heads=args.heads, mlp_ratio=args.mlp_ratio,
        max_len=max(512, dataset.max_len), dropout=args.dropout,
        patch=args.patch or (1 if dataset.tokens else default_patch(dataset.max_len)), bayes=bayes or args.bayes,
        prior=prior or args.prior or recipes.PRIOR, attention_prior=getattr(args, "attention_prior", None))


def check_device(name):
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device '{name}' is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device
