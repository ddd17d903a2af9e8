"""The study engine on tiny rows: selection on validation, resumable cells, refusals, statistics by hand."""
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from zoo import cli, recipes
from zoo.data import Split, load
from zoo.study import StudyError, run_study
from zoo.study import cell as cell_module
from zoo.study import stats
from zoo.study.footprint import PeakSampler
from zoo.study.plan import make_plan, thin
from zoo.study.run import default_out, work
from zoo.study.select import candidates, choose, validation_split, with_values

TINY = {"d_model": 8, "depth": 1, "heads": 2}
ROWS = [
    {"label": "map", "guide": "map", "model": TINY, "options": {"steps": 8}},
    {"label": "mean_field", "guide": "mean_field", "model": TINY, "options": {"steps": 8},
     "select": {"temperature": [1.0, 0.1]}},
]
PEERS = [{"label": "plain", "peer": "plain", "model": TINY, "options": {"steps": 8}}]


@pytest.fixture
def tiny_rows(monkeypatch):
    monkeypatch.setattr(recipes, "STUDY", ROWS)
    monkeypatch.setattr(recipes, "STUDY_PEERS", PEERS)
    monkeypatch.setattr(recipes, "MAIN", [r["label"] for r in [*ROWS, *PEERS]])  # the main job runs them all


def bzoo(*argv):
    return cli.main([str(a) for a in argv])


def metrics(results):
    keys = ("accuracy", "nll", "ece", "brier", "ood_auroc", "selected")
    return {(c["dataset"], c["seed"], c["method"]): {k: c.get(k) for k in keys} for c in results["cells"]}


def test_validation_split_is_stratified_disjoint_and_seeded():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3])
    train = Split(torch.arange(len(y), dtype=torch.float32)[:, None, None], y)
    part, val, index = validation_split(train, seed=3, fraction=0.2)
    assert set(part.x.flatten().tolist()).isdisjoint(val.x.flatten().tolist())
    assert sorted(part.x.flatten().tolist() + val.x.flatten().tolist()) == list(range(len(y)))
    assert torch.equal(val.x.flatten().long(), index)
    counts = torch.bincount(val.y, minlength=4).tolist()
    assert counts == [2, 1, 1, 0]  # round(0.2 n) clipped to [1, n - 1]; a class of one stays in the fit
    assert torch.equal(validation_split(train, 3, 0.2)[2], index)
    assert not torch.equal(validation_split(train, 4, 0.2)[2], index)


def test_a_grid_names_fit_options_model_options_and_priors():
    row = {"label": "r", "guide": "mean_field", "options": {"steps": 5},
           "select": {"temperature": [1, 0.1], "model.dropout": [0.0, 0.2], "prior": ["gaussian:scale=3"]}}
    grid = candidates(row)
    assert len(grid) == 4 and grid[0] == {"temperature": 1, "model.dropout": 0.0, "prior": "gaussian:scale=3"}
    chosen = with_values(row, grid[3])
    assert chosen["options"] == {"steps": 5, "temperature": 0.1} and chosen["model"] == {"dropout": 0.2}
    assert chosen["prior"] == "gaussian:scale=3" and "select" not in chosen and row["options"] == {"steps": 5}
    assert choose([0.5, 0.2, 0.2, float("inf")]) == 1 and choose([float("nan"), float("inf")]) is None
    assert thin([1, 0.3, 0.1, 0.03, 0.01], 3) == [1, 0.1, 0.01] and thin([1, 2], 3) == [1, 2]
    assert thin([1, 0.3, 0.1, 0.03, 0.01], recipes.QUICK_GRID) == [1, 0.01]  # --quick's grids: the ends


