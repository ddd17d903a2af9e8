"""bzoo fit: fit one model with one guide or method and write a run folder."""
import time

import torch

from inference import NonFiniteError, evaluate, fit, method_names
from zoo import recipes
from zoo.runs import RunFolder

from .common import (add_adapter_arguments, add_data_arguments, add_model_arguments, add_run_arguments,
                     build_adapter_model, build_model, check_device, load_data, seed_everything)

NAME = "fit"
HELP = "fit a Bayesian transformer and write metrics.json, posterior.pt, posterior.nc and plots"


def add_arguments(parser):
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_adapter_arguments(parser)
    parser.add_argument("--guide", default="mean_field", help=f"one of: {', '.join(method_names())} (default mean_field)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default per guide, see zoo/recipes.py)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default per guide)")
    parser.add_argument("--batch-size", type=int, help="minibatch size (default: full batch)")
    parser.add_argument("--num-particles", type=int, help="vectorized ELBO particles (default 1)")
    parser.add_argument("--temperature", type=float, help="likelihood temperature T; T < 1 is a cold posterior")
    parser.add_argument("--kl-anneal", type=int, help="steps of linear KL warm-up (default 0)")
    parser.add_argument("--clip-norm", type=float, help="clip the gradient norm to this value")
    parser.add_argument("--num-samples", type=int, default=recipes.NUM_SAMPLES, help="predictive draws (default 100)")
    parser.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                        help="a guide or method setting, repeatable: e.g. num_chains=4, warmup=200 (nuts), "
                             "num_members=5 (ensemble), rank=10 (low_rank), init_concentration=100 (dirichlet)")
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="save DIR/checkpoint.pt every N steps; rerunning the same command resumes from it")
    add_run_arguments(parser)


def run(args):
    device = check_device(args.device)
    out = RunFolder(args.out or f"runs/fit-{args.dataset if not args.data else 'data'}-{args.guide}-{args.seed}",
                    args.overwrite)
    dataset = load_data(args)
    seed_everything(args.seed)
    model = build_adapter_model(args, dataset) if args.backbone else build_model(args, dataset)
    options = recipes.fit_options(args.guide, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                                  num_particles=args.num_particles, temperature=args.temperature,
                                  kl_anneal=args.kl_anneal, clip_norm=args.clip_norm)
    options.update(parse_options(args.option, args.guide))
    if args.checkpoint_every:
        options.update(checkpoint=out.path("checkpoint.pt"), checkpoint_every=args.checkpoint_every)
    started = time.perf_counter()
    try:
        posterior = fit(model, dataset.train, guide=args.guide, seed=args.seed, device=device, **options)
    except NonFiniteError as error:  # keep what was good: the fit as it stood before the failing step
        if getattr(error, "posterior", None) is not None:
            error.posterior.save(out.path("posterior_last_good.pt"), preprocessing=dataset.preprocessing)
        raise
    fit_seconds = time.perf_counter() - started
    options.pop("checkpoint", None)
    test = dataset.test
    probs = posterior.predict(test.x, args.num_samples, test.mask)
    metrics = {**evaluate(probs, test.y.to(probs.device)), "fit_seconds": fit_seconds}
    out.write_json("metrics.json", metrics)
    posterior.save(out.path("posterior.pt"), preprocessing=dataset.preprocessing)
    if posterior.point:
        torch.save({n: v.detach().cpu() for n, v in posterior.point_weights().items()}, out.path("weights.pt"))
    idata = posterior.to_arviz(dataset.train.x, dataset.train.y, dataset.train.mask, num_samples=args.num_samples,
                               test=(test.x, test.y, test.mask), seed=args.seed)
    idata.to_netcdf(str(out.path("posterior.nc")))
    write_plots(out, posterior, probs, test.y)
    out.record({"command": "fit", "dataset": dataset.name, "model": model.config(), "guide": args.guide,
                "fit": options, "num_samples": args.num_samples, "device": str(device)}, args.seed)
    print(f"{dataset.name} {args.guide}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
          + f"\nwrote {out.root}")
    return 0


def parse_options(items, guide):
    """``["num_chains=4", "jit_compile=true"]`` -> keyword options (guide_options for SVI guides)."""
    from inference import GUIDES

    options = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--option '{item}': expected KEY=VALUE, e.g. num_chains=4")
        options[key.strip()] = _value(text.strip())
    return {"guide_options": options} if guide in GUIDES and options else options


def _value(text):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def write_plots(out, posterior, probs, y):
    from inference import plots

    losses = posterior.info.get("losses")
    if losses:
        plots.loss_curve(losses, out.path("loss.png"))
    plots.reliability_diagram({posterior.method: (probs.cpu(), y.cpu())}, out.path("reliability.png"))
