"""bzoo diagnose RUN_DIR: convergence (where there are chains), PSIS-LOO with Pareto k, calibration, plots.

Reads ``RUN_DIR/posterior.nc`` (written by ``bzoo fit``), prints a summary and
writes ``RUN_DIR/diagnose/``: ``diagnostics.json`` and PNG plots. R-hat is
reported in function space (on the predictive probabilities, which are
identifiable) and, for reference, over the weight sites (where permutation
symmetry makes large values expected even for a good sampler).
"""
import json
from pathlib import Path

RHAT_OK = 1.01


def convergence(idata):
    """R-hat and ESS over chains: function space (predictive probabilities) and weight space."""
    import arviz as az
    import numpy as np

    from inference import arviz_io

    pp, post = arviz_io.group(idata, "posterior_predictive"), arviz_io.group(idata, "posterior")
    out = {}
    rhat = az.rhat(pp[["probs"]])["probs"].values
    out["function_rhat"] = rhat
    out["function_rhat_max"] = float(np.nanmax(rhat))
    out["function_rhat_share_above"] = float(np.mean(rhat > RHAT_OK))
    out["function_ess_bulk_min"] = float(np.nanmin(az.ess(pp[["probs"]])["probs"].values))
    out["loglik_rhat"] = float(az.rhat(post[["loglik"]])["loglik"])
    sites = [v for v in post.data_vars if v != "loglik"]
    if sites:
        site_rhat = az.rhat(post[sites])
        out["weight_rhat_max"] = float(max(np.nanmax(site_rhat[v].values) for v in sites))
    stats = arviz_io.group(idata, "sample_stats")
    if stats is not None and "diverging" in stats:
        out["divergences"] = int(stats["diverging"].values.sum())
    return out


def loo(idata, label):
    """PSIS-LOO with its Pareto k summary (``inference.compare.psis_loo``: warns where k > 0.7) and the count
    above ArviZ's sample-size threshold ``good_k``."""
    import numpy as np

    from inference.compare import psis_loo

    result, summary = psis_loo(idata, label)
    threshold = float(getattr(result, "good_k", 0.7))

    def stat(*names):  # ArviZ 0.x: elpd_loo, p_loo; 1.x: elpd, p
        return float(next(getattr(result, n) for n in names if hasattr(result, n)))

    return result, {"elpd_loo": stat("elpd_loo", "elpd"), "se": stat("se"), "p_loo": stat("p_loo", "p"),
                    "pareto_k_threshold": threshold,
                    "pareto_k_bad": int((np.asarray(result.pareto_k) > threshold).sum()), **summary}


def trace_sites(idata, var_names):
    """The sites to trace and coords keeping at most two entries per dim (weights are many)."""
    from inference import arviz_io

    post = arviz_io.group(idata, "posterior")
    names = list(post.data_vars)
    if var_names:
        names = arviz_io.select(names, var_names)
    else:
        names = sorted(names, key=lambda n: post[n].size)[:3]
    coords = {d: [0, 1] for n in names for d in post[n].dims[2:] if post.sizes[d] > 2}
    return names, coords


def run(args):
    from zoo.cli import UserError
    from zoo.folder_kinds import kind_of
    from zoo.runs import RunLock, claim, probe

    root = Path(args.run_dir)
    if not root.is_dir():
        raise UserError(f"run folder '{root}' does not exist" + (" (it is a file)" if root.exists() else ""))
    kind, marker = kind_of(root)
    if kind not in (None, "run"):
        raise UserError(f"'{root}' holds a {kind} ({marker}), not a run: diagnose a folder written by `bzoo fit`"
                        + (f" (the study's report is {root / 'results.md'})" if kind == "study" else ""))
    if not (root / "posterior.nc").is_file():
        raise UserError(f"'{root}' has no posterior.nc; write one with `bzoo fit --out {root}`")
    with RunLock(root):  # not while a run is writing it
        probe(root)
        claim(root, ["diagnose"])  # the run's own: an overwrite of the run replaces it too
        return diagnose(args, root)