def test_selection_fits_on_training_less_validation_scores_on_validation_and_refits(monkeypatch, one_thread):
    dataset = load("ItalyPowerDemand")
    seen = []
    real_fit = cell_module.fit

    def spy(model, data, **options):
        seen.append((data.x.clone(), options.get("temperature")))
        return real_fit(model, data, **options)
    monkeypatch.setattr(cell_module, "fit", spy)
    row = {**ROWS[1], "model": {**recipes.MODEL, **TINY},
           "options": recipes.fit_options("mean_field", steps=8), "select": {"temperature": [1.0, 0.1, 0.01]}}
    evaluation = {**recipes.EVALUATION, "samples": 4, "steps_scale": 1.0}
    _, seconds, _, selected, selection = cell_module.select_and_fit(row, dataset, 0, torch.device("cpu"), evaluation)
    part, val, index = validation_split(dataset.train, 0, evaluation["validation_fraction"])
    rows_of = lambda x: {tuple(r.flatten().tolist()) for r in x}  # noqa: E731
    train, test, held = rows_of(dataset.train.x), rows_of(dataset.test.x), rows_of(val.x)
    assert held <= train and held.isdisjoint(test) and not held & rows_of(part.x)
    assert [t for _, t in seen] == [1.0, 0.1, 0.01, selected["temperature"]]
    for x, _ in seen[:3]:  # every candidate is fitted on training less validation, never on a test series
        assert rows_of(x) == rows_of(part.x) and rows_of(x).isdisjoint(held) and rows_of(x).isdisjoint(test)
    assert torch.equal(seen[3][0], dataset.train.x)  # the winner is refitted on all of training
    scores = [c["nll"] for c in selection["candidates"]]
    assert selected == selection["candidates"][int(np.argmin(scores))]["values"]
    assert selection["validation_size"] == len(index) == len(val) and all(math.isfinite(s) for s in scores)
    assert seconds >= sum(c["fit_seconds"] for c in selection["candidates"])


def test_the_main_job_runs_the_verdicts_rows_at_the_sweep_budget_and_full_runs_every_row_at_its_recipe():
    main, full = make_plan("ItalyPowerDemand", "0"), make_plan("ItalyPowerDemand", "0", full=True)
    assert [r["label"] for r in main.rows] == [r["label"] for r in full.rows if r["label"] in recipes.MAIN]
    assert sorted(r["label"] for r in main.rows) == sorted(recipes.MAIN)  # every main row is offered
    assert len(full.rows) > len(main.rows) and full.evaluation["steps_scale"] == 1.0
    assert {k: main.evaluation[k] for k in recipes.MAIN_BUDGET} == recipes.MAIN_BUDGET
    assert all(len(v) <= recipes.QUICK_GRID for r in main.rows for v in (r.get("select") or {}).values())
    assert "-full" in default_out(full) and default_out(main) == "runs/study-ItalyPowerDemand-0"
    with pytest.raises(StudyError, match="--quick and --full are budgets"):
        make_plan("ItalyPowerDemand", "0", quick=True, full=True)


def test_the_sweep_budget_scales_steps_and_warm_ups_thins_grids_and_leaves_the_recipes_alone():
    plan = make_plan("ItalyPowerDemand", "0", "map,mean_field,mc_dropout", sweep=True)
    full = make_plan("ItalyPowerDemand", "0", "map,mean_field,mc_dropout", full=True)
    assert plan.profile == "sweep" and full.profile == "full" and plan.fingerprint() != full.fingerprint()
    assert {k: plan.evaluation[k] for k in recipes.SWEEP} == recipes.SWEEP
    rows = {r["label"]: r for r in plan.rows}
    assert rows["mean_field"]["select"]["temperature"] == [1.0, 0.1, 0.01]
    assert rows["mc_dropout"]["select"] == {k: thin(v, recipes.SWEEP_GRID) for k, v in
                                            next(r for r in full.rows if r["label"] == "mc_dropout")["select"].items()}
    assert rows["map"]["options"] == recipes.MAP_TRAINING  # the budget acts at fit time, the row is the recipe's
    options = cell_module.scaled(rows["map"]["options"], plan.evaluation["steps_scale"])
    s = recipes.SWEEP["steps_scale"]
    assert options == {**recipes.MAP_TRAINING, "steps": int(recipes.MAP_TRAINING["steps"] * s),
                       "kl_anneal": int(recipes.MAP_TRAINING["kl_anneal"] * s)}  # the warm-up keeps its share
    assert cell_module.scaled({"lr": 0.1, "kl_anneal": 0}, 0.1) == {"lr": 0.1, "kl_anneal": 0}


