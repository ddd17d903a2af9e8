"""The study's results from its finished cells: ``results.json``, ``results.md`` and plots.

Written after every run from the cell files alone, so a resumed study reports exactly
what an uninterrupted one would. Plots: ``reliability-<dataset>.png`` (every method's
test predictive pooled over seeds), ``cd-<metric>.png`` (critical-difference diagrams
across datasets) and ``cost.png`` (accuracy and NLL against fit time).
"""
import json

import numpy as np
import torch

from .. import recipes
from . import stats
from .folder import write_json
from .footprint import show
from .detectors import detector_aurocs
from .plan import slug

CD_METRICS = ("accuracy", "nll", "ece", "ood_auroc", "shift_nll")
COLUMNS = {"accuracy": "accuracy", "nll": "NLL", "ece": "ECE", "brier": "Brier", "ood_auroc": "OOD AUROC",
           "shift_accuracy": "shift acc", "shift_nll": "shift NLL", "fit_seconds": "fit s",
           "predict_seconds": "predict s"}


def add_reference_distances(plan, folder, cells):
    """Each cell's distance (tv, kl) to the reference row's cell of the same dataset and seed, from stored probs,
    for rows on the reference's own network only (``--reference-arm``): between two networks a distance would
    mix approximation error with the difference of the models."""
    from inference.mcmc import predictive_distance

    label = recipes.REFERENCE["label"]
    rows = {r["label"]: r for r in plan.rows}
    if label not in rows:
        return
    same_network = {m for m, r in rows.items() if r.get("model") == rows[label]["model"]}
    refs = {(c["dataset"], c["seed"]): c for c in cells if c["method"] == label and c.get("status") == "ok"}
    for cell in cells:
        ref = refs.get((cell["dataset"], cell["seed"]))
        if ref is None or cell.get("status") != "ok" or cell["method"] not in same_network:
            continue
        probs = torch.as_tensor(folder.arrays(cell)["test_probs"])
        cell.setdefault("extra", {}).update(predictive_distance(probs, torch.as_tensor(folder.arrays(ref)["test_probs"])))


