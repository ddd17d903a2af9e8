"""BLoB on ItalyPowerDemand at T = 1: the plain-ELBO guide against BLoB as its reference implementation trains it.

On a backbone pretrained without the dataset, seed 0, temperature 1, adapters
``lora:rank=4,alpha=8`` on q and v with ``bayes="adapters"``, every variant fits the
whole training set for ``--steps`` full-batch steps at lr 1e-2 and is scored once on
test with ``--num-samples`` predictive draws:

- ``old``: the ``BLoB`` guide through the plain SVI loop (one shared draw of A per step,
  the ELBO's KL, the model's prior N(0, 1) on A), as ``bzoo fit --guide blob`` ran before;
- ``old, prior 0.2``: the same with the model's prior N(0, 0.2^2);
- ``no flipout+elbo``: ``fit_blob`` without Flipout, the ELBO's KL weight 1 / N, BLoB's prior N(0, 0.2^2) on A
  (the model's N(0, 1) on B): the old fit but for A's prior;
- ``flipout+elbo``: the same with Flipout (``fit_blob``'s defaults);
- ``flipout+reweight``: Flipout and the reference's KL re-weighting, one Adam for both terms;
- ``flipout+reweight+sgd KL``: the same with the KL stepped by SGD at ``--kl-lr`` (the reference's two optimizers).

    OMP_NUM_THREADS=1 nice -n 5 python -m benchmarks.blob_ipd --backbone DIR
"""
import argparse
import json
import time

import torch

VARIANTS = {
    "old": {"svi": True, "prior": "gaussian:scale=1"},
    "old, prior 0.2": {"svi": True, "prior": "gaussian:scale=0.2"},
    "no flipout+elbo": {"flipout": False},
    "flipout+elbo": {},
    "flipout+reweight": {"kl_weighting": "blob"},
    "flipout+reweight+sgd KL": {"kl_weighting": "blob", "kl_lr": "KL_LR"},
}


def run(label, variant, dataset, backbone, steps, lr, kl_lr, num_samples, seed):
    from inference import evaluate, fit
    from inference.guides import BLoB
    from inference.blob import fit_blob
    from zoo.models.lora import LoRAClassifier

    variant = dict(variant)
    prior = variant.pop("prior", "gaussian:scale=1")
    torch.manual_seed(seed)
    model = LoRAClassifier.for_dataset(dataset, backbone, adapter="lora:rank=4,alpha=8", bayes="adapters", prior=prior)
    train = dataset.train
    started = time.perf_counter()
    if variant.pop("svi", False):
        guide = BLoB(model, train.x[:2], train.y[:2], None if train.mask is None else train.mask[:2])
        posterior = fit(model, train, guide=guide, steps=steps, lr=lr, seed=seed, progress=False)
    else:
        variant = {k: (kl_lr if v == "KL_LR" else v) for k, v in variant.items()}
        posterior = fit_blob(model, (train.x, train.y, train.mask), steps=steps, lr=lr, seed=seed, progress=False,
                             **variant)
    seconds = time.perf_counter() - started
    torch.manual_seed(seed)
    probs = posterior.predict(dataset.test.x, num_samples, dataset.test.mask)
    scores = evaluate(probs, dataset.test.y)
    sigma = torch.cat([s.detach().flatten() for s in posterior.guide.scales().values()])
    return {"label": label, "accuracy": scores["accuracy"], "nll": scores["nll"], "ece": scores["ece"],
            "fit_seconds": seconds, "sigma_A_median": sigma.median().item()}


def main(argv=None):
    from zoo import data
    from zoo.models.backbone import Backbone

    p = argparse.ArgumentParser(prog="python -m benchmarks.blob_ipd", description=__doc__.split("\n\n")[0])
    p.add_argument("--backbone", required=True, metavar="DIR", help="a backbone pretrained without the dataset")
    p.add_argument("--dataset", default="ItalyPowerDemand")
    p.add_argument("--variants", help="comma-separated labels (default all): " + ", ".join(VARIANTS))
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--kl-lr", type=float, default=0.01, help="SGD's learning rate for the KL (the reference's kllr)")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    dataset = data.load(args.dataset)
    backbone = Backbone.load(args.backbone)
    wanted = list(VARIANTS) if not args.variants else [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in wanted if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant '{unknown[0]}'; valid: {', '.join(VARIANTS)}")
    print(f"{dataset.name}, backbone {args.backbone} (excluded {', '.join(backbone.excluded)}), seed {args.seed}, "
          f"T = 1, {args.steps} steps, lr {args.lr}, kl_lr {args.kl_lr}, {args.num_samples} draws", flush=True)
    print(f"{'variant':26s} {'accuracy':>8s} {'nll':>7s} {'ece':>7s} {'fit s':>7s} {'median sigma_A':>14s}", flush=True)
    rows = []
    for label in wanted:
        r = run(label, VARIANTS[label], dataset, backbone, args.steps, args.lr, args.kl_lr, args.num_samples,
                args.seed)
        rows.append(r)
        print(f"{label:26s} {r['accuracy']:8.4f} {r['nll']:7.4f} {r['ece']:7.4f} {r['fit_seconds']:7.1f} "
              f"{r['sigma_A_median']:14.4g}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    main()
