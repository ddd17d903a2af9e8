"""A first hour without surprises: bad input is refused before any work, in one line, and nothing is written.

Two tables of the mistakes a new user makes (found by trying them, on the command line
and from Python). Each row asserts: exit code 2 (or the library's own ValueError
subclass), one line naming the flag, file, option or site, no traceback, and no file
created or changed. The run-folder lock, ``--overwrite``, checksums and degenerate
posteriors have tests of their own below.
"""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import inference
import priors
from inference import Posterior, degeneracy
from inference.persist import PosteriorFileError
from zoo.models.lora import parse_adapter
from zoo import TransformerClassifier, cli
from zoo.data import load_file
from zoo.pretrain import pretrain
from zoo.study import run_study
from zoo.runs import LOCK, RunFolder, RunFolderError, RunLock

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: a second thread only adds waiting
ROOT = Path(__file__).resolve().parent.parent
TINY = ["--d-model", "8", "--depth", "1", "--heads", "2", "--mlp-ratio", "1"]


# --- the data files a user might hand us ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    rng = np.random.default_rng(0)
    rows = [",".join([str(i % 2)] + [f"{v:.3f}" for v in rng.normal(i % 2, 1, 8)]) for i in range(30)]
    text = "\n".join(rows) + "\n"
    (d / "good.csv").write_text(text)
    (d / "bom.csv").write_text(text, encoding="utf-8-sig")  # what spreadsheet programs write
    (d / "utf16.csv").write_text(text, encoding="utf-16")
    (d / "latin1.csv").write_bytes(("caf\xe9," + ",".join(["1"] * 8) + "\n" + text).encode("latin-1"))
    (d / "semicolon.csv").write_text(text.replace(",", ";"))
    x = rng.normal(size=(30, 8))
    y = np.arange(30) % 2
    np.savez(d / "good.npz", X=x, y=y)
    np.savez(d / "no_steps.npz", X=np.zeros((30, 0)), y=y)
    np.savez(d / "test_channels.npz", X=x[..., None], y=y, X_test=rng.normal(size=(6, 8, 2)), y_test=y[:6])
    (d / "shadowed.json").write_text(json.dumps({"*": "gaussian", "head.*": "student-t:df=3"}))
    (d / "twice.json").write_text('{"head.*": "laplace", "head.*": "gaussian", "*": "gaussian"}')
    (d / "a_file").write_text("not a folder")
    (d / "no_label.csv").write_text(text.replace("\n1,", "\n,", 1))  # the second row's label left blank
    (d / "numbered_header.csv").write_text("label," + ",".join(map(str, range(1, 9))) + "\n" + text)
    np.savez(d / "empty_label.npz", X=x, y=np.array(["a", ""] * 15))
    np.savez(d / "one_per_class.npz", X=x[:2], y=y[:2], X_test=x[2:4], y_test=y[2:4])
    np.savez(d / "constant.npz", X=np.ones((30, 8)), y=y)
    return d


