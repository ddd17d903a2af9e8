"""The peers (plain PyTorch, MiniRocket, laplace-torch) and the batched deep ensemble."""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from inference import FitError, fit
from zoo import TransformerClassifier, data, recipes
from zoo.data import Split
from zoo.study.peers import PEERS, PackedMask, export_map, fit_temperature, rocket_inputs

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"d_model": 8, "depth": 1, "heads": 2, "mlp_ratio": 2}
QUICK = {"plain": {"steps": 5}, "minirocket": {"n_kernels": 84}, "laplace-torch": {"steps": 5, "num_samples": 8}}


def tiny(variable=True, length=12, channels=2, n=30, seed=0):
    """A two-class toy set: class 1 is shifted up; variable lengths 5..length with a mask, or all ``length``."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, length + 1, n) if variable else np.full(n, length)
    xs = [rng.normal(size=(t, channels)) + 1.5 * (i % 2) for i, t in enumerate(lengths)]
    y = np.arange(n) % 2
    if not variable:
        xs = np.stack(xs)
    return data.build("tiny", xs[:20], y[:20], xs[20:], y[20:])


def options(ds, patch=1):
    return {**SMALL, "max_len": ds.max_len, "patch": patch}


@pytest.mark.parametrize("variable", [False, True])
@pytest.mark.parametrize("name", list(PEERS))
def test_every_peer_gives_probabilities_for_fixed_and_variable_length_series(name, variable):
    ds = tiny(variable, channels=1 if name == "minirocket" else 2)  # multivariate MiniRocket: the slow test below
    peer = PEERS[name](ds, options(ds, patch=2), 0, "cpu", **QUICK[name])
    probs = peer.predict(ds.test.x, ds.test.mask)
    assert probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert probs.dim() == 3 and probs.shape[1:] == (len(ds.test), 2)
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:2]), atol=1e-5)
    assert peer.fit_seconds > 0 and isinstance(peer.info, dict)
    if name == "minirocket":  # temperature-scaled ridge scores: soft, with the ridge's own predicted class
        hard = PEERS[name](ds, options(ds, patch=2), 0, "cpu", calibrate=False, **QUICK[name])
        hard_probs = hard.predict(ds.test.x, ds.test.mask)
        assert set(hard_probs.unique().tolist()) <= {0.0, 1.0} and hard.info["temperature"] is None
        assert probs.shape[0] == 1 and ((probs > 0) & (probs < 1)).all() and peer.info["temperature"] > 0
        assert torch.equal(probs.argmax(-1), hard_probs.argmax(-1))
    if name == "laplace-torch":
        assert probs.shape[0] == 8 and probs.std(0).max() > 0  # Monte Carlo draws of the GLM predictive


def test_the_temperature_is_the_maximum_likelihood_one():
    """Labels drawn from softmax(z), scores 2.5 z: the fitted temperature is 2.5 within Monte Carlo error
    (its standard deviation over 30 such draws of 4,000 labels is 0.056; the tolerance is 4.5 of them)."""
    g = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(4000, 3, generator=g)
    y = torch.multinomial(z.softmax(-1), 1, generator=g)[:, 0]
    assert abs(fit_temperature(2.5 * z, y) - 2.5) < 0.25
    assert abs(fit_temperature(z, y) - 1.0) < 0.1
    unseen = torch.cat([2.5 * z, torch.tensor([[0.0, 1.0, -math.inf]])]), torch.cat([y, torch.tensor([2])])
    assert fit_temperature(*unseen) == fit_temperature(2.5 * z, y)  # a class its classifier never saw: left out


def test_a_peers_cells_depend_on_its_fitters_defaults():
    """A resolved peer row writes out its fitter's keyword defaults, so a changed default changes its cells' keys."""
    from zoo.study.plan import resolve_row

    row = resolve_row({"label": "minirocket", "peer": "minirocket"})
    assert row["defaults"] == {"n_kernels": 10000, "calibrate": True, "folds": 5}
    assert resolve_row({"label": "plain", "peer": "plain"})["options"] == {
        k: v for k, v in recipes.FIT["map"].items() if k in ("steps", "lr")}


@pytest.mark.slow  # numba compiles MiniRocket's multivariate kernels on first use: minutes on a busy machine
def test_minirocket_takes_multivariate_variable_length_series_shorter_than_its_kernels():
    ds = tiny(variable=True, length=8, channels=3)
    peer = PEERS["minirocket"](ds, {}, 0, "cpu", n_kernels=84)
    assert peer.info["length"] == 9 and peer.info["resampled"]
    probs = peer.predict(ds.test.x, ds.test.mask)
    assert probs.shape == (1, len(ds.test), 2) and (probs.argmax(-1)[0] == ds.test.y).float().mean() > 0.5


def test_the_plain_peer_trains_with_the_padding_mask():
    ds = tiny(variable=True)
    garbage = ds.train.x.masked_fill(~ds.train.mask[..., None], 50.0)
    other = dataclasses.replace(ds, train=Split(garbage, ds.train.y, ds.train.mask))
    a = PEERS["plain"](ds, options(ds, patch=3), 0, "cpu", steps=5).predict(ds.test.x, ds.test.mask)
    b = PEERS["plain"](other, options(ds, patch=3), 0, "cpu", steps=5).predict(ds.test.x, ds.test.mask)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("patch", [1, 3])
def test_the_exported_map_network_computes_the_zoo_models_probabilities(patch):
    ds = tiny(variable=True)
    torch.manual_seed(0)
    model = TransformerClassifier(2, input_dim=2, **options(ds, patch))
    posterior = fit(model, ds.train, guide="map", steps=5, progress=False)
    net = export_map(model, posterior)
    with torch.no_grad():
        plain = net(ds.test.x, ds.test.mask).softmax(-1)
        packed = PackedMask(net)(PackedMask.pack(ds.test.x, ds.test.mask)).softmax(-1)
    zoo_probs = posterior.predict(ds.test.x, mask=ds.test.mask)[0]
    assert torch.allclose(plain, zoo_probs, atol=1e-5) and torch.allclose(packed, zoo_probs, atol=1e-5)


def test_laplace_torch_runs_beside_the_cpu_torch_wheel():
    import laplace  # installed by `make peers` (part of `make install`): a failure here means it is missing

    assert laplace is not None
    if not torch.cuda.is_available():  # `make peers` must not have pulled a CUDA torch over the CPU wheel
        assert torch.version.cuda is None, torch.__version__
    ds = tiny(variable=True)
    peer = PEERS["laplace-torch"](ds, options(ds), 0, "cpu", steps=20, num_samples=16)
    assert peer.info["hessian"] == "kron" and peer.info["last_layer_parameters"] == (SMALL["d_model"] + 1) * 2
    assert np.isfinite(peer.info["prior_precision"]) and peer.info["prior_precision"] > 0


def test_rocket_inputs_resample_the_real_steps_to_a_common_length():
    x = torch.zeros(2, 6, 1)
    x[0, :, 0] = torch.arange(6.0)
    x[1, :3, 0] = torch.tensor([0.0, 2.0, 4.0])
    mask = torch.arange(6) < torch.tensor([6, 3])[:, None]
    out = rocket_inputs(x, mask, 9)
    assert out.shape == (2, 1, 9) and out.dtype == np.float64
    assert np.allclose(out[0, 0], np.linspace(0, 5, 9)) and np.allclose(out[1, 0], np.linspace(0, 4, 9))


# --- the deep ensemble, batched -----------------------------------------------------------------------

def toy_model(bayes="weights", dropout=0.0):
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=2, d_model=8, depth=1, heads=2, max_len=12, patch=2, bayes=bayes,
                                 dropout=dropout)


@pytest.mark.parametrize("kl_anneal", [0, 5])
@pytest.mark.parametrize("batch_size", [None, 7])
@pytest.mark.parametrize("variable", [False, True])
def test_a_batched_ensemble_trains_the_same_members_as_the_loop(variable, batch_size, kl_anneal):
    ds = tiny(variable)
    run = {}
    for batched in (False, True):
        model = toy_model()
        run[batched] = (model, fit(model, ds.train, guide="ensemble", num_members=3, steps=10, lr=1e-2,
                                   batch_size=batch_size, batched=batched, kl_anneal=kl_anneal, progress=False))
    (loop_model, loop), (batched_model, batched) = run[False], run[True]
    assert batched.info["batched"] and not loop.info["batched"]
    for name, v in loop.draws.items():
        assert torch.allclose(batched.draws[name], v, atol=1e-5), name
    for a, b in zip(loop_model.net.parameters(), batched_model.net.parameters()):  # member 0 is the model, trained
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(loop.draws["head.weight"][0], loop.draws["head.weight"][1])
    assert torch.allclose(batched.predict(ds.test.x, mask=ds.test.mask), loop.predict(ds.test.x, mask=ds.test.mask),
                          atol=1e-5)


def test_batching_is_refused_by_name_where_members_cannot_be_stacked():
    ds = tiny(variable=True)
    with pytest.raises(FitError, match="batched=True needs a transformer without attention sites"):
        fit(toy_model("attention"), ds.train, guide="ensemble", num_members=2, steps=1, batched=True, progress=False)


def test_minirocket_never_starts_its_thread_runtime_in_the_calling_process():
    """MiniRocket's numba pool slowed every later torch cell of its process (issue 33: 2.9 s -> 195 s); it runs
    in a child, so this process's numba threading layer stays unlaunched and its torch threads unchanged."""
    import numba.np.ufunc.parallel as numba_parallel

    threads = torch.get_num_threads()
    ds = tiny(False, channels=1)
    peer = PEERS["minirocket"](ds, {}, 0, "cpu", n_kernels=84)
    probs = peer.predict(ds.test.x, ds.test.mask)
    assert probs.shape == (1, len(ds.test), 2)
    assert not numba_parallel._is_initialized and torch.get_num_threads() == threads
    before = os.times()
    peer.close()  # the child's CPU time then counts in the cell's (``cpu_seconds``: waited-for children included)
    after = os.times()
    assert (after.children_user + after.children_system) - (before.children_user + before.children_system) > 0.5
