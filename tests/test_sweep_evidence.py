"""The committed sweep (results/sweep/) is lean, and docs/sweep.md is exactly what its cells give."""
import json
import shutil
from pathlib import Path

import pytest

from zoo.study.folder import StudyFolder
from zoo.study.pages import budget_block, claims_block, paired_wins, status_block
from zoo.study.run import plan_of_folder, read_cells

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "results" / "sweep"
MAIN = ROOT / "results" / "main"
KEPT = {".json", ".npz", ".png", ".md"}  # cells, study.json, detectors, the report and its plots: no posteriors
MAX_BYTES = 64 << 20


def test_the_committed_sweep_holds_cells_and_reports_only_and_stays_small():
    files = [p for p in SWEEP.rglob("*") if p.is_file()]
    assert (SWEEP / "study.json").is_file() and any(p.suffix == ".npz" for p in files)
    assert {p.suffix for p in files} <= KEPT, sorted({p.suffix for p in files} - KEPT)
    assert sum(p.stat().st_size for p in files) < MAX_BYTES


def test_every_committed_cell_is_signed_and_matches_this_codes_plan():
    plan = plan_of_folder(SWEEP)
    folder = StudyFolder(SWEEP, plan.config(), plan.fingerprint(), overwrite=False, resuming=True)
    cells, _ = read_cells(plan, folder)
    on_disk = list((SWEEP / "cells").rglob("*.json"))
    assert len(cells) == len(on_disk) > 0  # none stale, none edited


def test_docs_sweep_page_is_the_report_of_the_committed_cells(tmp_path):
    from zoo.study.run import report_finished

    copy = tmp_path / "sweep"
    shutil.copytree(SWEEP, copy)
    report_finished(plan_of_folder(copy), copy)
    assert (copy / "results.md").read_text() == (ROOT / "docs" / "sweep.md").read_text(), \
        "docs/sweep.md is stale: run `make sweep-report`"
    results = json.loads((copy / "results.json").read_text())
    page = (ROOT / "docs" / "results.md").read_text()
    assert status_block(results) in page, "docs/results.md's status is stale"
    assert claims_block(results) in page, "docs/results.md's claims are stale"


def test_a_claim_counts_paired_cells_only():
    """A row's wins are counted on the (dataset, seed) cells that it and its baseline both finished."""
    cells = [{"dataset": d, "seed": s, "method": m, "nll": v} for d, s, m, v in [
        ("a", 0, "map", 0.5), ("a", 0, "ivon", 0.4), ("a", 1, "map", 0.5), ("a", 1, "ivon", 0.6),
        ("b", 0, "ivon", 0.1), ("b", 0, "map", None), ("c", 0, "map", 0.3)]]
    assert paired_wins(cells, "ivon", "map") == (1, 2)
    assert "ivon against map: lower NLL in 1 of 2 cells" in claims_block({"cells": cells})
    assert "cgpt attention against map: no cells yet" in claims_block({"cells": cells})


def test_docs_study_page_puts_the_committed_main_job_beside_the_sweep(tmp_path):
    from zoo.study.run import report_finished

    reports = {}
    for name, folder in (("main", MAIN), ("sweep", SWEEP)):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        report_finished(plan_of_folder(copy), copy)
        reports[name] = json.loads((copy / "results.json").read_text())
    assert budget_block(reports["main"], reports["sweep"]) in (ROOT / "docs" / "study.md").read_text(), \
        "docs/study.md's budget block is stale: run `make sweep-report`"


def test_the_budget_block_counts_the_pairs_two_budgets_order_alike():
    def results(nll, scale):
        return {"study": {"methods": list(nll), "evaluation": {"steps_scale": scale, "samples": 10}},
                "cells": [{"dataset": "ItalyPowerDemand", "seed": 0, "method": m, "nll": v, "accuracy": 0.9}
                          for m, v in nll.items()]}
    main = results({"a": 0.1, "b": 0.2, "c": 0.3}, 0.1)
    block = budget_block(main, results({"a": 0.1, "b": 0.3, "c": 0.2, "d": 0.0}, 0.25))  # b, c swap; d not in main
    assert "order 2 of the 3 pairs of rows alike" in block and "| d |" not in block
    assert "| c | 0.300 | 0.200 | 3 | 2 |" in block


ARMS = [ROOT / "results" / name for name in ("near-ood", "reference-arm")]


@pytest.mark.parametrize("arm", ARMS, ids=lambda p: p.name)
def test_each_committed_arm_has_its_report_as_a_docs_page(arm, tmp_path):
    from zoo.study.run import report_finished

    if not arm.is_dir():
        pytest.skip(f"{arm.name} has no committed cells yet")
    copy = tmp_path / arm.name
    shutil.copytree(arm, copy)
    report_finished(plan_of_folder(copy), copy)
    assert (copy / "results.md").read_text() == (ROOT / "docs" / f"{arm.name}.md").read_text(), \
        f"docs/{arm.name}.md is stale: run `make sweep-report`"
