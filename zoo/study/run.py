"""``run_study``: the grid of cells checked, run where asked (here or on Dask), written as it finishes, reported.

The order is what makes a study safe to interrupt and to rerun: every argument against its declaration
(``zoo.options.STUDY``, the same schema as ``bzoo study``'s flags), every list and the output folder are
checked first (one-line ``StudyError``), then the engine is
started or reached, then each pending cell's memory estimate is checked against the
per-worker budget, and only then is anything written: ``study.json``, each cell the
moment it finishes, and finally the statistics from the cells on disk.
"""
from .. import recipes
from ..options import STUDY
from .engine import Engine
from .folder import MARKER, StudyFolder
from .footprint import check, estimate
from .plan import PREDICT_CHUNK, StudyError, make_plan, spell


def default_out(plan):
    names = [d["id"] for d in plan.datasets]
    what = names[0] if len(names) == 1 else f"{len(names)}-datasets"
    budget = ("" if plan.profile == "main" else f"-{plan.profile}") + (f"-{plan.arm}-arm" if plan.arm else "")
    return f"runs/study-{what}-{'-'.join(map(str, plan.seeds))}{budget}"


def run_study(out=None, datasets=None, seeds=None, methods=None, *, quick=False, sweep=False, peers=True,
              reference=False, steps_scale=None, num_samples=None, jobs=None, scheduler=None, memory_budget=None,
              overwrite=False, device="cpu", threads=None, progress=True, report_only=False, reference_arm=False,
              shortest_first=False, near_ood=False, full=False):
    """Run (or resume) a study into folder ``out``; returns (the results dict, also in ``out/results.json``,
    the folder).

    ``datasets``, ``seeds``, ``methods``: comma-separated strings or lists (``datasets="all"``
    for every shipped dataset; methods are row and peer labels, default the verdicts' rows, ``recipes.MAIN``, or
    all with a budget flag). By default the budget is ``recipes.MAIN_BUDGET``, on the verdicts' rows; ``full``
    runs every row's full recipe, ``quick`` and ``sweep`` cut steps, draws and selection grids (``recipes.QUICK``,
    ``recipes.SWEEP``).
    ``jobs`` runs cells on a local Dask cluster of that many processes, ``scheduler`` on an existing one;
    neither runs them here. ``memory_budget`` (bytes or "4G") is what one cell may use; by default half of the
    available memory shared among the concurrent cells. ``threads``: torch threads per cell (default: the
    cores, shared among the workers on each machine). ``reference_arm`` fits every row at the reference's network size
    beside the reference (``plan.at_reference_size``); ``near_ood`` trains each dataset without its last class and
    scores that class's test series as OOD. On Dask, cells start longest first (the shortest
    makespan), or ``shortest_first`` (the most finished cells before a deadline). ``report_only`` runs nothing: it reports the cells of
    this plan that ``out`` holds finished (``report_finished``).
    """
    STUDY.check({name: value for name, value in locals().items() if name in STUDY}, StudyError, spell)
    from core.memory import parse_size

    engine = Engine(jobs, scheduler, threads)  # flags first: a bad --jobs or an unreachable --scheduler before any data
    budget = None if memory_budget is None else (parse_size(memory_budget) if isinstance(memory_budget, str)
                                                 else int(memory_budget))
    chunk = PREDICT_CHUNK if budget is None else min(PREDICT_CHUNK, budget // 2)
    asked = (datasets, seeds, methods, steps_scale, num_samples, memory_budget)
    if report_only and out is not None and all(v is None for v in asked) and not (quick or sweep or full or reference
                                                                                   or reference_arm or near_ood):
        return report_finished(plan_of_folder(out, device), out)
    plan = make_plan(datasets, seeds, methods, quick=quick, peers=peers, reference=reference, reference_arm=reference_arm,
                     near_ood=near_ood,
                     steps_scale=steps_scale, num_samples=num_samples, device=device, chunk=chunk, sweep=sweep,
                     full=full)
    if report_only:  # with neither --jobs nor --scheduler (zoo.options.STUDY)
        return report_finished(plan, out or default_out(plan))
    folder = StudyFolder.check(out or default_out(plan), plan.config(), plan.fingerprint(), overwrite)
    with engine:
        tasks, finished = pending_tasks(plan, folder, engine, budget or engine.default_budget(), overwrite,
                                        shortest_first)
        folder.open()
        try:
            engine.run(tasks, folder.write_cell, total=len(finished) + len(tasks), done=len(finished),
                       progress=progress)
        except BaseException:
            folder.close()
            raise
    try:
        return report_run(plan, folder), folder
    finally:
        folder.close()


def pending_tasks(plan, folder, engine, budget, overwrite, shortest_first):
    """The cells still to run as engine tasks, each checked against the per-cell memory ``budget``, and the finished
    cells the folder already holds (reused by key). On Dask, the costliest cells first (the shortest makespan), or the
    cheapest with ``shortest_first`` (the most finished cells before a deadline: a machine given up, a session's end)."""
    tasks, finished = [], []
    for dataset, seed, row in plan.cells():
        key = plan.key(dataset, seed, row)
        done = folder.read_cell(dataset["id"], seed, row["label"], key) if (folder.resuming or overwrite) else None
        if done is not None:
            finished.append(done)
            continue
        label = f"({dataset['id']}, seed {seed}, {row['label']})"
        need = cell_estimate(row, dataset, plan.evaluation)
        check(label, need, budget)
        tasks.append({"dataset": dataset["id"], "ref": dataset["ref"], "seed": seed, "row": row, "key": key,
                      "label": label, "evaluation": plan.evaluation, "device": plan.device,
                      "threads": engine.threads(), "estimate": need, "budget": budget})
    if engine.client is not None:
        datasets = {d["id"]: d for d in plan.datasets}
        tasks.sort(key=lambda t: (1 if shortest_first else -1) * work(t["row"], datasets[t["dataset"]],
                                                                      plan.evaluation))
    return tasks, finished


def report_run(plan, folder):
    """The report of a finished run; every cell of the plan must have its file by now."""
    from .report import write

    cells, missing = read_cells(plan, folder)
    if missing:
        dataset, seed, row = missing[0]
        raise StudyError(f"cell ({dataset['id']}, seed {seed}, {row['label']}) has no finished file in "
                         f"'{folder.root}' after the run")
    return write(plan, folder, cells)


def read_cells(plan, folder):
    """The plan's cells that ``folder`` holds finished (matched by key), and the (dataset, seed, row) of the rest."""
    cells, missing = [], []
    for dataset, seed, row in plan.cells():
        cell = folder.read_cell(dataset["id"], seed, row["label"], plan.key(dataset, seed, row))
        if cell is None:
            missing.append((dataset, seed, row))
        else:
            cells.append(cell)
    return cells, missing


def plan_of_folder(out, device="cpu"):
    """The plan a study folder's ``study.json`` names (datasets, seeds, methods, budget, draws), rebuilt with this
    code: its cells are those whose keys still match (``--report-only`` with no other flag)."""
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(out) / MARKER).read_text())["config"]
        evaluation = config["evaluation"]
        datasets = [d.split(":")[0] for d in config["datasets"]]
        return make_plan(datasets, ",".join(map(str, config["seeds"])), config["methods"],
                         near_ood=config.get("arm") == "near-ood",
                         quick=config["profile"] == "quick", sweep=config["profile"] == "sweep",
                         full=config["profile"] == "full",
                         reference=recipes.REFERENCE["label"] in config["methods"],
                         reference_arm=config.get("arm") == "reference",
                         steps_scale=evaluation["steps_scale"], num_samples=evaluation["samples"],
                         device=config.get("device", device), chunk=evaluation["predict_chunk"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StudyError(f"--out '{out}': no readable {MARKER} to take the study's plan from ({type(e).__name__}: "
                         f"{e}); give --datasets, --seeds and --methods") from None


def report_finished(plan, out):
    """The report of the plan's cells that ``out`` holds finished, the rest listed as missing; runs nothing.

    For a study that is spread over several runs (each a group of rows, say, on a machine that keeps the
    folder): every cell is matched by its own key, so the report holds exactly the cells a complete run
    would reuse. ``study.json`` and the cells are left as they are.
    """
    from .report import write

    folder = StudyFolder(out, plan.config(), plan.fingerprint(), overwrite=False, resuming=False)
    if not folder.path(MARKER).is_file():
        raise StudyError(f"--out '{folder.root}' holds no study ({MARKER}) to report")
    cells, missing = read_cells(plan, folder)
    if not cells:
        raise StudyError(f"--out '{folder.root}' holds no finished cell of this study; nothing to report")
    names = [f"({dataset['id']}, seed {seed}, {row['label']})" for dataset, seed, row in missing]
    return write(plan, folder, cells, names, remaining_cpu_seconds(plan, cells, missing)), folder


def remaining_cpu_seconds(plan, cells, missing):
    """A rough CPU-seconds estimate of the ``missing`` (dataset, seed, row) cells: each row's finished cells' CPU
    seconds per unit of ``work``, or the finished cells' overall rate for a row with none finished."""
    datasets, rows = {d["id"]: d for d in plan.datasets}, {r["label"]: r for r in plan.rows}
    spent = {}
    for cell in cells:
        if cell.get("status") == "ok":
            cpu, units = spent.get(cell["method"], (0.0, 0.0))
            spent[cell["method"]] = (cpu + cell["cpu_seconds"],
                                     units + work(rows[cell["method"]], datasets[cell["dataset"]], plan.evaluation))
    if not spent:
        return None
    overall = sum(c for c, _ in spent.values()) / sum(u for _, u in spent.values())
    rate = {label: cpu / units for label, (cpu, units) in spent.items()}
    return sum(work(row, dataset, plan.evaluation) * rate.get(row["label"], overall) for dataset, _, row in missing)


CHAINS_PER_STEP = 8  # a reference cell's chains run as one vectorized pass of a small network: on ItalyPowerDemand
# 32 chains x 7,000 steps cost about 35 MAP fits of 1,000 steps (1,891 s against 54 s), i.e. 8 chains per MAP step


def work(row, dataset, evaluation):
    """A rough cost of a cell for ordering: fits x steps x series a step sees x tokens (x4 for sampled attention), plus
    prediction draws x test series x tokens. A reference cell counts its ensemble's MAP steps and its chains'
    steps (``CHAINS_PER_STEP`` chains as one MAP step), so the costliest cells start first."""
    from ..models import default_patch
    from .cell import step_batch
    from .select import candidates

    shapes = dataset["shapes"]
    tokens = shapes["length"] / (1 if shapes["tokens"] else default_patch(shapes["length"]))
    fits = len(candidates(row)) + 1 if row.get("select") else 1
    options = recipes.fit_options(row.get("guide"), **row.get("options", {}))
    steps = options["steps"]
    if row.get("guide") == "reference":
        chain_steps = options.get("warmup", 0) + options.get("num_samples", 0) * options.get("thin", 1)
        steps = options.get("num_members", 1) * steps + chain_steps * options.get("num_chains", 1) / CHAINS_PER_STEP
    steps *= evaluation["steps_scale"]
    attention = 4 if row.get("bayes") in ("attention", "dirichlet", "bam") else 1
    per_step = step_batch(shapes, row, shapes["n_train"], evaluation) or shapes["n_train"]
    return attention * tokens * (3 * fits * steps * per_step + evaluation["samples"] * 2 * shapes["n_test"])


def cell_estimate(row, dataset, evaluation):
    """Bytes the cell is expected to add at its peak (``footprint.estimate`` on the row's model; a peer's network
    is the MAP row's)."""
    from .cell import make_model

    model = make_model({"guide": "map", "model": row["model"]} if "peer" in row else row, dataset["shapes"])
    return estimate(model, dataset["shapes"], evaluation, evaluation["predict_chunk"], row.get("peer"))["total"]
