"""Early stopping on validation: it watches without touching the fit, stops on patience, and refuses what it can't do."""
import pytest
import torch

from inference import FitError, fit
from zoo import TransformerClassifier

pytestmark = pytest.mark.usefixtures("one_thread")


def toy():
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, max_len=6)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 6, 1, generator=g)
    y = (x.mean((1, 2)) > 0).long()
    return model, (x[:16], y[:16]), (x[16:], y[16:])


@pytest.mark.parametrize("guide", ["map", "mean_field"])
def test_a_refit_stopped_at_the_best_step_is_the_early_stopped_fit(guide):
    """Monitoring draws on a forked RNG and the best state is what comes back: a plain fit of the same schedule,
    stopped at the best step, ends in the very same parameters."""
    model, train, val = toy()
    watched = fit(model, train, guide=guide, steps=60, lr=3e-2, validation=val, check_every=10, patience=100,
                  progress=False)
    record = watched.info["validation"]
    assert record["steps"] == [10, 20, 30, 40, 50, 60] and len(watched.info["losses"]) == 60
    assert record["best_nll"] == min(record["nll"])
    twin, _, _ = toy()
    plain = fit(twin, train, guide=guide, steps=60, lr=3e-2, stop_at=record["best_step"], progress=False)
    assert plain.info["stopped_at"] == record["best_step"]
    assert watched.info["losses"][:record["best_step"]] == plain.info["losses"]
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    p = watched.predict(val[0], 5)
    torch.manual_seed(0)
    assert torch.equal(p, plain.predict(val[0], 5))


def test_a_fit_stops_after_patience_checks_without_a_better_validation_nll():
    """Validation labels opposite to training's: the NLL only grows, so the first check is the best and the fit stops
    ``patience`` checks later, back in the state of the first check."""
    model, train, (xv, yv) = toy()
    post = fit(model, train, guide="map", steps=200, lr=3e-2, validation=(xv, 1 - yv), check_every=10, patience=2,
               progress=False)
    record = post.info["validation"]
    assert record["nll"][1] > record["nll"][0] and record["nll"][2] > record["nll"][0]
    assert record["best_step"] == 10 and record["steps"] == [10, 20, 30] and post.info["stopped_at"] == 30


def test_early_stopping_is_refused_where_it_cannot_work():
    model, train, val = toy()
    with pytest.raises(FitError, match="early stopping .* is for the SVI guides"):
        fit(model, train, guide="ensemble", steps=2, validation=val, progress=False)
    with pytest.raises(FitError, match="stop_at=5 is beyond steps=4"):
        fit(model, train, guide="map", steps=4, stop_at=5, progress=False)
    with pytest.raises(FitError, match="cannot be combined"):
        fit(model, train, guide="map", steps=4, validation=val, checkpoint="unused.pt", progress=False)
    with pytest.raises(FitError, match="patience must be an integer >= 1, got 0"):
        fit(model, train, guide="map", steps=4, validation=val, patience=0, progress=False)
    x, y = val
    with pytest.raises(ValueError, match="validation data"):
        fit(model, train, guide="map", steps=4, validation=(x, y + 7), progress=False)
