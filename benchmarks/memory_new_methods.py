"""Peak memory of `bzoo fit` on the longest shipped series for CGPT attention, IVON and FSP-Laplace (issue 30).

The issue's bar: on the longest shipped series, patched, each of the three fits under 4 GB peak. The dataset is
found from the shipped catalogue (``zoo.data.shipped.info``: header lengths, nothing loaded), patched as a study
cell patches it (``zoo.study.cell.model_options``), and each method takes its flags (guide, bayes, prior) from its
study row in ``recipes.STUDY``. Every run is a whole ``bzoo fit`` in a fresh child process: a short fit of
``--steps`` full-batch steps, then all that ``bzoo fit`` does after it (the test predictive with its default
draws, OOD and shift sets, ArviZ, plots). The figure is the child's peak resident set (``ru_maxrss`` from
``wait4``). Peak memory should not depend on the number of steps once a step has run; ``--repeat`` reruns one
method at ``--more-steps`` to check it. ``bzoo fit`` fits full batch, so the fit's share is an upper bound on a
study cell's, which takes ACSF1 in minibatches (``zoo.study.cell.step_batch``).

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.memory_new_methods
    # 22 minutes on 2 shared cores, 13 of them FSP-Laplace's run (its Lanczos steps; the wall_seconds in the JSON)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "memory_new_methods.json"
ROWS = {"cgpt": "cgpt attention", "ivon": "ivon", "fsp-laplace": "fsp-laplace (GP prior)"}  # study row labels
LIMIT_BYTES = 4 * 10**9  # the 4 GB, read as decimal gigabytes (the stricter reading)
MIB = 2**20


def longest_shipped():
    """The shipped dataset with the longest series, and that length."""
    from zoo.data.shipped import available, info

    lengths = {name: info(name).lengths[1] for name in available()}
    name = max(lengths, key=lengths.get)
    return name, lengths[name]


def study_patch(dataset):
    """The patch a study cell uses on ``dataset`` (``zoo.study.cell.model_options``)."""
    from zoo.study.cell import model_options
    from zoo.study.plan import load_dataset, shapes_of

    return model_options(shapes_of(load_dataset(dataset)), {})["patch"]


def row_flags(label):
    """`bzoo fit` flags for the study row ``label``: its guide, and its bayes and priors where it sets them."""
    from zoo import recipes

    row = next(r for r in recipes.STUDY if r["label"] == label)
    flags = ["--guide", row["guide"]]
    for key, flag in (("bayes", "--bayes"), ("prior", "--prior"), ("attention_prior", "--attention-prior")):
        if row.get(key):
            flags += [flag, row[key]]
    return flags


def peak_of(args):
    """Run ``bzoo fit ARGS`` in a child process: (its peak resident set in bytes, its wall seconds)."""
    with tempfile.TemporaryDirectory() as out, open(Path(out) / "stderr.txt", "w+") as errors:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "zoo.cli", "fit", *args, "--out", str(Path(out) / "run")],
                                 stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if child.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"bzoo fit {' '.join(args)} failed: {errors.read().strip().splitlines()[-1:]}")
    return usage.ru_maxrss * 1024, seconds  # Linux reports KiB


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_new_methods", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="fit steps of every run (default 20)")
    parser.add_argument("--repeat", default="cgpt", choices=sorted(ROWS), help="the method rerun at --more-steps")
    parser.add_argument("--more-steps", type=int, default=40, help="the rerun's steps (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if sys.platform != "linux":
        raise SystemExit("benchmarks.memory_new_methods reads ru_maxrss as Linux reports it (KiB): run it on Linux")
    dataset, length = longest_shipped()
    patch = study_patch(dataset)
    common = ["--dataset", dataset, "--patch", str(patch), "--seed", str(args.seed), "--device", "cpu"]
    plan = [(method, args.steps) for method in ROWS] + [(args.repeat, args.more_steps)]
    runs = []
    for method, steps in plan:
        flags = row_flags(ROWS[method]) + ["--steps", str(steps)]
        peak, seconds = peak_of(common + flags)
        runs.append({"method": method, "steps": steps, "flags": flags, "peak_bytes": peak,
                     "peak_mib": peak / MIB, "under_limit": peak < LIMIT_BYTES, "wall_seconds": seconds})
        print(f"{method:>12} {steps:>4} steps: peak {peak / MIB:8.1f} MiB ({seconds:.0f} s)", flush=True)
    first, again = next(r for r in runs if r["method"] == args.repeat), runs[-1]
    results = {"dataset": dataset, "length": length, "patch": patch, "tokens": -(-length // patch),
               "common_flags": common, "limit_bytes": LIMIT_BYTES, "threads": os.environ.get("OMP_NUM_THREADS"),
               "runs": runs, "steps_check": {"method": args.repeat, "steps": [first["steps"], again["steps"]],
                                             "relative_change": again["peak_bytes"] / first["peak_bytes"] - 1}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{dataset} (length {length}, patch {patch}): every method under {LIMIT_BYTES / 1e9:g} GB: "
          f"{all(r['under_limit'] for r in runs)}; {args.repeat} at {again['steps']} steps against "
          f"{first['steps']}: {100 * results['steps_check']['relative_change']:+.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
