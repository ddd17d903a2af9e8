"""bzoo fit: fit one model with one guide or method and write a run folder.

Everything is checked before the fit starts: the flags, the data, the model, that the
requested draws fit in memory and on disk, and that the output folder can be written
(it is then locked). Metrics come from the same draws as ``posterior.nc``, so ``bzoo
diagnose`` reports the same numbers. A degenerate posterior gets a one-line warning
and a flag in ``metrics.json``. If writing the results fails, the fitted posterior is
saved elsewhere and the error says where.
"""
from core.schema import flag
from zoo import recipes

from .common import (build_adapter_model, build_model, check_device, check_output, dataset_name, load_data,
                     seed_everything, self_contained)


def run(args):
    from inference import NonFiniteError, fit
    from inference.fit import canonical, check_fit
    from zoo.options import FIT_OPTIONS
    from zoo.cli import UserError, warn
    from zoo.runs import RunFolder

    device = check_device(args.device)  # the flags' values and rules: zoo.options.FIT, checked by zoo.cli
    args.guide = canonical(args.guide)  # laplace-lora and laplace_lora are one name
    options = recipes.fit_options(args.guide, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                                  num_particles=args.num_particles, temperature=args.temperature,
                                  kl_anneal=args.kl_anneal, clip_norm=args.clip_norm)
    checkpoint_every = {} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}
    check_fit(args.guide, flag, args.seed, checkpoint=args.checkpoint_every,
              **{k: v for k, v in options.items() if k in FIT_OPTIONS}, **checkpoint_every)
    options.update(parse_options(args.option, args.guide))
    point = args.guide == "map"
    if point and args.num_samples is not None:
        raise UserError(f"--num-samples {args.num_samples} has no effect with --guide map (a point estimate "
                        f"predicts once)")
    num_samples = args.num_samples if args.num_samples is not None else recipes.NUM_SAMPLES
    dataset = load_data(args)
    seed_everything(args.seed)
    model = build_adapter_model(args, dataset) if args.backbone else build_model(args, dataset)
    draws = 1 if point else num_samples
    sizes = (sum(v.numel() for v in model.initial_values().values()), len(dataset.train) + len(dataset.test),
             dataset.num_classes, len(dataset.train))
    check_output(f"{draws} predictive draw(s)", draws, *sizes, ".", disk=False)
    folder = args.out or f"runs/fit-{dataset_name(args)}-{args.guide}-{args.seed}"
    with RunFolder(folder, args.overwrite) as out:
        check_output(f"{draws} predictive draw(s)", draws, *sizes, out.root, memory=False)
        sources = self_contained(out, model)
        if args.checkpoint_every is not None:
            options.update(checkpoint=out.path("checkpoint.pt", keep=True), checkpoint_every=args.checkpoint_every)
        try:
            posterior = fit(model, dataset.train, guide=args.guide, seed=args.seed, device=device, **options)
        except NonFiniteError as error:  # keep what was good: the fit as it stood before the failing step
            if getattr(error, "posterior", None) is None:
                raise
            path = out.path("posterior_last_good.pt", keep=True)
            error.posterior.save(path, preprocessing=dataset.preprocessing)
            raise NonFiniteError(f"{error}; the last good posterior is saved at {path}") from None
        options.pop("checkpoint", None)
        metrics, degeneracy = write_results(out, args, dataset, posterior, num_samples)
        out.record({"command": "fit", "dataset": dataset.name, "model": model.config(), "guide": args.guide,
                    "fit": options, "num_samples": num_samples, "device": str(device),
                    "site_priors": {n: p.spec() for n, p in model.priors.items()}, "prior_sources": sources},
                   args.seed)
    shown = {k: v for k, v in metrics.items() if isinstance(v, float) and k not in degeneracy.to_dict()}
    print(f"{dataset.name} {args.guide}: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
          + f"\nwrote {out.target}")
    if degeneracy.warning():
        warn(args, degeneracy.warning())
    return 0


def write_results(out, args, dataset, posterior, num_samples):
    """Metrics, posterior files and plots; if any write fails, the posterior is saved elsewhere and named."""
    from inference import arviz_io, degeneracy
    from inference.compare import metrics as stored_metrics, stacked
    from zoo.cli import first_line
    from zoo.runs import RunFolderError, rescue

    try:
        train, test = dataset.train, dataset.test
        idata = posterior.to_arviz(train.x, train.y, train.mask, num_samples=num_samples,
                                   test=(test.x, test.y, test.mask), seed=args.seed)
        train_probs = stacked(arviz_io.group(idata, "posterior_predictive"), "probs")
        found = degeneracy.check(posterior, train.x, train.mask, probs=train_probs)
        metrics = {**stored_metrics(idata), **beyond_test(posterior, dataset, args.seed, num_samples),
                   "fit_seconds": float(posterior.info.get("fit_seconds", 0.0)), **found.to_dict()}
        posterior.save(out.path("posterior.pt"), preprocessing=dataset.preprocessing)
        if posterior.point:
            import torch
            torch.save({n: v.detach().cpu() for n, v in posterior.point_weights().items()}, out.path("weights.pt"))
        arviz_io.write(idata, out.path("posterior.nc"))
        test_probs = stacked(arviz_io.group(idata, "predictions"), "probs")
        write_plots(out, posterior, test_probs, test.y)
        out.write_json("metrics.json", metrics)
    except Exception as error:  # noqa: BLE001 - a full disk, permissions, netCDF: the fit must not be lost
        saved = rescue(lambda p: posterior.save(p, preprocessing=dataset.preprocessing), "posterior.pt")
        raise RunFolderError(f"writing the results to '{out.target}' failed ({first_line(error)}); "
                             + (f"the fitted posterior is saved at {saved}" if saved
                                else "the posterior could not be saved anywhere either")) from error
    return metrics, found


def beyond_test(posterior, dataset, seed, num_samples):
    """The OOD (with its scale and the model-free detector's AUROC) and shift metrics a study cell reports, through
    the same ``zoo.evaluation`` path; the test metrics come from the stored InferenceData."""
    from zoo import recipes
    from zoo.evaluation import Sets, evaluate_all
    from zoo.study.detectors import default_cache, detector_auroc

    settings = {**recipes.EVALUATION, "samples": num_samples}
    sets = Sets.build(dataset, seed, settings["shift_inputs"], detector_auroc(dataset, default_cache()))
    metrics, shift, _ = evaluate_all(lambda x, mask, s: posterior.predict(x, s, mask), dataset, sets, settings)
    keep = ("ood_auroc", "ood_aupr", "ood_auroc_mi", "ood_aupr_mi", "ood_reference", "ood_scale", "shift_accuracy",
            "shift_nll")
    return {**{k: metrics[k] for k in keep if k in metrics}, "shift": shift}


def parse_options(items, guide):
    """``["num_chains=4", "jit_compile=true"]`` -> keyword options (guide_options for SVI guides)."""
    from inference import GUIDES
    from zoo.cli import UserError

    options = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"--option '{item}': expected KEY=VALUE, e.g. num_chains=4")
        if key.strip() in options:
            raise UserError(f"--option '{key.strip()}' is given twice")
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
    import matplotlib

    matplotlib.use("Agg")
    from inference import plots

    losses = posterior.info.get("losses")
    if losses:
        plots.loss_curve(losses, out.path("loss.png"))
    plots.reliability_diagram({posterior.method: (probs.cpu(), y.cpu())}, out.path("reliability.png"))
