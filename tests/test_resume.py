"""Checkpointed fits: killed and resumed, they end bit-identical to an uninterrupted fit."""
import importlib
import os
import signal
import subprocess
import sys

import pytest
import torch

from inference import FitError, fit
from inference.persist import PosteriorFileError
from zoo import TransformerClassifier

SVI = importlib.import_module("inference.svi")  # the module of the SVI loop
STEPS, EVERY = 12, 4
# Every piece of state the loop carries: minibatch order, dropout masks, particles, annealing, clipping.
OPTIONS = dict(guide="mean_field", steps=STEPS, lr=1e-2, batch_size=5, num_particles=2, kl_anneal=5, clip_norm=1.0,
               seed=3, progress=False)


def tiny(bayes="weights"):
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, mlp_ratio=1, max_len=16, bayes=bayes,
                                 dropout=0.1)


def toy(n=12, t=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, t, 1, generator=g)
    return x, (x.mean((1, 2)) > 0).long()


def run(checkpoint=None, **overrides):
    torch.set_num_threads(2)  # the same thread count in every process: reductions then run in the same order
    return fit(tiny(), toy(), **{**OPTIONS, **overrides}, checkpoint=checkpoint, checkpoint_every=EVERY)


def killed_fit(checkpoint, kill_at):
    """Run in a child process: SIGKILL (no cleanup, no handlers) just as step ``kill_at`` begins."""
    elbo_terms, calls = SVI.elbo_terms, [0]

    def elbo_or_die(*args, **kwargs):
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        return elbo_terms(*args, **kwargs)
    SVI.elbo_terms = elbo_or_die
    run(checkpoint)


def assert_identical(a, b):
    assert a.info["losses"] == b.info["losses"]
    for part in ("model", "guide"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys()
        for name in sa:
            assert torch.equal(sa[name], sb[name]), f"{part}.{name}"


def test_killed_and_resumed_fit_ends_where_an_uninterrupted_one_does(tmp_path):
    checkpoint = tmp_path / "fit.ckpt"
    child = subprocess.run([sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1])['killed_fit']"
                            "(sys.argv[2], int(sys.argv[3]))", __file__, str(checkpoint), "9"],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert torch.load(checkpoint, weights_only=True)["step"] == 8  # the last multiple of EVERY before the kill
    resumed = run(checkpoint)
    assert len(resumed.info["losses"]) == STEPS
    assert_identical(run(), resumed)


@pytest.mark.parametrize("guide, bayes", [("low_rank", "last-layer"), ("dirichlet", "attention")])
def test_interrupted_fit_resumes_exactly_for_other_guides(tmp_path, monkeypatch, guide, bayes):
    options = dict(guide=guide, steps=8, batch_size=None, num_particles=1)
    reference = fit(tiny(bayes), toy(), **{**OPTIONS, **options})
    elbo_terms, calls = SVI.elbo_terms, [0]

    def interrupted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:
            raise KeyboardInterrupt
        return elbo_terms(*args, **kwargs)
    monkeypatch.setattr(SVI, "elbo_terms", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny(bayes), toy(), **{**OPTIONS, **options}, checkpoint=tmp_path / "c.pt", checkpoint_every=5)
    monkeypatch.setattr(SVI, "elbo_terms", elbo_terms)
    assert_identical(reference, fit(tiny(bayes), toy(), **{**OPTIONS, **options}, checkpoint=tmp_path / "c.pt",
                                    checkpoint_every=5))


def test_a_finished_checkpoint_returns_the_same_fit_without_stepping(tmp_path, monkeypatch):
    first = run(tmp_path / "c.pt", steps=4)

    def no_steps(*args, **kwargs):
        raise AssertionError("a finished fit was stepped again")
    monkeypatch.setattr(SVI, "elbo_terms", no_steps)
    assert_identical(first, run(tmp_path / "c.pt", steps=4))


@pytest.mark.parametrize("change, word", [({"lr": 3e-3}, "lr="), ({"seed": 4}, "seed="), ({"steps": 3}, "steps=")])
def test_a_checkpoint_from_another_fit_is_refused(tmp_path, change, word):
    run(tmp_path / "c.pt", steps=2)
    with pytest.raises(PosteriorFileError) as e:
        run(tmp_path / "c.pt", **{"steps": 2, **change})
    assert word in str(e.value) and "c.pt" in str(e.value)


def test_a_checkpoint_of_other_data_is_refused(tmp_path):
    run(tmp_path / "c.pt", steps=2)
    x, y = toy()
    with pytest.raises(PosteriorFileError, match="data="):
        fit(tiny(), (x + 1, y), **{**OPTIONS, "steps": 2}, checkpoint=tmp_path / "c.pt", checkpoint_every=EVERY)


def test_checkpointing_is_for_svi_guides():
    with pytest.raises(FitError, match="ensemble"):
        fit(tiny(), toy(), guide="ensemble", steps=1, progress=False, checkpoint="unused.ckpt")


def test_an_overwrite_interrupted_mid_fit_resumes_from_its_checkpoint_on_the_next_overwrite(tmp_path, monkeypatch):
    """--overwrite writes into a fresh folder beside the run; the checkpoint a killed overwrite left there is what
    the next --overwrite resumes from (it used to be deleted, and the fit restarted at step 0)."""
    from zoo import cli
    out = tmp_path / "run"
    args = ["fit", "--guide", "mean_field", "--steps", "8", "--checkpoint-every", "2", "--d-model", "8", "--depth",
            "1", "--heads", "2", "--num-samples", "2", "--out", str(out), "--overwrite"]
    assert cli.main(args[:-1]) == 0  # the run being replaced
    elbo_terms, calls = SVI.elbo_terms, [0]

    def counted(*a, **k):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return elbo_terms(*a, **k)
    monkeypatch.setattr(SVI, "elbo_terms", counted)
    assert cli.main(args) != 0  # interrupted at step 5: its checkpoint holds step 4
    assert (tmp_path / ".run.bzoo-new" / "checkpoint.pt").is_file()
    calls[0] = -100  # no interruption this time; count the steps it takes
    assert cli.main(args) == 0
    assert calls[0] == -100 + 8 - 4  # resumed at step 4: four steps, not eight
    assert not (tmp_path / ".run.bzoo-new").exists() and (out / "run.json").is_file()