def metrics_of(cells):
    """The summary metrics: the fixed ones, then every numeric ``extra`` a cell reports (e.g. tv, kl)."""
    extra = []
    for cell in cells:
        for k, v in cell.get("extra", {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in extra:
                extra.append(k)
    return [*stats.METRICS, *extra]


def write(plan, folder, cells, missing=(), remaining_cpu_seconds=None):
    """Write results.json, results.md and the plots; return the results dict. ``missing``: the names of the
    plan's cells not yet run (a partial report), ``remaining_cpu_seconds`` a rough estimate of their cost."""
    add_reference_distances(plan, folder, cells)
    detectors = detector_aurocs(plan, folder) if cells else {}
    metrics = metrics_of(cells)
    datasets = [d["id"] for d in plan.datasets]
    methods = [r["label"] for r in plan.rows]
    ranked = [r["label"] for r in plan.rows if r.get("ranked", True)]  # equal selection budgets only
    summary = stats.summarize(cells, metrics)
    across = {}
    for metric in CD_METRICS:
        higher = stats.METRICS[metric]
        scores = stats.matrix(summary, metric, datasets, ranked)
        present = [j for j in range(len(ranked)) if not np.isnan(scores[:, j]).all()]
        full = stats.complete(scores[:, present])
        labels = [ranked[j] for j in present]
        if not len(labels):
            continue
        entry = {"datasets": int(len(full)), "average_ranks": dict(zip(labels, stats.ranks(full, higher).mean(0)))
                 if len(full) else {}}
        cd = stats.critical_difference(full, labels, higher, folder.path(f"cd-{metric}.png"))
        if cd is not None:
            entry.update(friedman=cd["friedman"], pairs=cd["pairs"], plot=f"cd-{metric}.png")
        across[metric] = entry
    cost = cost_table(cells, plan)
    ok = [c for c in cells if c.get("status") == "ok"]
    peak = max(ok, key=lambda c: c["memory"]["peak_rss"], default=None)
    results = {"study": {"fingerprint": plan.fingerprint(), "datasets": datasets, "seeds": plan.seeds,
                         "methods": methods, "profile": plan.profile, "evaluation": plan.evaluation,
                         "versions": plan.versions},
               "cells": cells, "summary": summary, "across_datasets": across, "cost": cost,
               "peak_memory": None if peak is None else {"peak_rss": peak["memory"]["peak_rss"],
                                                         "cell": cell_name(peak)},
               "failed": [{"cell": cell_name(c), "error": c.get("error")} for c in cells if c.get("status") != "ok"],
               "missing": list(missing), "remaining_cpu_seconds": remaining_cpu_seconds,
               "ood": {d: {"reference_auroc": detectors.get(d), "scale": ood_scale(ok, d)} for d in datasets}}
    plots = reliability_plots(folder, ok, datasets, methods) + [cost_plot(folder, summary, datasets, methods)]
    write_json(folder.path("results.json"), results)
    folder.path("results.md").write_text(markdown(plan, results, metrics, plots))
    return results


def ood_scale(cells, dataset):
    """The OOD set's scale against the test set's (``zoo.data.ood.scale``), the same in every cell of a dataset."""
    return next((c["ood_scale"] for c in cells if c["dataset"] == dataset and c.get("ood_scale")), None)


def ood_lines(dataset, results):
    """What a reader needs beside a dataset's OOD AUROCs: the set's scale, a model-free detector's AUROC, and why
    any AUROC is below 0.5."""
    ood = results["ood"].get(dataset) or {}
    reference, scale = ood.get("reference_auroc"), ood.get("scale")
    if not reference and not scale:
        return []
    text = "OOD set: " + (f"its standard deviation is {scale['std_ratio']:.3g} x the test set's and its mean "
                          f"{scale['mean_offset']:+.3g} test standard deviations off; " if scale else "")
    if reference:
        text += ("a model-free detector (distance to the 5th nearest training series) tells it from test with "
                 + ", ".join(f"AUROC {v:.3f} in {'input space' if k == 'input' else k + ' features'}"
                             for k, v in reference.items()) + ".")
    below = sorted(m for m, e in results["summary"].get(dataset, {}).items()
                   if (e.get("ood_auroc") or {}).get("mean") is not None and e["ood_auroc"]["mean"] < 0.5)
    if below:
        easy = reference and max(reference.values()) > 0.5
        text += (f" Below 0.5 ({', '.join(below)}): these predictives are *more* confident on the OOD inputs "
                 f"than on test inputs" + (", although the detector separates the two sets: overconfident "
                                           "extrapolation, not an OOD set too close to the data." if easy else
                                           ", and the detector cannot separate the sets either: the OOD inputs "
                                           "lie among the training series."))
    return ["", text]


def cell_name(cell):
    return f"({cell['dataset']}, seed {cell['seed']}, {cell['method']})"


def cost_table(cells, plan):
    """Per method: cells, fits per cell (selection candidates + refit), mean fit and predict seconds, largest peak."""
    out = {}
    for row in plan.rows:
        mine = [c for c in cells if c["method"] == row["label"] and c.get("status") == "ok"]
        if not mine:
            continue
        grid = 1
        for values in (row.get("select") or {}).values():
            grid *= len(values)
        out[row["label"]] = {"cells": len(mine), "fits_per_cell": grid + 1 if row.get("select") else 1,
                             "fit_seconds": float(np.mean([c["fit_seconds"] for c in mine])),
                             "predict_seconds": float(np.mean([c["predict_seconds"] for c in mine])),
                             "cell_seconds": float(np.mean([c["seconds"] for c in mine])),
                             "cpu_seconds": float(np.mean([c["cpu_seconds"] for c in mine])),
                             "peak_rss": max(c["memory"]["peak_rss"] for c in mine),
                             "peak_above_start": max(c["memory"]["peak_above_start"] for c in mine),
                             "estimate": max(c["memory"]["estimate"] for c in mine)}
    return out


def reliability_plots(folder, cells, datasets, methods):
    from inference.plots import reliability_diagram

    paths = []
    for d in datasets:
        preds = {}
        for m in methods:
            mine = [c for c in cells if c["dataset"] == d and c["method"] == m]
            if mine:
                arrays = [folder.arrays(c) for c in mine]
                preds[m] = (torch.as_tensor(np.concatenate([a["test_probs"] for a in arrays])),
                            torch.as_tensor(np.concatenate([a["y"] for a in arrays])))
        if preds:
            name = f"reliability-{slug(d)}.png"
            reliability_diagram(preds, folder.path(name), title=f"Reliability on {d} (test, seeds pooled)")
            paths.append(name)
    return paths


def cost_plot(folder, summary, datasets, methods):
    """Accuracy and NLL (mean over datasets of seed-means) against mean fit seconds, one point per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "nll")):
        for i, m in enumerate(methods):
            ys = [summary.get(d, {}).get(m, {}).get(metric, {}).get("mean") for d in datasets]
            xs = [summary.get(d, {}).get(m, {}).get("fit_seconds", {}).get("mean") for d in datasets]
            ys, xs = [y for y in ys if y is not None], [x for x in xs if x is not None]
            if ys and xs:
                ax.scatter(np.mean(xs), np.mean(ys), color=f"C{i % 10}", marker="os^D"[i // 10 % 4], label=m)
        ax.set_xscale("log")
        ax.set_xlabel("fit seconds (mean over cells, incl. selection)")
        ax.set_ylabel(f"test {metric} (mean over datasets)")
    axes[1].legend(fontsize=7, loc="best")
    fig.savefig(folder.path("cost.png"), dpi=110, bbox_inches="tight")
    return "cost.png"


def fmt(value, digits=4):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def mean_pm(entry):
    if entry is None or entry["mean"] is None:
        return "–"
    return fmt(entry["mean"]) + ("" if entry["se"] is None else f" ± {entry['se']:.2g}")


def markdown(plan, results, metrics, plots):
    """results.md: what was run, the tables per dataset and across datasets, the selections, the flagged cells, the
    cost, and what is missing."""
    lines = (header_section(plan, results) + methods_section(plan) + per_dataset_section(results, metrics)
             + across_section(results) + selection_section(results) + flagged_sections(results)
             + cost_section(results) + missing_section(results))
    return "\n".join(lines + ["", "Plots: " + ", ".join(f"`{p}`" for p in plots) + "."]) + "\n"


def header_section(plan, results):
    ev = plan.evaluation
    n_cells, missing = len(results["cells"]), results["missing"]
    lines = [f"# Study: {len(plan.datasets)} dataset(s) x {len(plan.seeds)} seed(s) x {len(plan.rows)} method(s) "
             f"= {n_cells + len(missing)} cells" + ("" if plan.profile == "main" else f" ({plan.profile})"), ""]
    if missing:
        lines += [f"**Partial report: {n_cells} of {n_cells + len(missing)} cells finished** (`--report-only`); "
                  f"the {len(missing)} missing are listed at the end. Averages, ranks and tests below use the "
                  f"finished cells alone.", ""]
    return lines + [f"Datasets: {', '.join(results['study']['datasets'])}. Seeds: {', '.join(map(str, plan.seeds))}. "
                    f"Steps x{ev['steps_scale']:g}; test and OOD metrics from {ev['samples']} posterior draws; shift "
                    f"metrics from {ev['shift_samples']} draws on at most {ev['shift_inputs']} test series, averaged "
                    f"over the shifted sets. Hyperparameters chosen on a stratified validation split of "
                    f"{ev['validation_fraction']:g} of training by validation NLL, the winner refitted on all of "
                    f"training (docs/study.md). Entries are mean ± standard error over seeds; `fit s` includes "
                    f"selection. Fingerprint `{results['study']['fingerprint']}`.", ""]


def methods_section(plan):
    lines = ["## Methods", "", "| method | where | prior | guide / peer | options | selected on validation |",
             "|---|---|---|---|---|---|"]
    for r in plan.rows:
        if "peer" in r:
            grid = json.dumps(r["select"]) if r.get("select") else "its own internal cross-validation (not ranked)"
            lines.append(f"| {r['label']} | peer | | {r['peer']} | {json.dumps(r['options']) if r['options'] else ''} "
                         f"| {grid} |")
        else:
            lines.append(f"| {r['label']} | {r['bayes']} | {r['prior']} | {r['guide']} | "
                         f"{json.dumps(r['options'])} | {json.dumps(r['select']) if r['select'] else ''} |")
    return lines


def per_dataset_section(results, metrics):
    summary = results["summary"]
    cols = [m for m in metrics if any(summary.get(d, {}).get(m2, {}).get(m, {}).get("mean") is not None
                                      for d in summary for m2 in summary[d])]
    lines = ["", "## Per dataset"]
    for d in results["study"]["datasets"]:
        table = summary.get(d, {})
        lines += ["", f"### {d}", "", "| method | " + " | ".join(COLUMNS.get(c, c) for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        for m in results["study"]["methods"]:
            if m in table:
                lines.append(f"| {m} | " + " | ".join(mean_pm(table[m].get(c)) for c in cols) + " |")
        lines += ood_lines(d, results)
    return lines


def across_section(results):
    across = results["across_datasets"]
    lines = ["", "## Across datasets", ""]
    if not across:
        return lines + ["No metric has values on every dataset for every method."]
    ranked = [k for k in CD_METRICS if k in across]
    lines += ["Average rank (1 = best) over the datasets where every ranked method has the metric; every ranked "
              "method selected among the same number of settings on validation (`recipes.SELECTION_BUDGET`).",
              "",
              "| method | " + " | ".join(f"{COLUMNS[k]} rank" for k in ranked) + " |", "|---|" + "---|" * len(ranked)]
    for m in [m for m in results["study"]["methods"] if any(m in across[k]["average_ranks"] for k in ranked)]:
        lines.append(f"| {m} | " + " | ".join(fmt(across[k]["average_ranks"].get(m), 3) for k in ranked) + " |")
    lines.append("")
    for k in ranked:
        entry = across[k]
        if "friedman" in entry and entry["friedman"]:
            f = entry["friedman"]
            lines.append(f"- {COLUMNS[k]}: Friedman chi2 = {f['statistic']:.3g}, p = {f['p']:.3g} over "
                         f"{f['datasets']} datasets; critical-difference diagram `{entry['plot']}`.")
        else:
            lines.append(f"- {COLUMNS[k]}: {entry['datasets']} complete dataset(s); the Friedman test and a "
                         f"critical-difference diagram need at least 2 datasets and 3 methods.")
    pairs = across.get("nll", {}).get("pairs")
    if pairs:
        lines += ["", "Pairwise one-sided Wilcoxon signed-rank tests on NLL (better-ranked first), as the "
                  "diagram draws them, with Holm-adjusted p-values over all pairs:", "",
                  "| better | worse | p | p (Holm) |", "|---|---|---|---|"]
        lines += [f"| {p['a']} | {p['b']} | {p['p']:.3g} | {p['p_holm']:.3g} |" for p in pairs]
    return lines


def selection_section(results):
    lines = ["", "## Selected on validation", "", "| dataset | seed | method | selected | validation NLL per candidate |",
             "|---|---|---|---|---|"]
    for c in results["cells"]:
        if c.get("selection"):
            scores = ", ".join(f"{json_values(e['values'])}: {fmt(e['nll'], 3)}" for e in c["selection"]["candidates"])
            lines.append(f"| {c['dataset']} | {c['seed']} | {c['method']} | {json_values(c['selected'])} | {scores} |")
    return lines


def flagged_sections(results):
    """The cells whose fit is degenerate, and the reference cells' convergence diagnostics."""
    cells = results["cells"]
    return cell_table(
        [c for c in cells if (c.get("info", {}).get("degeneracy") or {}).get("degenerate")],
        "Degenerate fits", "Cells whose final fit is degenerate on the training inputs (`inference.degeneracy`): "
        "a predictive that does not move with the input (a fit that never left its starting plateau, or one "
        "collapsed to its prior), or an approximate posterior on its prior. They stay in every table: they are "
        "what the recipe gives for that seed.",
        ["constant predictive (spread)", "on its prior (share)", "accuracy"],
        lambda c, d: [f"{d['constant_predictive']} ({fmt(d['predictive_spread'], 2)})",
                      f"{d['on_prior']} ({fmt(d['share_on_prior'], 2)})", fmt(c["accuracy"], 3)], "degeneracy") + cell_table(
        [c for c in cells if c.get("info", {}).get("convergence")],
        "Reference convergence", "Function-space diagnostics of each many-chain cell on its test inputs "
        "(docs/reference.md): targets nested R-hat <= 1.05 and bulk ESS >= 200.",
        ["nested R-hat (max)", "R-hat (max)", "bulk ESS (min)", "between-mode share"],
        lambda c, d: [fmt(d.get("nrhat_max")), fmt(d["rhat_max"]), fmt(d["ess_bulk_min"]),
                      fmt(d.get("between_mode_share"), 2)], "convergence")


def cost_section(results):
    lines = ["", "## Cost per method", "", "Mean over cells, on this machine; a cell's fits are the selection "
             "candidates plus the refit; CPU seconds (all threads of the process) do not grow with the machine's "
             "load as wall seconds do.", "",
             "| method | cells | fits per cell | fit s | predict s | cell s | cell CPU s | peak RSS | peak above start "
             "| estimate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, c in results["cost"].items():
        lines.append(f"| {m} | {c['cells']} | {c['fits_per_cell']} | {c['fit_seconds']:.1f} | "
                     f"{c['predict_seconds']:.1f} | {c['cell_seconds']:.1f} | {c['cpu_seconds']:.1f} | "
                     f"{show(c['peak_rss'])} | {show(c['peak_above_start'])} | {show(c['estimate'])} |")
    if results["peak_memory"]:
        lines += ["", f"Largest peak memory (resident, whole worker process): "
                  f"{show(results['peak_memory']['peak_rss'])} in cell {results['peak_memory']['cell']}."]
    if results["failed"]:
        lines += ["", "## Failed cells", ""] + [f"- {f['cell']}: {f['error']}" for f in results["failed"]]
    return lines


def missing_section(results):
    missing = results["missing"]
    if not missing:
        return []
    cost = results["remaining_cpu_seconds"]
    return ["", "## Missing cells", "", "Not run yet; the same command without `--report-only` runs them "
            "(and reuses every finished cell)" + ("." if cost is None else
            f", in about {cost / 3600:.1f} CPU hours (rough: each row's finished cells' CPU seconds per unit "
            f"of `zoo.study.run.work`, scaled to the missing cells; a row with none finished at the average "
            f"rate). `--jobs N` divides that wall time by about N."), ""] + [f"- {m}" for m in missing]


def cell_table(cells, title, intro, columns, values, key):
    """A section of results.md with one row per cell: dataset, seed, method, then ``values(cell, cell["info"][key])``
    under ``columns``; nothing when no cell qualifies."""
    if not cells:
        return []
    return ["", f"## {title}", "", intro, "", "| dataset | seed | method | " + " | ".join(columns) + " |",
            "|---|---|---|" + "---|" * len(columns)] + [
        f"| {c['dataset']} | {c['seed']} | {c['method']} | " + " | ".join(values(c, c["info"][key])) + " |"
        for c in cells]


def json_values(values):
    return ", ".join(f"{k}={v}" for k, v in values.items()) if values else "–"
