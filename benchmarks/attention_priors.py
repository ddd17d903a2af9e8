"""The learned (empirical-Bayes) and MAP-centred Dirichlet attention priors against the plain Dirichlet row (issue 31).

ItalyPowerDemand, one seed, the sweep budget (``recipes.SWEEP``: steps x 0.25, so 375 Dirichlet steps; 25 draws).
Every row chooses its knob among 3 settings by validation NLL on a split carved from training and is refitted on
all of training, as a study cell does (``zoo.study.select``); test is touched once per row:

- ``dirichlet attention``: the study row as it stands (the temperature, ``recipes.KL_WEIGHTS``);
- ``dirichlet attention (learned prior)``: ``dirichlet-eb:init=v``, the concentration fitted by the ELBO;
- ``dirichlet attention (centred prior)``: ``centred-dirichlet:strength=s``, centred on a MAP network fitted by the
  MAP recipe on the very series the attention fit sees (``zoo.study.cell.fit_centred``): the fitting part for the
  candidates, all of training for the refit, so validation never reaches a fit it scores.

The rows and their grids are ``zoo/recipes.py``'s, so these are the cells a sweep would compute, with the
attention-specific figures a cell does not keep.

Reported per row: test accuracy and NLL; on the training inputs, as ``bzoo fit``'s metrics.json has them,
``kl_per_attention_number`` and ``attention_entropy``; the posterior's concentration c per head over the tokens
(0.9 with uniform logits is the Dirichlet(1) prior), and the learned prior's fitted concentrations. One row per run
(a few minutes on 2 cores); the JSON keeps the rows measured before.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.attention_priors --row plain|learned|centred
"""
import argparse
import json
import time
from pathlib import Path

import torch

from inference import degeneracy, evaluate
from priors import LearnedDirichlet
from zoo import recipes
from zoo.study.cell import seed_everything, select_and_fit
from zoo.study.plan import load_dataset, resolve_row

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "attention_priors.json"
ROWS = {"plain": "dirichlet attention", "learned": "dirichlet attention (learned prior)",
        "centred": "dirichlet attention (centred prior)"}  # the study rows of zoo/recipes.py


def measured(predict, posterior, dataset, seed, evaluation):
    """Test accuracy and NLL; KL per attention number and attention entropy on training inputs; concentrations."""
    seed_everything(seed)
    test = evaluate(predict(dataset.test.x, dataset.test.mask, evaluation["samples"]), dataset.test.y)
    found = degeneracy.check(posterior, dataset.train.x, dataset.train.mask)
    model, guide = posterior.model, posterior.guide
    tokens = model.net.cfg.max_tokens
    out = {"accuracy": test["accuracy"], "nll": test["nll"],
           "kl_per_attention_number": found.kl_per_attention_number, "attention_entropy": found.attention_entropy,
           "c_over_tokens": {n: (guide.param(n).flatten() / tokens).tolist() for n in model.attention_sites},
           "fit_seconds": posterior.info["fit_seconds"]}
    if isinstance(model.attention_prior, LearnedDirichlet):
        out["learned_concentration"] = {n: model.attention_prior.concentration(n).flatten().tolist()
                                        for n in model.attention_sites}
    return out


def run(name, seed, evaluation):
    dataset = load_dataset(recipes.DATASET)
    started = time.perf_counter()
    row = resolve_row(next(r for r in recipes.STUDY if r["label"] == ROWS[name]))
    predict, _, posterior, chosen, selection = select_and_fit(row, dataset, seed, "cpu", evaluation)
    selection = {"candidates": [{"values": c["values"], "nll": c["nll"]} for c in selection["candidates"]]}
    return row["label"], {**measured(predict, posterior, dataset, seed, evaluation), "chosen": chosen,
                          "selection": selection, "select": row["select"],
                          "wall_seconds": time.perf_counter() - started}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", choices=tuple(ROWS), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-scale", type=float, default=recipes.SWEEP["steps_scale"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluation = {**recipes.EVALUATION, **recipes.SWEEP, "steps_scale": args.steps_scale}
    label, result = run(args.row, args.seed, evaluation)
    print(label, json.dumps(result), flush=True)
    settings = {"dataset": recipes.DATASET, "seed": args.seed,
                "evaluation": {k: evaluation[k] for k in ("steps_scale", "samples", "validation_fraction")}}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else settings
    if {k: results[k] for k in settings} != settings:
        raise SystemExit(f"{RESULTS} holds rows measured with other settings; remove it to measure these")
    results.setdefault("rows", {})[label] = {**result, "measured": time.strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