@pytest.mark.parametrize("name, batch", [("ItalyPowerDemand", None), ("OSULeaf", 67), ("digits", 512)])
def test_a_fit_step_sees_at_most_the_token_budget(name, batch):
    """Full batch where training fits in ``step_tokens``; else as many series as fit (OSULeaf: 427 steps in
    patches of 7 -> 61 tokens, 4096 // 61 = 67 series)."""
    shapes = load_shapes(name)
    row = {"label": "map", "guide": "map", "model": recipes.MODEL}
    got = cell_module.step_batch(shapes, row, shapes["n_train"], recipes.EVALUATION)
    assert got == batch
    if batch is not None:
        tokens = -(-shapes["length"] // cell_module.model_options(shapes, row)["patch"])
        assert batch * tokens <= recipes.EVALUATION["step_tokens"] < (batch + 1) * tokens
    assert cell_module.step_batch(shapes, row, shapes["n_train"], {**recipes.EVALUATION, "step_tokens": None}) is None
    options = cell_module.fit_options({**row, "options": {"steps": 3, "batch_size": 5}}, shapes, shapes["n_train"],
                                      {**recipes.EVALUATION, "steps_scale": 1.0})
    assert options["batch_size"] == 5  # a row's own batch size wins


def load_shapes(name):
    from zoo.study.plan import shapes_of

    return shapes_of(load(name))


def test_a_study_writes_cells_resumes_without_touching_them_and_equals_an_uninterrupted_run(tmp_path, tiny_rows,
                                                                                          monkeypatch):
    whole = tmp_path / "whole"
    results, _ = run_study(whole, "ItalyPowerDemand", "0,1", num_samples=3, threads=1, progress=False)
    assert len(results["cells"]) == 6
    for cell in results["cells"]:
        assert {"dataset", "seed", "method", "accuracy", "nll", "ece", "brier", "ood_auroc", "fit_seconds",
                "selected"} <= set(cell)
        assert cell["memory"]["peak_rss"] >= cell["memory"]["start_rss"] > 0
    mf = [c for c in results["cells"] if c["method"] == "mean_field"]
    assert all(c["selected"]["temperature"] in (1.0, 0.1) and len(c["selection"]["candidates"]) == 2 for c in mf)
    text = (whole / "results.md").read_text()
    assert "| mean_field |" in text and "± " in text and (whole / "reliability-italypowerdemand.png").exists()
    for cell in results["cells"]:  # every row's fit is checked for degeneracy; a peer has no posterior to check
        assert ("degeneracy" in cell["info"]) == (cell["method"] != "plain")

    # interrupted after two cells, then rerun: the same numbers, and the first two files untouched
    part = tmp_path / "part"
    from zoo.study import folder as folder_module
    real_write, written = folder_module.StudyFolder.write_cell, []

    def write_then_stop(self, result):
        real_write(self, result)
        written.append(self.cell_path(result["record"]["dataset"], result["record"]["seed"],
                                      result["record"]["method"]))
        if len(written) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(folder_module.StudyFolder, "write_cell", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_study(part, "ItalyPowerDemand", "0,1", num_samples=3, threads=1, progress=False)
    monkeypatch.setattr(folder_module.StudyFolder, "write_cell", real_write)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written}
    resumed, _ = run_study(part, "ItalyPowerDemand", "0,1", num_samples=3, threads=1, progress=False)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in written} == before
    assert metrics(resumed) == metrics(results)


