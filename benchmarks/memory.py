"""Peak memory of fitting and predicting, and how it grows with data size and ``num_samples``.

The data is ItalyPowerDemand (or ``--dataset``) tiled ``--scale`` times with a
little jitter: 10x is 670 training and 10,290 test series by default. Every
measurement runs in a fresh child process, because a process's peak resident set
(``ru_maxrss``) can only grow: the child reports its peak after loading the data
and building the model (the baseline) and after the work, and the increase is what
the work cost. A fit job runs ``--steps`` SVI steps on the training set; a predict
job builds the guide without fitting (memory does not depend on fitted values) and
predicts the whole test set with S draws. On CUDA the peak of
``torch.cuda.max_memory_allocated`` is reported as well.

    python -m benchmarks.memory                 # or: bzoo bench memory
    python -m benchmarks.memory --scale 10 --num-samples 1,10,100 --json memory.json   # S=100: minutes
"""
import argparse
import json
import resource
import subprocess
import sys
import time

MIB = 2 ** 20


def _rss_mib():
    """This process's peak resident set size so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MIB if sys.platform == "darwin" else 1024)


def tiled(dataset, scale, seed=0):
    """``dataset`` with train and test tiled ``scale`` times, jittered by 1% of a standard deviation."""
    import torch

    from zoo.data import Split

    g = torch.Generator().manual_seed(seed)

    def tile(split):
        x = split.x.repeat(scale, *([1] * (split.x.dim() - 1)))
        if x.is_floating_point():
            x = x + 0.01 * torch.randn(x.shape, generator=g)
        mask = None if split.mask is None else split.mask.repeat(scale, 1)
        return Split(x, split.y.repeat(scale), mask)
    dataset.train, dataset.test = tile(dataset.train), tile(dataset.test)
    return dataset


def measure(job):
    """Run one job in this process and return its numbers (called in the child)."""
    import torch

    from inference import fit
    from zoo import TransformerClassifier, data

    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    ds = tiled(data.load(job["dataset"]), job["scale"])
    torch.manual_seed(0)
    if job.get("adapter"):  # a LoRA or full fine-tune of one backbone (the pretraining architecture, untrained)
        from zoo.models.backbone import Backbone
        from zoo.models.lora import LoRAClassifier
        model = LoRAClassifier(ds.num_classes, ds.input_dim, Backbone.random(), adapter=job["adapter"],
                               max_len=max(512, ds.max_len)).to(device)
    else:
        model = TransformerClassifier(ds.num_classes, input_dim=ds.input_dim, max_len=max(512, ds.max_len),
                                      bayes=job["bayes"]).to(device)
    predict = job["phase"] == "predict"
    if predict:  # the guide only: prediction memory does not depend on the fitted values
        posterior = fit(model, ds.train, guide=job["guide"], steps=0, seed=0, progress=False)
    baseline = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    if predict:
        probs = posterior.predict(ds.test.x, job["num_samples"], ds.test.mask, batch_size=job["predict_batch"])
    else:
        fit(model, ds.train, guide=job["guide"], steps=job["steps"], lr=1e-2, batch_size=job["batch_size"], seed=0,
            progress=False)
    out = {**job, "train": len(ds.train), "test": len(ds.test), "baseline_mib": baseline,
           "peak_mib": _rss_mib() - baseline, "seconds": time.perf_counter() - started}
    if predict:
        out["probs_mib"] = probs.numel() * probs.element_size() / MIB
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return out


def run_child(job):
    """``measure(job)`` in a fresh Python process, so its peak memory is its own."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(job)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory benchmark child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse(argv):
    p = argparse.ArgumentParser(prog="bzoo bench memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ItalyPowerDemand")
    p.add_argument("--scale", type=int, default=10, help="tile the data this many times (default 10)")
    p.add_argument("--guide", default="mean_field")
    p.add_argument("--bayes", default="weights")
    p.add_argument("--steps", type=int, default=3, help="fit steps per measurement (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="fit minibatch size (default: full batch)")
    p.add_argument("--num-samples", default="1,10,30",
                   help="predictive draws to measure, comma-separated (default 1,10,30)")
    p.add_argument("--predict-batch", type=int, default=1024, help="inputs per prediction batch (default 1024)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return 0
    base = {"dataset": args.dataset, "guide": args.guide, "bayes": args.bayes, "steps": args.steps,
            "batch_size": args.batch_size, "predict_batch": args.predict_batch, "device": args.device,
            "threads": args.threads}
    samples = [int(s) for s in args.num_samples.split(",")]
    jobs = [{**base, "phase": "fit", "scale": scale, "num_samples": None} for scale in (1, args.scale)]
    jobs += [{**base, "phase": "predict", "scale": 1, "num_samples": samples[-1]}]
    jobs += [{**base, "phase": "predict", "scale": args.scale, "num_samples": s} for s in samples]
    jobs += [{**base, "guide": "map", "phase": "fit", "scale": args.scale, "num_samples": None, "adapter": a}
             for a in ("lora", "full")]
    rows = [run_child(job) for job in jobs]
    adapters = {r["adapter"]: r for r in rows if r.get("adapter")}
    rows = [r for r in rows if not r.get("adapter")]
    cuda = args.device.startswith("cuda")
    print(f"peak memory above the baseline ({args.guide}, bayes={args.bayes}, fit: {args.steps} steps, batch "
          f"{args.batch_size or 'full'}; predict: batch {args.predict_batch}; {args.device})")
    print(f"{'phase':>8} {'train':>6} {'test':>6} {'S':>4} {'peak MiB':>9} {'output MiB':>11} {'seconds':>8}"
          + (f" {'CUDA MiB':>9}" if cuda else ""))
    for r in rows:
        print(f"{r['phase']:>8} {r['train']:>6} {r['test']:>6} {r['num_samples'] or '':>4} {r['peak_mib']:>9.1f} "
              f"{r.get('probs_mib', 0):>11.1f} {r['seconds']:>8.1f}" + (f" {r['cuda_peak_mib']:>9.1f}" if cuda else ""))
    fits = rows[:2]
    predicts = {(r["scale"], r["num_samples"]): r["peak_mib"] for r in rows[2:]}
    print(f"x{args.scale} data: fit memory x{fits[1]['peak_mib'] / max(fits[0]['peak_mib'], 1e-9):.2f}, predict memory "
          f"x{predicts[args.scale, samples[-1]] / max(predicts[1, samples[-1]], 1e-9):.2f} at S={samples[-1]} "
          f"(batched: only the [S, N, K] output grows with N)")
    if len(samples) > 1:
        lo, hi = samples[0], samples[-1]
        slope = (predicts[args.scale, hi] - predicts[args.scale, lo]) / (hi - lo)
        print(f"predict memory grows by {slope:.1f} MiB per draw at predict batch {args.predict_batch}")
    lora, full = adapters["lora"], adapters["full"]
    print(f"adapters (map fit, {args.steps} steps, x{args.scale} data, backbone d_model 64 depth 4): LoRA "
          f"{lora['peak_mib']:.1f} MiB, full fine-tune {full['peak_mib']:.1f} MiB, ratio "
          f"{lora['peak_mib'] / max(full['peak_mib'], 1e-9):.2f}" + (f"; CUDA {lora['cuda_peak_mib']:.1f} vs "
                                                                    f"{full['cuda_peak_mib']:.1f} MiB" if cuda else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([*rows, lora, full], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
