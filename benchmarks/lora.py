"""Bayesian LoRA against the full-weight MAP transformer, measured in the same run (issue 13's question).

On one dataset and a backbone pretrained without it, every row of
``zoo.recipes.LORA_STUDY`` (each Bayesian-LoRA method, and a full fine-tune of the
same backbone) is fitted at temperature 1 and compared with the full-weight MAP
transformer trained from scratch in the same run (the study's ``map`` row). Where a method has a setting to choose (the row's ``select`` grid), it is
chosen by NLL on a stratified validation split carved from the training set
(``--val-fraction``); the method is then refitted on the whole training set with
that setting and evaluated once on the test set. The test set is never looked at
before that.

    python -m benchmarks.lora --backbone DIR            # or: bzoo bench lora --backbone DIR
"""
import argparse
import json
import time

import torch

def stratified_split(split, fraction, seed):
    """(train, validation) Splits: ``fraction`` of each class, at random, goes to validation."""
    from zoo.data import Split

    g = torch.Generator().manual_seed(seed)
    val = []
    for c in split.y.unique():
        idx = (split.y == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=g)]
        val.append(idx[: max(1, round(fraction * len(idx)))])
    val = torch.cat(val).sort().values
    keep = torch.ones(len(split.y), dtype=torch.bool)
    keep[val] = False

    def take(i):
        return Split(split.x[i], split.y[i], None if split.mask is None else split.mask[i])
    return take(keep), take(val)


def fit_row(row, dataset, train, backbone, seed, steps_scale=1.0):
    """Fit ``row`` (a ``zoo.recipes.LORA_STUDY`` row) on ``train``: (posterior, seconds, trained parameters)."""
    from inference import fit
    from zoo import recipes
    from zoo.pretrain import adapter_model

    torch.manual_seed(seed)
    model = adapter_model(row, dataset, backbone)
    options = recipes.fit_options(row["guide"], **row.get("options", {}))
    options["steps"] = max(1, int(options["steps"] * steps_scale))
    started = time.perf_counter()
    posterior = fit(model, train, guide=row["guide"], seed=seed, progress=False, **options)
    return posterior, time.perf_counter() - started, model.trained_parameters()


def score(posterior, split, num_samples):
    from inference import evaluate

    probs = posterior.predict(split.x, num_samples, split.mask)
    return evaluate(probs, split.y)


def run_row(row, dataset, backbone, val_fraction, seed, num_samples, steps_scale=1.0):
    """Select the row's ``select`` setting by validation NLL, refit on all training data, score on test."""
    scores, selected = {}, {}
    if row.get("select"):
        train, val = stratified_split(dataset.train, val_fraction, seed)
        (key, values), = row["select"].items()
        for value in values:
            posterior, _, _ = fit_row(with_setting(row, key, value), dataset, train, backbone, seed, steps_scale)
            scores[str(value)] = score(posterior, val, num_samples)["nll"]
        best = min(values, key=lambda v: scores[str(v)])
        selected, row = {key: best}, with_setting(row, key, best)
    posterior, seconds, trained = fit_row(row, dataset, dataset.train, backbone, seed, steps_scale)
    return {"label": row["label"], **score(posterior, dataset.test, num_samples), "fit_seconds": seconds,
            "trained_parameters": trained, "selected": selected, "validation_nll": scores}


def with_setting(row, key, value):
    """``row`` with ``key`` set: the row's prior, or a fit option."""
    if key in ("prior", "bayes"):
        return {**row, key: value}
    return {**row, "options": {**row.get("options", {}), key: value}}


def full_weight_map(dataset, seed, num_samples, steps_scale=1.0):
    """The study's full-weight MAP row: the default transformer trained from scratch (recipes)."""
    from inference import fit
    from zoo import TransformerClassifier, recipes
    from zoo.models import default_patch

    torch.manual_seed(seed)
    model = TransformerClassifier(dataset.num_classes, input_dim=dataset.input_dim, max_len=max(512, dataset.max_len),
                                  patch=default_patch(dataset.max_len), **recipes.MODEL)
    started = time.perf_counter()
    options = recipes.fit_options("map")
    options["steps"] = max(1, int(options["steps"] * steps_scale))
    posterior = fit(model, dataset.train, guide="map", seed=seed, progress=False, **options)
    seconds = time.perf_counter() - started
    return {"label": "full-weight map (peer)", **score(posterior, dataset.test, num_samples),
            "fit_seconds": seconds, "trained_parameters": sum(p.numel() for p in model.net.parameters()),
            "selected": {}, "validation_nll": {}}


def main(argv=None):
    from zoo import data, recipes
    from zoo.models.backbone import Backbone

    p = argparse.ArgumentParser(prog="bzoo bench lora", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", required=True, metavar="DIR", help="a backbone pretrained without --dataset")
    p.add_argument("--dataset", default="ItalyPowerDemand")
    p.add_argument("--methods", help="comma-separated labels (default all): "
                   + ", ".join(r["label"] for r in recipes.LORA_STUDY))
    p.add_argument("--val-fraction", type=float, default=0.3)
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every row's steps (0.01: a smoke run)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = data.load(args.dataset)
    backbone = Backbone.load(args.backbone)
    wanted = None if not args.methods else {m.strip() for m in args.methods.split(",")}
    results = [full_weight_map(dataset, args.seed, args.num_samples, args.steps_scale)]
    for row in recipes.LORA_STUDY:
        if wanted is None or row["label"] in wanted:
            results.append(run_row(row, dataset, backbone, args.val_fraction, args.seed, args.num_samples,
                                   args.steps_scale))
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    peer = results[0]
    print(f"{dataset.name}, backbone {args.backbone} (excluded {', '.join(backbone.excluded)}), seed {args.seed}, "
          f"T = 1")
    print(f"{'row':28s} {'accuracy':>8s} {'nll':>7s} {'ece':>7s} {'fit s':>7s} {'trained':>8s}  vs full-weight map")
    for r in results:
        verdict = "" if r is peer else ("acc >= 0.95 and nll below: yes" if r["accuracy"] >= 0.95 and
                                        r["nll"] < peer["nll"] else "no")
        print(f"{r['label']:28s} {r['accuracy']:8.4f} {r['nll']:7.4f} {r['ece']:7.4f} {r['fit_seconds']:7.1f} "
              f"{r['trained_parameters']:8d}  {verdict} {r['selected'] or ''}")
    return 0


if __name__ == "__main__":
    main()