def test_bad_input_is_one_line_before_any_cell_and_loses_nothing(tmp_path, tiny_rows, capsys):
    study = tmp_path / "study"
    assert bzoo("study", "--methods", "map", "--num-samples", 2, "--threads", 1, "--out", study, "--no-progress") == 0
    files = {p: p.read_bytes() for p in study.rglob("*") if p.is_file()}
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    cases = [
        (["--datasets", "GunPoint,Nope"], ["unknown dataset 'Nope'"]),
        (["--methods", "map,bogus"], ["unknown method 'bogus'"]),
        (["--datasets", " , "], ["--datasets is empty"]),
        (["--seeds", "1,0,1"], ["--seeds lists", "twice"]),
        (["--quick", "--sweep"], ["--quick and --sweep", "give one"]),
        (["--jobs", 0], ["--jobs must be", "0"]),
        (["--scheduler", "tcp://127.0.0.1:1"], ["--scheduler tcp://127.0.0.1:1", "nothing answered"]),
        (["--out", a_file], ["is a file"]),
        (["--out", foreign], ["not empty and holds no study"]),
        (["--methods", "map,plain", "--num-samples", 2, "--out", study],
         ["another configuration", "methods map -> map,plain"]),
        (["--methods", "map", "--num-samples", 3, "--out", study], ["another configuration", "samples 2 -> 3"]),
    ]
    for argv, words in cases:
        if "--out" not in argv:
            argv = [*argv, "--out", tmp_path / "fresh"]
        assert bzoo("study", *argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), (argv, err)
    assert {p: p.read_bytes() for p in study.rglob("*") if p.is_file()} == files
    assert a_file.read_text() == "mine" and [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "fresh").exists()