def snapshot(*folders):
    """Every file under ``folders`` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in Path(f).rglob("*")}


def bzoo(argv):
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals
        return e.code


# --- the command line ------------------------------------------------------------------------------------------------

CLI = [  # (what, argv: {d} = the files above, words the one line must hold)
    ("bayes none with a sampling guide", ["fit", "--bayes", "none", "--guide", "mean_field"], ["mean_field", "none"]),
    ("boolean read loosely", ["fit", "--prior", "gaussian:fan_in=no"], ["fan_in", "'no'", "true or false"]),
    ("boolean as a number", ["fit", "--prior", "gaussian:fan_in=1"], ["fan_in", "true or false"]),
    ("prior key twice", ["fit", "--prior", "gaussian:scale=1,scale=2"], ["'scale'", "twice"]),
    ("prior scale overflows float32", ["fit", "--prior", "gaussian:scale=1e60"], ["'scale'", "float32"]),
    ("prior scale underflows float32", ["fit", "--prior", "gaussian:scale=1e-60"], ["'scale'", "float32"]),
    ("prior df underflows float32", ["fit", "--prior", "student-t:df=1e-50"], ["'df'", "float32"]),
    ("shadowed glob in a prior file", ["fit", "--prior", "{d}/shadowed.json"], ["'head.*'", "shadowed", "'*'"]),
    ("glob twice in a prior file", ["fit", "--prior", "{d}/twice.json"], ["twice.json", "'head.*'", "twice"]),
    ("prior without weight sites", ["fit", "--bayes", "none", "--guide", "map", "--prior", "laplace"],
     ["--prior", "no effect", "none"]),
    ("attention prior without attention", ["fit", "--attention-prior", "dirichlet"], ["attention_prior", "no effect"]),
    ("model width zero", ["fit", "--d-model", "0"], ["--d-model", "0"]),
    ("negative depth", ["fit", "--depth", "-1"], ["--depth", "-1"]),
    ("zero heads", ["fit", "--heads", "0"], ["--heads", "0"]),
    ("zero mlp ratio", ["fit", "--mlp-ratio", "0"], ["--mlp-ratio", "0"]),
    ("heads do not divide width", ["fit", "--d-model", "10", "--heads", "4"], ["d_model=10", "heads=4"]),
    ("dropout above one", ["fit", "--dropout", "1.5"], ["--dropout", "1.5"]),
    ("patch zero", ["fit", "--patch", "0"], ["--patch", "0"]),
    ("patch longer than the series", ["fit", "--data", "{d}/good.npz", "--patch", "100"], ["--patch 100", "8 steps"]),
    ("device this machine lacks", ["fit", "--device", "mps"], ["--device", "mps"]),
    ("cuda device that is not there", ["fit", "--device", "cuda:7"], ["--device", "cuda:7"]),
    ("not a device", ["fit", "--device", "gpu0"], ["--device", "gpu0"]),
    ("negative seed", ["fit", "--seed", "-1"], ["--seed", "-1"]),
    ("negative draws", ["fit", "--num-samples", "-3"], ["--num-samples", "-3"]),
    ("draws for a point estimate", ["fit", "--guide", "map", "--num-samples", "5"], ["--num-samples", "map"]),
    ("draws that do not fit in memory", ["fit", "--num-samples", "1000000000"], ["--num-samples", "memory"]),
    ("checkpoint every zero steps", ["fit", "--checkpoint-every", "0"], ["--checkpoint-every", "0"]),
    ("checkpoint for MCMC", ["fit", "--guide", "nuts", "--checkpoint-every", "5"], ["--checkpoint-every", "nuts"]),
    ("particles for a point estimate", ["fit", "--guide", "map", "--num-particles", "4"], ["--num-particles", "map"]),
    ("an SVI option for MCMC", ["fit", "--guide", "nuts", "--kl-anneal", "5"], ["--kl-anneal", "nuts"]),
    ("zero learning rate", ["fit", "--lr", "0"], ["--lr", "0"]),
    ("zero temperature", ["fit", "--temperature", "0"], ["--temperature", "0"]),
    ("not a number", ["fit", "--steps", "abc"], ["--steps", "'abc'"]),
    ("guide misspelled", ["fit", "--guide", "mean-feild"], ["'mean-feild'", "did you mean 'mean_field'"]),
    ("unknown guide option", ["fit", "--option", "nope=1"], ["'nope'", "mean_field"]),
    ("guide option out of range", ["fit", "--guide", "low_rank", "--option", "rank=0"], ["low_rank", "rank"]),
    ("option twice", ["fit", "--option", "rank=3", "--option", "rank=4"], ["--option", "'rank'", "twice"]),
    ("empty output folder name", ["fit", "--out", ""], ["--out", "''"]),
    ("output folder is a file", ["fit", "--out", "{d}/a_file"], ["a_file", "not a folder"]),
    ("CSV in UTF-16", ["fit", "--data", "{d}/utf16.csv"], ["utf16.csv", "UTF-8"]),
    ("CSV in Latin-1", ["fit", "--data", "{d}/latin1.csv"], ["latin1.csv", "UTF-8"]),
    ("CSV separated by semicolons", ["fit", "--data", "{d}/semicolon.csv"], ["semicolon.csv", "';'"]),
    ("series without time steps", ["fit", "--data", "{d}/no_steps.npz"], ["no_steps.npz", "time step"]),
    ("test set with other channels", ["fit", "--data", "{d}/test_channels.npz"], ["test_channels.npz", "X_test"]),
    ("empty data path", ["fit", "--data", ""], ["--data", "''"]),
    ("data file missing", ["fit", "--data", "{d}/nope.npz"], ["nope.npz", "does not exist"]),
    ("prior check with one draw", ["prior-check", "--num-samples", "1"], ["--num-samples", "1"]),
    ("prior check with one prior twice", ["prior-check", "--num-samples", "2", "--prior", "gaussian",
                                          "--prior", "gaussian:scale=1"], ["--prior", "twice"]),
    ("prior check of a site that is not there", ["prior-check", "--num-samples", "2", "--sites", "nope.*"],
     ["--sites", "'nope.*'"]),
    ("diagnose a file", ["diagnose", "{d}/a_file"], ["a_file", "file"]),
    ("diagnose a folder without a run", ["diagnose", "{d}"], ["posterior.nc"]),
    ("unknown command", ["fitt"], ["'fitt'", "fit"]),
    ("CSV row without a label", ["fit", "--data", "{d}/no_label.csv"], ["no_label.csv", "row 2", "no label"]),
    ("study seed beyond the seed range", ["study", "--seeds", "0,4294967296", "--methods", "map", "--out", "{d}/s"],
     ["--seeds", "'4294967296'", "4294967295"]),
    ("study of one training series per class", ["study", "--datasets", "{d}/one_per_class.npz", "--methods", "map",
                                                "--out", "{d}/s"], ["one_per_class.npz", "validation"]),
    ("pretrain onto a device this machine lacks", ["pretrain", "--exclude", "ItalyPowerDemand", "--out", "{d}/b",
                                                   "--device", "cuda:7"], ["--device", "cuda:7"]),
    ("pretrain heads that do not divide the width", ["pretrain", "--exclude", "ItalyPowerDemand", "--out", "{d}/b",
                                                     "--d-model", "10", "--heads", "4"], ["d_model=10", "heads=4"]),
]


@pytest.mark.parametrize("argv, words", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_the_command_line_refuses_bad_input_in_one_line(argv, words, files, tmp_path, capsys):
    argv = [a.format(d=files) for a in argv]
    if argv[0] in ("fit", "prior-check"):
        argv = [argv[0], *TINY, *argv[1:]] + ([] if "--out" in argv else ["--out", tmp_path / "run"])
    before = snapshot(tmp_path, files)
    code = bzoo(argv)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.strip() and err.strip().count("\n") == 0, err
    assert "Traceback" not in err and not out
    for word in words:
        assert word in err, err
    assert snapshot(tmp_path, files) == before


def writable(folder):
    try:
        (folder / "probe").write_text("x")
    except OSError:
        return False
    (folder / "probe").unlink()
    return True


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_fit(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if writable(folder):  # root writes anyway: try a folder of a read-only file system
            folder = Path("/sys/kernel")
            if not folder.is_dir() or writable(folder):
                pytest.skip("no folder here that this user cannot write")
        code = bzoo(["fit", *TINY, "--guide", "map", "--steps", "1", "--out", folder])
        err = capsys.readouterr().err
        assert code == 2 and "cannot be written" in err and str(folder) in err and "fit map" not in err
    finally:
        (tmp_path / "read-only").chmod(0o700)


# --- the Python API --------------------------------------------------------------------------------------------------

def tiny(**kwargs):
    torch.manual_seed(0)
    base = dict(num_classes=2, input_dim=1, d_model=8, depth=1, heads=2, mlp_ratio=1, max_len=16)
    base.update(kwargs)
    return TransformerClassifier(base.pop("num_classes"), **base)


def toy(n=12, t=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, t, 1, generator=g)
    return x, (x.mean((1, 2)) > 0).long()


@pytest.fixture(scope="module")
def fitted():
    return {guide: inference.fit(tiny(), toy(), guide=guide, steps=2, progress=False)
            for guide in ("map", "mean_field")}


TOY = object()


def quick(guide="map", model=None, data=TOY, **options):
    options = {"steps": 1, "progress": False, **options}
    return lambda c: inference.fit(model() if model else tiny(), toy() if data is TOY else data, guide=guide,
                                   **options)


X, Y = toy()
API = [  # (what, call(c) with c.files, c.tmp, c.fitted; exception type name; words)
    ("one class", lambda c: tiny(num_classes=1), "ModelError", ["num_classes", "1"]),
    ("fractional classes", lambda c: tiny(num_classes=2.5), "ModelError", ["num_classes", "2.5"]),
    ("zero channels", lambda c: tiny(input_dim=0), "ModelError", ["input_dim", "0"]),
    ("zero width", lambda c: tiny(d_model=0), "ModelError", ["d_model", "0"]),
    ("negative width", lambda c: tiny(d_model=-8), "ModelError", ["d_model", "-8"]),
    ("width as text", lambda c: tiny(d_model="8"), "ModelError", ["d_model", "'8'"]),
    ("zero heads", lambda c: tiny(heads=0), "ModelError", ["heads", "0"]),
    ("zero depth", lambda c: tiny(depth=0), "ModelError", ["depth", "0"]),
    ("fractional depth", lambda c: tiny(depth=1.5), "ModelError", ["depth", "1.5"]),
    ("zero mlp ratio", lambda c: tiny(mlp_ratio=0), "ModelError", ["mlp_ratio", "0"]),
    ("zero max_len", lambda c: tiny(max_len=0), "ModelError", ["max_len", "0"]),
    ("dropout two", lambda c: tiny(dropout=2.0), "ModelError", ["dropout", "2.0"]),
    ("fractional patch", lambda c: tiny(patch=1.5), "ModelError", ["patch", "1.5"]),
    ("bayes empty", lambda c: tiny(bayes=""), "ModelError", ["bayes", "''"]),
    ("bayes None", lambda c: tiny(bayes=None), "ModelError", ["bayes", "None"]),
    ("prior a number", lambda c: tiny(prior=3), "PriorError", ["prior", "3"]),
    ("prior None", lambda c: tiny(prior=None), "PriorError", ["prior", "None"]),
    ("prior a class", lambda c: tiny(prior=priors.Gaussian), "PriorError", ["prior", "Gaussian"]),
    ("prior map of numbers", lambda c: tiny(prior={"*": 3}), "PriorError", ["prior", "3"]),
    ("shadowed glob", lambda c: tiny(prior={"*": "gaussian", "head.*": "laplace"}), "PriorError",
     ["'head.*'", "shadowed"]),
    ("parse a number", lambda c: priors.parse(3), "PriorError", ["prior", "3"]),
    ("boolean read loosely", lambda c: priors.Gaussian(fan_in="no"), "PriorError", ["fan_in", "'no'"]),
    ("boolean as a number", lambda c: priors.StudentT(fan_in=1), "PriorError", ["fan_in", "1"]),
    ("scale underflows float32", lambda c: priors.Laplace(scale=1e-60), "PriorError", ["scale", "float32"]),
    ("empirical floor zero", lambda c: priors.Empirical({}, min_scale=0), "PriorError", ["min_scale", "0"]),
    ("attention prior without attention", lambda c: tiny(attention_prior="dirichlet"), "ModelError",
     ["attention_prior", "no effect"]),
    ("data None", quick(data=None), "DataError", ["fit data", "(x, y)", "NoneType"]),
    ("data without labels", quick(data=(X,)), "DataError", ["fit data", "length 1"]),
    ("no examples", quick(data=(X[:0], Y[:0])), "DataError", ["no examples"]),
    ("no time steps", quick(data=(X[:, :0], Y)), "DataError", ["length 0"]),
    ("float mask", quick(data=(X, Y, torch.ones(12, 6))), "DataError", ["mask", "float32"]),
    ("mask row without a step", quick(data=(X, Y, torch.zeros(12, 6, dtype=torch.bool))), "DataError",
     ["mask row 0"]),
    ("2-D labels", quick(data=(X, Y[:, None])), "DataError", ["y", "1-D"]),
    ("negative seed", quick(seed=-1), "FitError", ["seed", "-1"]),
    ("seed as text", quick(seed="a"), "FitError", ["seed", "'a'"]),
    ("device this machine lacks", quick(device="cuda:3"), "FitError", ["device", "cuda:3"]),
    ("not a device", quick(device="nope"), "FitError", ["device", "nope"]),
    ("sampling guide, nothing to sample", quick("mean_field", model=lambda: tiny(bayes="none")), "FitError",
     ["mean_field", "nothing to fit"]),
    ("unknown guide option", quick("mean_field", guide_options={"nope": 1}), "FitError", ["mean_field", "'nope'"]),
    ("guide option out of range", quick("low_rank", guide_options={"rank": 0}), "FitError", ["low_rank", "rank"]),
    ("particles for a point estimate", quick(num_particles=4), "FitError", ["num_particles", "map"]),
    ("an SVI option for an ensemble", quick("ensemble", clip_norm=1.0), "FitError", ["clip_norm", "ensemble"]),
    ("progress not a boolean", quick(progress="yes"), "FitError", ["progress", "'yes'", "true or false"]),
    ("zero draws", lambda c: c.fitted["mean_field"].predict(X, 0), "CheckError", ["num_samples", "0"]),
    ("negative draws", lambda c: c.fitted["mean_field"].predict(X, -2), "CheckError", ["num_samples", "-2"]),
    ("fractional draws", lambda c: c.fitted["mean_field"].predict(X, 2.5), "CheckError", ["num_samples", "2.5"]),
    ("zero draws to ArviZ", lambda c: c.fitted["mean_field"].to_arviz(X, Y, num_samples=0), "CheckError",
     ["num_samples", "0"]),
    ("NaN input", lambda c: c.fitted["map"].predict(torch.full((3, 6, 1), math.nan)), "DataError", ["NaN"]),
    ("mask of another shape", lambda c: c.fitted["map"].predict(X, mask=torch.ones(3, 3, dtype=torch.bool)),
     "DataError", ["mask", "[3, 3]"]),
    ("zero batch size", lambda c: c.fitted["map"].predict(X, batch_size=0), "DataError", ["batch_size", "0"]),
    ("save to a folder", lambda c: c.fitted["map"].save(c.tmp), "PosteriorFileError", ["folder"]),
    ("save where nothing can be written", lambda c: c.fitted["map"].save("/proc/bzoo/p.pt"), "PosteriorFileError",
     ["/proc/bzoo/p.pt"]),
    ("load a folder", lambda c: Posterior.load(c.tmp), "PosteriorFileError", ["folder"]),
    ("load onto a device this machine lacks", lambda c: Posterior.load(c.files / "p.pt", map_location="cuda:5"),
     "PosteriorFileError", ["map_location", "cuda:5"]),
    ("scores for other labels", lambda c: inference.evaluate(torch.full((2, 12, 2), 0.5), Y[:3]), "DataError",
     ["12 inputs", "3 labels"]),
    ("scores with float labels", lambda c: inference.evaluate(torch.full((2, 12, 2), 0.5), Y.float()), "DataError",
     ["y", "integer"]),
    ("data file None", lambda c: load_file(None), "DataError", ["data file", "None"]),
    ("CSV in UTF-16", lambda c: load_file(c.files / "utf16.csv"), "DataError", ["utf16.csv", "UTF-8"]),
    ("prior draws zero", lambda c: inference.prior_predictive(tiny(), X, 0), "CheckError", ["num_samples", "0"]),
    ("empty label in an npz", lambda c: load_file(c.files / "empty_label.npz"), "DataError", ["y[1]", "empty label"]),
    ("pretrain names given as numbers", lambda c: pretrain(c.tmp / "b", [1]), "BackboneError", ["exclude", "1"]),
    ("study seeds beyond the seed range", lambda c: run_study(c.tmp / "s", seeds=[2 ** 32], methods="map"),
     "StudyError", ["--seeds", "4294967296"]),
    ("integer series for a real-valued model", quick(data=(toy()[0].long(), toy()[1])), "InputShapeError",
     ["int64", "real values"]),
    ("an adapter key given twice", lambda c: parse_adapter("lora:rank=4,rank=5"), "ModelError", ["rank", "twice"]),
    ("a checkpoint path as bytes", quick(checkpoint=b"c.pt"), "FitError", ["checkpoint", "path", "b'c.pt'"]),
]


class Context:
    def __init__(self, files, tmp, fitted):
        self.files, self.tmp, self.fitted = files, tmp, fitted


@pytest.mark.parametrize("call, kind, words", [c[1:] for c in API], ids=[c[0] for c in API])
def test_the_python_api_refuses_bad_input_with_its_own_exceptions(call, kind, words, files, fitted, tmp_path):
    before = snapshot(tmp_path, files)
    with pytest.raises(ValueError) as e:
        call(Context(files, tmp_path, fitted))
    assert type(e.value).__name__ == kind, repr(e.value)
    assert type(e.value).__module__.split(".")[0] in ("core", "zoo", "inference", "priors")
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert snapshot(tmp_path, files) == before


def test_enough_bad_inputs_are_tried():
    assert len(CLI) >= 40 and len(API) >= 40


# --- mistakes that are now read right ---------------------------------------------------------------------------------

def test_a_byte_order_mark_is_not_part_of_the_first_label(files):
    plain, marked = load_file(files / "good.csv"), load_file(files / "bom.csv")
    assert marked.classes == plain.classes == [0, 1]
    assert torch.equal(marked.train.x, plain.train.x)


def test_a_misspelled_test_array_is_named_not_passed_over(tmp_path):
    x, y = np.zeros((30, 8)), np.arange(30) % 2
    np.savez(tmp_path / "d.npz", X=x, y=y, Xtest=x[:6], ytest=y[:6])
    with pytest.warns(UserWarning, match="Xtest, ytest are not read"):
        load_file(tmp_path / "d.npz")


def test_a_csv_header_that_numbers_its_columns_is_not_a_class(files):
    assert load_file(files / "numbered_header.csv").classes == load_file(files / "good.csv").classes == [0, 1]


def test_a_numpy_seed_and_a_guide_name_in_capitals_fit_as_their_python_spellings():
    same = [inference.fit(tiny(), toy(), guide=guide, steps=2, seed=seed, progress=False).predict(toy()[0], 2)
            for guide, seed in (("map", 3), ("MAP", np.uint32(3)))]
    assert torch.equal(*same)
    assert parse_adapter("lora:rank=99999999999999999999999").rank == 99999999999999999999999  # exact, not a float


def test_numpy_numbers_paths_and_torch_devices_are_taken_where_python_ones_are(fitted, tmp_path):
    from zoo.pretrain import checked_request
    from zoo.study.plan import parse_list

    exclude, o, seed = checked_request(tmp_path / "b", "GunPoint, ArrowHead", np.int64(1), None,
                                       {"batch_size": np.int64(2), "lr": np.float32(0.5)})
    assert exclude == ["GunPoint", "ArrowHead"] and (seed, o["batch_size"], o["lr"]) == (1, 2, 0.5)
    assert [type(v) for v in (seed, o["batch_size"], o["lr"])] == [int, int, float]  # json and torch take them
    assert parse_list(np.int64(3), "--seeds") == ["3"] and parse_list(Path("a.npz"), "--datasets") == ["a.npz"]
    path = fitted["map"].save(tmp_path / "p.pt")
    assert Posterior.load(path, map_location=torch.device("cpu")).method == "map"


def test_a_warning_is_one_line_naming_the_verb(files, tmp_path):
    """In a process of its own: pytest records warnings instead of printing them."""
    argv = ["fit", *TINY, "--guide", "map", "--steps", "1", "--data", files / "constant.npz", "--out", tmp_path / "r"]
    done = subprocess.run([sys.executable, "-m", "zoo.cli", *map(str, argv)], cwd=ROOT, capture_output=True, text=True)
    lines = done.stderr.splitlines()
    warned = [line for line in lines if "zero variance" in line]
    assert done.returncode == 0 and len(warned) == 1 and warned[0].startswith("bzoo fit: warning: data file"), lines
    assert not any("UserWarning" in line or "return build(" in line for line in lines), lines


def test_numpy_arrays_and_float64_data_fit_a_float32_model():
    x, y = toy()
    post = inference.fit(tiny(), (x.double().numpy(), y.numpy()), guide="map", steps=1, progress=False)
    assert post.predict(x.double().numpy()).dtype == torch.float32


# --- run folders: lock, overwrite, failure -------------------------------------------------------------------------

HOLD = """
import sys, time
sys.path.insert(0, {root!r})
from zoo.runs import RunLock
lock = RunLock({folder!r}).acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_lock(folder):
    child = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), folder=str(folder))],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    child = hold_lock(folder)
    try:
        with pytest.raises(RunFolderError) as e:
            RunFolder(folder)
        assert f"pid {child.pid}" in str(e.value) and "being written" in str(e.value)
    finally:
        child.send_signal(signal.SIGKILL)  # dies holding it: the lock file stays behind
        child.wait()
    assert (folder / LOCK).exists()
    with RunFolder(folder) as out:
        out.write_json("metrics.json", {"accuracy": 1.0})
    assert not (folder / LOCK).exists() and (folder / "metrics.json").exists()