def diagnose(args, root):
    import matplotlib

    matplotlib.use("Agg")
    from inference import plots
    from zoo.runs import to_plain

    idata, ll, post = read_run(root, args.var_names)
    out = root / "diagnose"
    out.mkdir(exist_ok=True)
    chains, draws = ll.sizes["chain"], ll.sizes["draw"]
    method = ll.attrs.get("method", "?")
    report = {"method": method, "chains": chains, "draws": draws}
    print(f"{root}: method {method}, {chains} chain(s) x {draws} draw(s), "
          f"{len(post.data_vars) - 1} posterior site(s) stored")
    if chains > 1:
        report["convergence"] = report_convergence(idata, out)
    else:
        print("R-hat/ESS: one chain (SVI or single-chain MCMC), nothing to compare across chains")
    if chains * draws > 1:
        report["loo"] = report_loo(idata, root, out)
    else:
        print("PSIS-LOO: a point estimate has one draw; LOO needs posterior draws")
    report["calibration"] = report_calibration(idata, out, args.bins, method)
    if post is not None and chains * draws > 1:  # a point estimate has no trace
        names, coords = trace_sites(idata, args.var_names)
        plots.trace(idata, out / "trace.png", names, coords)
        report["trace_sites"] = names
    (out / "diagnostics.json").write_text(json.dumps(to_plain(report), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def read_run(root, var_names):
    """The run's InferenceData, its log-likelihood and posterior groups; a UserError if it is not a fit's, or if a
    ``--var-names`` pattern matches no site."""
    from fnmatch import fnmatchcase

    from inference import arviz_io
    from zoo.cli import UserError

    path = root / "posterior.nc"
    try:
        idata = arviz_io.read(path)
    except (OSError, ValueError) as e:
        raise UserError(f"'{path}' cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    ll = arviz_io.group(idata, "log_likelihood")
    if ll is None or "y" not in ll:
        raise UserError(f"'{path}' has no log_likelihood group; is it a posterior written by bzoo fit?")
    post = arviz_io.group(idata, "posterior")
    if var_names:
        names = list(post.data_vars)
        missing = [g for g in var_names if not any(fnmatchcase(n, g) for n in names)]
        if missing:
            raise UserError(f"--var-names '{missing[0]}' matches no posterior site; sites are: {', '.join(names)}")
    return idata, ll, post


def report_convergence(idata, out):
    """Print R-hat and ESS over chains, plot the R-hat histogram; the numbers for diagnostics.json."""
    from inference import plots

    conv = convergence(idata)
    plots.rhat_histogram(conv.pop("function_rhat"), out / "rhat.png")
    flag = "ok" if conv["function_rhat_max"] <= RHAT_OK else "NOT CONVERGED"
    print(f"R-hat (function space, predictive probs): max {conv['function_rhat_max']:.3f}, "
          f"{conv['function_rhat_share_above']:.0%} above {RHAT_OK} [{flag}]; "
          f"min bulk ESS {conv['function_ess_bulk_min']:.0f}")
    print(f"R-hat of the total log-likelihood: {conv['loglik_rhat']:.3f}")
    if "weight_rhat_max" in conv:
        print(f"R-hat (weight space, max over sites): {conv['weight_rhat_max']:.3f} "
              "(large values are expected under permutation symmetry)")
    if "divergences" in conv:
        print(f"divergent transitions: {conv['divergences']}")
    return conv


def report_loo(idata, root, out):
    """Print PSIS-LOO with its Pareto k summary, plot the k values; the numbers for diagnostics.json."""
    from inference import plots

    result, r = loo(idata, str(root))
    print(f"PSIS-LOO: elpd_loo {r['elpd_loo']:.2f} (se {r['se']:.2f}), p_loo {r['p_loo']:.2f}; "
          f"Pareto k max {r['pareto_k_max']:.2f}, > {r['pareto_k_threshold']:.2f} for {r['pareto_k_bad']}, "
          f"> 0.7 for {r['pareto_k_above_0.7']}, > 1 for {r['pareto_k_above_1']} of {r['num_points']} points"
          + (" [WARNING: LOO unreliable for those points]" if r["pareto_k_bad"] else " [ok]"))
    plots.pareto_k(result, out / "pareto_k.png")
    return r


def report_calibration(idata, out, bins, method):
    """Print the predictive's metrics and draw its reliability diagram (with training's beside test's)."""
    import torch

    from inference import arviz_io, plots
    from inference.compare import metrics, predictions, stacked

    probs, y, split = predictions(idata)
    calibration = metrics(idata, bins)
    shown = ("accuracy", "nll", "ece", "aece", "brier", "entropy", "mi", "ood_auroc")
    print(f"calibration ({split}, {len(y)} points): "
          + "  ".join(f"{k} {calibration[k]:.4f}" for k in shown if k in calibration))
    curves = {split: (probs, y)}
    if split == "test":
        pp, obs = arviz_io.group(idata, "posterior_predictive"), arviz_io.group(idata, "observed_data")
        curves["train"] = (stacked(pp, "probs"), torch.as_tensor(obs["y"].values))
    plots.reliability_diagram(curves, out / "reliability.png", bins, title=f"Reliability ({method})")
    return calibration