def test_overwrite_keeps_shared_cells_and_deletes_nothing(tmp_path, tiny_rows):
    out = tmp_path / "study"
    run_study(out, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    kept = out / "cells" / "italypowerdemand" / "seed0" / "map.json"
    stamp = kept.stat().st_mtime_ns
    with pytest.raises(StudyError, match="another configuration"):
        run_study(out, "ItalyPowerDemand", "0,1", "map", num_samples=2, threads=1, progress=False)
    results, _ = run_study(out, "ItalyPowerDemand", "0,1", "map", num_samples=2, threads=1, progress=False, overwrite=True)
    assert kept.stat().st_mtime_ns == stamp and len(results["cells"]) == 2
    assert json.loads((out / "study.json").read_text())["config"]["seeds"] == [0, 1]


def test_report_only_reports_the_finished_cells_lists_the_rest_and_runs_nothing(tmp_path, tiny_rows, capsys):
    out = tmp_path / "study"
    run_study(out, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    kept = {p: p.read_bytes() for p in [*(out / "cells").rglob("*"), out / "study.json"] if p.is_file()}
    results, _ = run_study(out, "ItalyPowerDemand", "0,1", "map,plain", num_samples=2, threads=1, progress=False,
                           report_only=True)
    assert [(c["seed"], c["method"]) for c in results["cells"]] == [(0, "map")]
    assert sorted(results["missing"]) == [f"(ItalyPowerDemand, seed {s}, {m})" for s, m in
                                          [(0, "plain"), (1, "map"), (1, "plain")]]
    text = (out / "results.md").read_text()
    assert "Partial report: 1 of 4 cells finished" in text and "- (ItalyPowerDemand, seed 1, plain)" in text
    # the missing cells' cost: map's measured CPU seconds per unit of work, for map's and (none finished) plain's
    plan = make_plan("ItalyPowerDemand", "0,1", "map,plain", num_samples=2)
    units = {r["label"]: work(r, plan.datasets[0], plan.evaluation) for r in plan.rows}
    rate = results["cells"][0]["cpu_seconds"] / units["map"]
    assert results["remaining_cpu_seconds"] == pytest.approx(rate * (units["map"] + 2 * units["plain"]))
    assert "CPU hours" in text
    assert {p: p.read_bytes() for p in [*(out / "cells").rglob("*"), out / "study.json"] if p.is_file()} == kept

    common = ["--methods", "map", "--num-samples", 2, "--report-only"]
    for argv, words in [(["--out", tmp_path / "none"], ["holds no study"]),
                        (["--seeds", 7, "--out", out], ["no finished cell"]),
                        (["--jobs", 2, "--out", out], ["--report-only runs no cell"])]:
        assert bzoo("study", *common, *argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), (argv, err)
    assert not (tmp_path / "none").exists()


def test_a_cell_over_the_memory_budget_is_refused_before_anything_is_written(tmp_path, tiny_rows):
    with pytest.raises(ValueError, match=r"cell \(ItalyPowerDemand, seed 0, map\) needs about .* budget of 1\.0 MiB"):
        run_study(tmp_path / "s", "ItalyPowerDemand", "0", "map", memory_budget="1M", progress=False)
    assert not (tmp_path / "s").exists()


def test_peak_sampler_sees_an_allocation():
    with PeakSampler() as peak:
        block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        block += 1
        del block
    assert peak.peak - peak.start > 48 << 20


def test_statistics_match_a_hand_computation():
    # 3 datasets x 3 methods x 2 seeds of accuracy
    acc = {"d1": {"a": [1.0, 0.75], "b": [0.5, 0.5], "c": [0.25, 0.75]},  # dyadic: means tie exactly
           "d2": {"a": [0.5, 0.75], "b": [0.75, 0.75], "c": [0.25, 0.5]},
           "d3": {"a": [1.0, 1.0], "b": [0.75, 0.75], "c": [0.5, 1.0]}}
    cells = [{"dataset": d, "method": m, "seed": s, "status": "ok", "accuracy": v}
             for d, ms in acc.items() for m, vs in ms.items() for s, v in enumerate(vs)]
    summary = stats.summarize(cells, ["accuracy"])
    assert summary["d1"]["a"]["accuracy"]["mean"] == pytest.approx(0.875)
    assert summary["d1"]["a"]["accuracy"]["se"] == pytest.approx(0.125)  # sd 0.1768 / sqrt 2
    assert summary["d2"]["b"]["accuracy"]["se"] == pytest.approx(0.0)
    table = stats.matrix(summary, "accuracy", ["d1", "d2", "d3"], ["a", "b", "c"])
    # means: d1 (.875 .5 .5), d2 (.625 .75 .375), d3 (1 .75 .75) -> ranks (1 2.5 2.5), (2 1 3), (1 2.5 2.5)
    ranks = stats.ranks(table, higher_better=True)
    assert ranks.tolist() == [[1, 2.5, 2.5], [2, 1, 3], [1, 2.5, 2.5]]
    assert ranks.mean(0).tolist() == pytest.approx([4 / 3, 2.0, 8 / 3])
    # Friedman by hand: n=3, k=3, rank sums R = (4, 6, 8); chi2 = 12/(n k (k+1)) sum R^2 - 3 n (k+1) = 2.6667;
    # ties: two rows with a pair tied: sum (t^3 - t) = 12; C = 1 - 12 / (n (k^3 - k)) = 1 - 12/72 = 5/6
    f = stats.friedman(table)
    assert f["statistic"] == pytest.approx((12 / 36 * (16 + 36 + 64) - 36) / (5 / 6))
    assert f["p"] == pytest.approx(math.exp(-f["statistic"] / 2))  # chi2 with 2 degrees of freedom
    # Holm by hand: p = (0.01, 0.04, 0.03) -> sorted 0.01*3, 0.03*2, 0.04*1 -> (0.03, 0.06, 0.06), monotone
    assert stats.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_the_critical_difference_diagram_comes_from_aeon_with_its_tests(tmp_path):
    rng = np.random.default_rng(0)
    scores = np.column_stack([rng.uniform(0.8, 0.9, 8), rng.uniform(0.7, 0.8, 8), rng.uniform(0.5, 0.6, 8)])
    cd = stats.critical_difference(scores, ["good", "mid", "bad"], True, tmp_path / "cd.png")
    assert (tmp_path / "cd.png").stat().st_size > 0 and cd["order"] == ["good", "mid", "bad"]
    assert cd["average_ranks"] == [1.0, 2.0, 3.0] and cd["friedman"]["p"] < 0.01
    first = cd["pairs"][0]
    assert (first["a"], first["b"]) == ("good", "mid")
    assert first["p"] == pytest.approx(scipy_stats.wilcoxon(scores[:, 0], scores[:, 1], alternative="greater").pvalue)
    assert [p["p_holm"] for p in cd["pairs"]] == pytest.approx(stats.holm([p["p"] for p in cd["pairs"]]).tolist())


def test_the_reference_arm_gives_each_cell_its_distance_to_the_reference_on_one_network(tmp_path, tiny_rows,
                                                                                         monkeypatch):
    monkeypatch.setattr(recipes, "REFERENCE", {
        "label": "reference", "guide": "reference", "model": {"d_model": 4, "depth": 1, "heads": 1},
        "options": {"num_members": 2, "num_chains": 4, "warmup": 20, "num_samples": 10, "thin": 2, "steps": 5,
                    "workers": 1}})
    results, out = run_study(tmp_path / "s", "ItalyPowerDemand", "0", "map,reference", reference_arm=True,
                             num_samples=2, threads=1, progress=False)
    cells = {c["method"]: c for c in results["cells"]}
    assert cells["reference"]["extra"]["tv"] == 0 and cells["map"]["extra"]["tv"] > 0
    assert json.loads((out.root / "study.json").read_text())["config"]["rows"]["map"]["model"]["d_model"] == 4
    other, _ = run_study(tmp_path / "t", "ItalyPowerDemand", "0", "map,reference", reference=True,
                         num_samples=2, threads=1, progress=False)  # map on its own network: no distance
    assert "tv" not in next(c for c in other["cells"] if c["method"] == "map").get("extra", {})
    text = (out.root / "results.md").read_text()
    assert "tv" in text.split("## Per dataset")[1].splitlines()[4]
    # the reference's own convergence comes with it, so its distances can be weighed
    convergence = cells["reference"]["info"]["convergence"]
    # on the test inputs: one entry per test series (binary, so p(class 1) alone), none saturated this early
    assert convergence["entries"] == len(load("ItalyPowerDemand").test.y) and math.isfinite(convergence["nrhat_max"])
    assert convergence["ess_bulk_min"] > 0 and "convergence" not in cells["map"]["info"]
    assert f"| ItalyPowerDemand | 0 | reference | {convergence['nrhat_max']:.4g} |" in text.split("## Reference convergence")[1]


def test_a_lora_row_is_a_study_cell_on_the_backbone_pretrained_without_its_dataset(tmp_path, tiny_rows, monkeypatch):
    from zoo.pretrain import cache_key, pretrain

    monkeypatch.setenv("BZOO_CACHE", str(tmp_path / "cache"))
    tiny_backbone = {"d_model": 8, "depth": 1, "heads": 2, "mlp_ratio": 2, "patch": 4, "length": 16, "batch_size": 8,
                     "steps": 3}
    pretrain(tmp_path / "cache" / "backbones" / cache_key(["ItalyPowerDemand"], {"seed": 0}), ["ItalyPowerDemand"],
             only=["Airline", "Lynx"], progress=False, **tiny_backbone)
    lora = [{"label": "LoRA map", "guide": "map", "adapter": "lora:rank=2,alpha=4", "backbone": "pretrained",
             "options": {"steps": 4, "lr": 1e-2}}]
    monkeypatch.setattr(recipes, "LORA_STUDY", lora)
    assert "LoRA map" not in {r["label"] for r in make_plan("ItalyPowerDemand", "0").rows}  # offered, not default
    results, _ = run_study(tmp_path / "s", "ItalyPowerDemand", "0", "LoRA map", num_samples=2, threads=1,
                           progress=False)
    (cell,) = results["cells"]
    assert cell["method"] == "LoRA map" and 0 <= cell["accuracy"] <= 1 and math.isfinite(cell["nll"])
    assert 0 < cell["info"]["trained_parameters"] < 50_000  # adapters and head, not the 200k-weight backbone


def test_a_scheduler_address_of_another_transport_is_left_to_dask():
    from zoo.study.engine import probe

    probe("inproc://192.0.2.2/5354/1")  # a LocalCluster(processes=False): no TCP port to probe
    with pytest.raises(StudyError, match="not an address"):
        probe("tcp://no-port-here")


def test_the_longest_first_order_puts_the_reference_cell_first():
    from zoo.study.run import work

    dataset = {"shapes": {"length": 24, "tokens": False, "n_train": 67, "n_test": 1029}}
    evaluation = {"steps_scale": 1.0, "samples": 50}
    costs = {row["label"]: work(row, dataset, evaluation) for row in [*recipes.STUDY, recipes.REFERENCE]}
    assert max(costs, key=costs.get) == "reference"
    one_map_fit = work({"label": "map", "guide": "map"}, dataset, evaluation)
    assert costs["reference"] > 20 * one_map_fit  # measured: about 35 MAP fits on ItalyPowerDemand


def test_a_fit_stuck_on_its_starting_plateau_is_reported_as_degenerate(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "STUDY", [{"label": "stuck", "guide": "map", "model": TINY,
                                            "options": {"steps": 1, "lr": 1e-9}}, ROWS[0]])
    monkeypatch.setattr(recipes, "STUDY_PEERS", [])
    monkeypatch.setattr(recipes, "MAIN", ["stuck", ROWS[0]["label"]])
    results, out = run_study(tmp_path / "s", "ItalyPowerDemand", "0", num_samples=2, threads=1, progress=False)
    flags = {c["method"]: c["info"]["degeneracy"] for c in results["cells"]}
    assert flags["stuck"]["degenerate"] and flags["stuck"]["constant_predictive"]
    table = (out.root / "results.md").read_text().split("## Degenerate fits")[1].split("##")[0]
    assert "| ItalyPowerDemand | 0 | stuck | True" in table
    assert ("| map |" in table) == flags["map"]["degenerate"]


def test_every_ranked_row_selects_among_the_same_number_of_settings():
    """Equal tuning budgets: the ranks compare methods, not how much tuning each got."""
    from zoo.study.plan import methods_offered
    from zoo.study.select import candidates

    for row in methods_offered(reference=False):
        if row.get("ranked", True):
            assert len(candidates(row)) == recipes.SELECTION_BUDGET, row["label"]
        else:
            assert not row.get("select"), row["label"]


def test_a_copy_of_a_study_folder_elsewhere_reuses_every_cell_and_reports_from_its_study_json(tmp_path, tiny_rows,
                                                                                               capsys):
    """Cell keys hold no path or host name: the committed sweep, cloned anywhere, is reused and reported as is."""
    import shutil

    first = tmp_path / "here" / "study"
    run_study(first, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    clone = tmp_path / "elsewhere" / "copy"
    shutil.copytree(first, clone)
    cells = {p: p.read_bytes() for p in (clone / "cells").rglob("*") if p.is_file()}
    results, _ = run_study(clone, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    assert {p: p.read_bytes() for p in (clone / "cells").rglob("*") if p.is_file()} == cells  # nothing rerun
    assert bzoo("study", "--report-only", "--out", clone) == 0
    again = json.loads((clone / "results.json").read_text())
    assert [c["key"] for c in again["cells"]] == [c["key"] for c in results["cells"]] and not again["missing"]
    assert set(again["ood"]["ItalyPowerDemand"]["reference_auroc"]) == {"input", "minirocket"}


def test_a_study_folder_being_written_refuses_a_second_writer_and_nothing_is_written(tmp_path, tiny_rows):
    from zoo.runs import RunLock

    out = tmp_path / "study"
    out.mkdir()
    with RunLock(out):  # as a running study holds it
        with pytest.raises(StudyError, match="being written by another run"):
            run_study(out, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == []


def test_an_edited_cell_is_not_trusted_it_is_recomputed_with_a_warning(tmp_path, tiny_rows):
    out = tmp_path / "study"
    first, _ = run_study(out, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    path = out / "cells" / "italypowerdemand" / "seed0" / "map.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "accuracy": 0.99}))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again, _ = run_study(out, "ItalyPowerDemand", "0", "map", num_samples=2, threads=1, progress=False)
    assert again["cells"][0]["accuracy"] == first["cells"][0]["accuracy"] != 0.99


@pytest.mark.slow  # two local clusters of 2 workers each
def test_two_studies_started_into_one_folder_at_once_one_is_refused_the_other_completes(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "study"
    argv = [sys.executable, "-m", "zoo.cli", "study", "--methods", "map", "--quick", "--num-samples", "2",
            "--seeds", "0,1", "--jobs", "2", "--no-progress", "--out", str(out)]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(), r.stderr.read()) for r in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert "being written by another run" in next(err for code, err in results if code == 2)
    cells = sorted(p.name for p in (out / "cells").rglob("*.json"))
    assert cells == ["map.json", "map.json"] and not list(out.rglob("*.tmp"))
    report = json.loads((out / "results.json").read_text())
    assert sorted(c["seed"] for c in report["cells"]) == [0, 1]


def test_a_row_whose_optional_package_is_missing_is_refused_before_the_study_starts(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "laplace" else real(name, *a))
    with pytest.raises(StudyError, match=r"row 'laplace-torch' needs laplace-torch.*make peers"):
        run_study(tmp_path / "s", "ItalyPowerDemand", "0", "map,laplace-torch", num_samples=2, progress=False)
    assert not (tmp_path / "s").exists()


def test_the_near_ood_arm_holds_out_a_class_of_every_dataset_with_three_or_more():
    plan = make_plan("all", near_ood=True, methods="map")
    names = [d["id"] for d in plan.datasets]
    assert names and all(n.endswith(":held-out") for n in names) and "ArrowHead:held-out" in names
    assert not any(n.startswith(("GunPoint", "ItalyPowerDemand")) for n in names)  # two classes: nothing to hold out
    assert plan.config()["arm"] == "near-ood"
    with pytest.raises(StudyError, match="at least 3"):
        make_plan("GunPoint", near_ood=True, methods="map")


def test_a_centred_row_fits_its_map_network_on_the_series_its_attention_fit_sees(monkeypatch, one_thread):
    """``"centre": "map"``: each fit (candidate or refit) first fits MAP on the same series, and the attention prior
    reads exactly that network's weights; validation and test series never reach it."""
    dataset = load("ItalyPowerDemand")
    seen = []
    real_fit = cell_module.fit

    def spy(model, data, **options):
        seen.append((options["guide"], data.x.clone()))
        return real_fit(model, data, **options)
    monkeypatch.setattr(cell_module, "fit", spy)
    row = {"label": "centred", "guide": "dirichlet", "bayes": "attention", "prior": recipes.PRIOR, "centre": "map",
           "model": {**recipes.MODEL, **TINY}, "options": recipes.fit_options("dirichlet", steps=4),
           "attention_prior": "centred-dirichlet:strength=0.5"}
    evaluation = {**recipes.EVALUATION, "samples": 2, "steps_scale": 1.0}
    part, _, _ = validation_split(dataset.train, 0, evaluation["validation_fraction"])
    _, _, posterior = cell_module.fit_row(row, dataset, part, 0, torch.device("cpu"), evaluation)
    assert [guide for guide, _ in seen] == ["map", "dirichlet"]
    assert all(torch.equal(x, part.x) for _, x in seen)
    prior = posterior.model.attention_prior
    _, _, centre = cell_module.fit_row({"label": "map", "guide": "map", "prior": recipes.PRIOR, "model": row["model"],
                                       "options": recipes.fit_options("map")}, dataset, part, 0,
                                      torch.device("cpu"), evaluation)
    weights = centre.point_weights()
    assert set(prior.reference_weights) == set(weights)
    assert all(torch.equal(prior.reference_weights[n], weights[n]) for n in weights)