def test_two_fits_into_one_folder_the_second_is_refused(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    with RunLock(folder):  # a run in progress
        code = bzoo(["fit", *TINY, "--guide", "map", "--steps", "1", "--out", folder])
    assert code == 2 and "being written" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == []


def test_overwrite_replaces_the_run_whole_and_keeps_the_users_files(tmp_path, capsys):
    folder = tmp_path / "run"
    base = ["fit", *TINY, "--steps", "2", "--out", folder]
    assert bzoo(base + ["--guide", "map"]) == 0  # writes weights.pt, which a mean-field run does not
    (folder / "notes.txt").write_text("mine")
    assert bzoo(["diagnose", folder, "--bins", "5"]) == 0
    assert (folder / "diagnose").is_dir()
    assert bzoo(base + ["--guide", "mean_field", "--num-samples", "3", "--overwrite"]) == 0
    capsys.readouterr()
    names = {p.name for p in folder.iterdir()}
    assert "weights.pt" not in names and "diagnose" not in names  # the old run's files are gone
    assert (folder / "notes.txt").read_text() == "mine"
    run = json.loads((folder / "run.json").read_text())
    assert run["config"]["guide"] == "mean_field" and set(run["files"]) == names - {"notes.txt"}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no fresh or old folder left beside it


def test_a_failed_command_leaves_no_folder_and_no_partial_run(tmp_path, monkeypatch, capsys):
    import inference as inference_module

    def fail(*args, **kwargs):
        raise inference.FitError("guide 'map' failed for a test")
    monkeypatch.setattr(inference_module, "fit", fail)
    assert bzoo(["fit", *TINY, "--guide", "map", "--out", tmp_path / "new" / "run"]) == 2
    assert not (tmp_path / "new" / "run").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert bzoo(["fit", *TINY, "--guide", "map", "--out", existing]) == 2
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


def test_when_writing_results_fails_the_posterior_is_saved_elsewhere(tmp_path, monkeypatch, capsys):
    from inference import arviz_io

    def full_disk(idata, path):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(arviz_io, "write", full_disk)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code = bzoo(["fit", *TINY, "--guide", "map", "--steps", "2", "--out", tmp_path / "run"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "No space left on device" in err and "saved at" in err
    saved = Path(err.split("saved at ")[1])
    assert saved.is_file() and saved.is_relative_to(tmp_path / "home")
    assert Posterior.load(saved).method == "map"
    assert not (tmp_path / "run").exists()


def test_a_run_folder_is_self_contained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert bzoo(["fit", *TINY, "--guide", "map", "--steps", "2", "--out", "map"]) == 0
    assert bzoo(["fit", *TINY, "--guide", "mean_field", "--steps", "2", "--num-samples", "3",
                 "--prior", "empirical:path=map/weights.pt", "--out", "mf"]) == 0
    run = json.loads((tmp_path / "mf" / "run.json").read_text())
    assert list(run["config"]["prior_sources"].values()) == ["prior/weights-0.pt"]
    (tmp_path / "map" / "weights.pt").unlink()  # the source is gone; the run folder's copy is not
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    post = Posterior.load(tmp_path / "mf" / "posterior.pt")
    assert "prior/weights-0.pt" in post.model.config()["prior"]


def test_run_json_records_the_prior_each_site_got(tmp_path):
    (tmp_path / "mixed.json").write_text(json.dumps({"head.*": "student-t:df=3", "*": "gaussian"}))
    assert bzoo(["fit", *TINY, "--guide", "map", "--steps", "1", "--prior", tmp_path / "mixed.json",
                 "--out", tmp_path / "run"]) == 0
    sites = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["site_priors"]
    assert sites["head.weight"].startswith("student-t") and sites["embed.weight"].startswith("gaussian")


# --- checksums -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", [0.25, 0.5, 0.75, -1])
def test_a_posterior_file_with_a_flipped_byte_is_refused(where, fitted, tmp_path):
    path = fitted["mean_field"].save(tmp_path / "p.pt")
    data = bytearray(path.read_bytes())
    data[int(where * len(data)) if where > 0 else where] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(PosteriorFileError) as e:
        Posterior.load(tmp_path / "flipped.pt")
    message = str(e.value)
    assert "\n" not in message and "flipped.pt" in message and ("damaged" in message or "checksum" in message)
    assert Posterior.load(path).method == "mean_field"  # the intact file loads


def test_a_file_without_the_checksum_is_refused_and_torch_still_reads_one_with_it(fitted, tmp_path):
    path = fitted["map"].save(tmp_path / "p.pt")
    obj = torch.load(path, weights_only=True)  # the trailer is invisible to torch.load
    torch.save(obj, tmp_path / "plain.pt")
    with pytest.raises(PosteriorFileError, match="no checksum"):
        Posterior.load(tmp_path / "plain.pt")


# --- degenerate posteriors ---------------------------------------------------------------------------------------------

def on_its_prior(model, x, y):
    """A mean-field guide whose every weight is exactly its N(0, 1) prior."""
    from inference.guides import MIN_SCALE, MeanField
    guide = MeanField(model, x[:2], y[:2], None)
    with torch.no_grad():
        for loc in guide.loc.values():
            loc.zero_()
        for rho in guide.rho.values():
            rho.fill_(math.log(math.expm1(1.0 - MIN_SCALE)))
    return Posterior(model, "mean_field", guide=guide, x_proto=x[:2])


def test_a_guide_on_its_prior_is_named_and_a_fitted_map_is_not(fitted):
    x, y = toy()
    prior = degeneracy.check(on_its_prior(tiny(), x, y), x)
    assert prior.on_prior and prior.degenerate and prior.share_on_prior == 1 and prior.kl_per_number < 1e-6
    assert "sits on its prior" in prior.warning() and "temperature" in prior.warning()
    model = tiny()
    post = inference.fit(model, (x, y), guide="map", steps=20, lr=3e-2, progress=False)
    found = degeneracy.check(post, x)
    assert found.on_prior is None and not found.constant and found.warning() is None
    assert found.to_dict()["degenerate"] is False


def test_a_constant_predictive_is_named():
    x, _ = toy()
    probs = torch.tensor([0.6, 0.4]).expand(5, 12, 2) + 0.001 * torch.rand(5, 12, 2)
    found = degeneracy.check(Posterior(tiny(), "fixed", draws={"head.bias": torch.zeros(5, 2)}), x, probs=probs)
    assert found.constant and found.degenerate and "constant" in found.warning()
    assert found.to_dict() == {"degenerate": True, "constant_predictive": True,
                               "predictive_spread": pytest.approx(found.spread), "on_prior": None,
                               "share_on_prior": None, "kl_per_weight": None}


@pytest.mark.slow
@pytest.mark.correctness
def test_mean_field_at_temperature_one_on_italy_power_demand_is_degenerate_and_map_is_not(tmp_path, capsys):
    """The real case, with the documented defaults (minutes): mean-field collapses to its prior, MAP fits."""
    for guide in ("mean_field", "map"):
        assert bzoo(["fit", "--guide", guide, "--out", tmp_path / guide]) == 0
    err = capsys.readouterr().err
    mf = json.loads((tmp_path / "mean_field" / "metrics.json").read_text())
    fitted_map = json.loads((tmp_path / "map" / "metrics.json").read_text())
    assert mf["degenerate"] and mf["on_prior"] and mf["constant_predictive"]
    assert not fitted_map["degenerate"] and fitted_map["accuracy"] > 0.9
    assert err.count("degenerate posterior") == 1


# --- a newcomer's path ---------------------------------------------------------------------------------------------

def test_the_command_line_knows_the_librarys_defaults_without_importing_it():
    from zoo import data, recipes
    assert recipes.DATASET == data.DEFAULT_DATASET


def test_bzoo_help_imports_no_heavy_library():
    code = ("import sys; from zoo import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'pyro', 'arviz') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_every_flag_shows_its_default_or_that_it_is_required():
    parser = cli.build_parser()
    formatter = cli.HelpFormatter("bzoo")
    missing = []
    for verb, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                text = formatter._get_help_string(action)
                if ("(required)" not in text) if action.required else ("default" not in text):
                    missing.append(f"{verb} {action.option_strings[0]}")
    assert not missing, missing


def test_diagnose_and_metrics_json_agree(tmp_path, capsys):
    folder = tmp_path / "run"
    assert bzoo(["fit", *TINY, "--guide", "mean_field", "--steps", "3", "--num-samples", "4", "--out", folder]) == 0
    assert bzoo(["diagnose", folder]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    report = json.loads((folder / "diagnose" / "diagnostics.json").read_text())["calibration"]
    for key in ("accuracy", "nll", "ece", "brier", "entropy", "mi"):
        assert report[key] == metrics[key], key


def test_fit_seconds_count_every_resumed_part(tmp_path):
    from core.signed import write

    x, y = toy()
    checkpoint = tmp_path / "c.pt"
    inference.fit(tiny(), (x, y), guide="mean_field", steps=4, progress=False, checkpoint=checkpoint,
                  checkpoint_every=2)
    obj = torch.load(checkpoint, weights_only=True)
    write({**obj, "step": 2, "losses": obj["losses"][:2], "seconds": 1000.0}, checkpoint)
    post = inference.fit(tiny(), (x, y), guide="mean_field", steps=4, progress=False, checkpoint=checkpoint,
                         checkpoint_every=2)
    assert 1000.0 < post.info["fit_seconds"] < 1000.0 + 600


def test_every_link_in_docs_resolves_inside_the_repository():
    import re
    bad = []
    for page in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists() or ROOT not in resolved.parents:
                bad.append(f"{page.name}: {target}")
            elif anchor and resolved.suffix == ".md":
                headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.+)$", resolved.read_text(), re.M)}
                if anchor not in headings:
                    bad.append(f"{page.name}: {target} (no heading '{anchor}')")
    assert not bad, bad
