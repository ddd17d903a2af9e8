"""The study on real engines (slow): a Dask worker killed mid-cell, and the study process killed with kill -9."""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from zoo import recipes
from zoo.study import run_study

ROOT = Path(__file__).resolve().parents[1]
TINY = {"d_model": 8, "depth": 1, "heads": 2}
ROWS = [{"label": "map", "guide": "map", "model": TINY, "options": {"steps": 150}},
        {"label": "mean_field", "guide": "mean_field", "model": TINY, "options": {"steps": 100},
         "select": {"temperature": [1.0, 0.1]}}]


def numbers(results):
    keys = ("accuracy", "nll", "ece", "brier", "ood_auroc", "selected")
    return {(c["dataset"], c["seed"], c["method"]): {k: c.get(k) for k in keys} for c in results["cells"]}


@pytest.mark.slow
def test_a_worker_killed_mid_cell_has_its_cell_rescheduled_and_the_study_completes(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    monkeypatch.setattr(recipes, "STUDY", ROWS)
    monkeypatch.setattr(recipes, "STUDY_PEERS", [])
    monkeypatch.setattr(recipes, "MAIN", [r["label"] for r in ROWS])
    out = tmp_path / "study"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        killed = {}

        def kill_one_busy_worker():
            while not killed:
                busy = {w: tasks for w, tasks in client.processing().items() if tasks}
                if busy and list(out.glob("cells/*/*/*.json")):  # a cell is done: the sweep is under way
                    worker, tasks = next(iter(busy.items()))
                    killed.update(pid=client.run(os.getpid, workers=[worker])[worker], tasks=tasks)
                    os.kill(killed["pid"], signal.SIGKILL)
                time.sleep(0.02)
        threading.Thread(target=kill_one_busy_worker, daemon=True).start()
        results, _ = run_study(out, "ItalyPowerDemand,GunPoint", "0,1", scheduler=cluster.scheduler_address,
                               num_samples=3, progress=False)
        assert killed and not psutil.pid_exists(killed["pid"])
        assert len(results["cells"]) == 8 and all(c["status"] == "ok" for c in results["cells"])
        assert {f"bzoo-{c['key']}" for c in results["cells"]} >= set(killed["tasks"])  # the killed cell finished
        workers = {c["worker"] for c in results["cells"]}
        assert len(workers) >= 2  # cells ran on both workers (and on the restarted one)


def bzoo_study(out, *extra):
    return [sys.executable, "-m", "zoo.cli", "study", "--datasets", "ItalyPowerDemand,GunPoint", "--seeds", "0,1",
            "--methods", "map,plain", "--steps-scale", "0.05", "--num-samples", "3", "--jobs", "2",
            "--no-progress", "--out", str(out), *extra]


@pytest.mark.slow
def test_kill_9_part_way_then_rerun_completes_equal_to_an_uninterrupted_run(tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    subprocess.run(bzoo_study(whole), cwd=ROOT, check=True, capture_output=True)
    proc = subprocess.Popen(bzoo_study(part), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while len(list(part.glob("cells/*/*/*.json"))) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the study finished before it could be killed"
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive  # the Dask workers die with the study: nothing keeps running
    finished = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in part.glob("cells/*/*/*") if p.suffix in (".json", ".npz")}
    assert 3 <= len([p for p in finished if p.suffix == ".json"]) < 8
    subprocess.run(bzoo_study(part), cwd=ROOT, check=True, capture_output=True)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in finished} == finished
    a = json.loads((whole / "results.json").read_text())
    b = json.loads((part / "results.json").read_text())
    assert numbers(a) == numbers(b) and len(b["cells"]) == 8
