"""Every shipped dataset fits and predicts with the default model and default patch: time and peak memory.

For each dataset (``--datasets``, default all), a fresh child process loads it, builds
``TransformerClassifier`` with ``recipes.MODEL``, ``max_len`` = the dataset's length and
``patch = default_patch(length)`` (at most 64 tokens), and for each row (MAP, Dirichlet
attention, BAM attention) fits ``--steps`` steps on the full training set and predicts
the whole test set with ``--num-samples`` draws. A child's peak resident set
(``ru_maxrss``) covers everything it did, so each line is one dataset's worst case.

    python -m benchmarks.datasets                     # all datasets, 2 steps, 100 draws
    python -m benchmarks.datasets --datasets ACSF1 --steps 5
"""
import argparse
import json
import resource
import subprocess
import sys
import time

ROWS = {"map": ("map", "weights"), "dirichlet": ("dirichlet", "attention"), "bam": ("bam", "bam")}


def measure(job):
    """One dataset, every row, in this process: seconds per row and this process's peak RSS in MiB."""
    import torch

    from inference import fit
    from zoo import TransformerClassifier, data, recipes
    from zoo.models import default_patch

    torch.set_num_threads(job["threads"])
    started = time.perf_counter()
    ds = data.load(job["dataset"])
    out = {"dataset": ds.name, "load_seconds": time.perf_counter() - started, "train": len(ds.train),
           "test": len(ds.test), "length": ds.max_len, "channels": ds.input_dim, "patch": default_patch(ds.max_len)}
    out["tokens"] = -(-ds.max_len // out["patch"])
    for row, (guide, bayes) in ROWS.items():
        torch.manual_seed(0)
        model = TransformerClassifier(ds.num_classes, input_dim=ds.input_dim, **recipes.MODEL, max_len=ds.max_len,
                                      patch=out["patch"], bayes=bayes)
        started = time.perf_counter()
        posterior = fit(model, ds.train, guide=guide, steps=job["steps"], lr=1e-3, progress=False)
        fitted = time.perf_counter()
        probs = posterior.predict(ds.test.x, job["num_samples"], ds.test.mask)
        assert torch.isfinite(probs).all() and probs.shape[-2:] == (len(ds.test), ds.num_classes)
        out[row] = {"fit_seconds": fitted - started, "predict_seconds": time.perf_counter() - fitted,
                    "draws": probs.shape[0]}
    out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.datasets", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="all", help="comma-separated names (default all)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    from zoo import data

    names = list(data.available()) if args.datasets == "all" else args.datasets.split(",")
    print(f"default model and patch, {args.steps} fit steps, {args.num_samples} predictive draws, "
          f"{args.threads} threads; peak RSS of a fresh process per dataset")
    print(f"{'dataset':22s} {'train':>5s} {'test':>5s} {'T':>5s} {'patch':>5s} {'tokens':>6s} {'load s':>6s} "
          + " ".join(f"{r + ' fit/pred s':>18s}" for r in ROWS) + f" {'peak MiB':>9s}")
    rows = []
    for name in names:
        job = {"dataset": name, "steps": args.steps, "num_samples": args.num_samples, "threads": args.threads}
        done = subprocess.run([sys.executable, "-m", "benchmarks.datasets", "--child", json.dumps(job)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name:22s} FAILED: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['dataset']:22s} {r['train']:5d} {r['test']:5d} {r['length']:5d} {r['patch']:5d} {r['tokens']:6d} "
              f"{r['load_seconds']:6.2f} " + " ".join(f"{r[k]['fit_seconds']:8.1f}/{r[k]['predict_seconds']:<9.1f}"
                                                     for k in ROWS) + f" {r['peak_mib']:9.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
