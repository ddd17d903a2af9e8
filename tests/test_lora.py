"""Backbones, LoRA adapters as sample sites, and the Bayesian-LoRA methods (issue 13).

A tiny backbone is pretrained once for the module (three sources, a few steps), so
nothing here pretrains for minutes.
"""
import copy
import hashlib
import io
import json
import math

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from inference import Posterior, elbo_terms, fit
from core.signed import read_bytes, write
from inference.guides import BLoB
from inference.lora import swag_samples
from zoo import data
from zoo.cli import main
from zoo.data.corpus import corpus, fingerprint
from zoo.models import ModelError
from zoo.models.backbone import Backbone, BackboneError
from zoo.models.lora import LoRAClassifier, parse_adapter, univariate
from zoo.pretrain import pretrain

TINY = {"d_model": 8, "depth": 1, "heads": 2, "mlp_ratio": 2, "patch": 4, "length": 16, "batch_size": 8, "steps": 3}


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("backbone") / "bb"
    pretrain(out, ["ItalyPowerDemand"], only=["Airline", "Lynx", "GunPoint"], progress=False, **TINY)
    return out


@pytest.fixture(scope="module")
def ipd():
    return data.load("ItalyPowerDemand")


def folder_digest(path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.iterdir())}


def test_pretraining_folder_records_config_data_and_fingerprints(backbone_dir):
    bb = Backbone.load(backbone_dir)
    assert bb.cfg.d_model == 8 and bb.cfg.input_dim == 1 and bb.cfg.num_classes == bb.cfg.patch == 4
    assert bb.excluded == ["ItalyPowerDemand"]
    assert sorted(s["name"] for s in bb.sources) == ["Airline", "GunPoint", "Lynx"]
    assert all(len(s["sha256"]) == 64 and s["series"] > 0 for s in bb.sources)
    assert len(bb.fingerprints) == sum(s["series"] for s in bb.sources)
    info = json.loads((backbone_dir / "config.json").read_text())
    assert info["cpu_seconds"] > 0 and info["pretraining"]["exclude"] == ["ItalyPowerDemand"]
    obj = torch.load(backbone_dir / "backbone.pt", weights_only=True)  # plain tensors and types only
    assert set(obj["state"]) == set(bb.state)


def test_corpus_excludes_by_name_and_fingerprints_ignore_standardization():
    sources, removed = corpus(["GunPoint"], only=["Airline"])
    assert "segmentation/GunPoint.csv" in removed["files"] and "GunPoint/GunPoint_TRAIN.ts" in removed["files"]
    s = sources[0].series[0]
    assert fingerprint(s) == fingerprint(((s - 3.0) / 7.0).astype(np.float32))
    assert fingerprint(s) != fingerprint(s[::-1])


def test_zero_b_reproduces_the_backbone_exactly(backbone_dir):
    bb = Backbone.load(backbone_dir)
    torch.manual_seed(0)
    model = LoRAClassifier(2, 1, bb, adapter="lora:rank=2,alpha=4,targets=*")
    x = torch.randn(5, 24, 1)
    z, _ = univariate(x, None, model.cfg.length)
    assert torch.equal(model.net.encode(z)[0], bb.build().encode(z)[0])
    full = LoRAClassifier(2, 1, bb, adapter="full")
    full.net.head.load_state_dict(model.net.head.state_dict())
    assert torch.equal(model.net(x), full.net(x))
    with torch.no_grad():
        model.net.get_submodule("lora.blocks.0.attn.v.B").weight.fill_(0.1)
    assert not torch.allclose(model.net(x), full.net(x))


def test_padding_does_not_change_a_series(backbone_dir):
    model = LoRAClassifier(3, 2, backbone_dir)
    x = torch.randn(2, 20, 2)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 13:] = False
    padded = x.clone()
    padded[1, 13:] = 99.0
    alone = model.net(x[1:, :13])
    assert torch.allclose(model.net(padded, mask)[1:], alone, atol=1e-5)


FITS = [("map", {}), ("mean_field", {}), ("low_rank", {}), ("blob", {}),
        ("laplace_lora", {"prior_steps": 2, "num_samples": 4}), ("swag_lora", {"swag_steps": 4, "collect_every": 2}),
        ("lora_ensemble", {"num_members": 2})]


@pytest.mark.parametrize("guide,options", FITS)
def test_fits_leave_the_backbone_bitwise_unchanged(backbone_dir, ipd, guide, options):
    before = folder_digest(backbone_dir)
    bb = Backbone.load(backbone_dir)
    model = LoRAClassifier.for_dataset(ipd, bb)
    posterior = fit(model, ipd.train, guide=guide, steps=3, progress=False, **options)
    for name, value in model.net.backbone_weights().items():
        assert torch.equal(value, bb.state[name]), name
    assert folder_digest(backbone_dir) == before
    probs = posterior.predict(ipd.test.x[:7], 3)
    assert torch.isfinite(probs).all() and probs.shape[-2:] == (7, 2)


def test_only_adapters_and_head_are_trained(backbone_dir):
    model = LoRAClassifier(2, 1, backbone_dir, adapter="lora:rank=4,alpha=8")
    names = [n for n, _ in model.net.named_parameters()]
    assert all(n.startswith(("lora.", "head.")) for n in names)
    assert sorted(n.split(".")[-3] for n in names if n.startswith("lora.")) == ["q", "q", "v", "v"]
    assert model.trained_parameters() == 2 * 2 * 4 * 8 + 2 * 10 + 2
    assert set(LoRAClassifier(2, 1, backbone_dir, bayes="adapters").sites) == {n for n in names if "lora" in n}


def test_laplace_lora_agrees_with_laplace_torch_on_the_same_adapter_parameters(backbone_dir, ipd):
    from laplace import Laplace

    torch.manual_seed(0)
    model = LoRAClassifier.for_dataset(ipd, backbone_dir, adapter="lora:rank=1,alpha=2", bayes="adapters")
    posterior = fit(model, ipd.train, guide="laplace_lora", steps=20, lr=1e-2, hessian="full", prior_steps=30,
                    num_samples=4000, progress=False)
    mode = posterior.info["mode"]

    net = copy.deepcopy(model.net)  # the adapter parameters at the MAP, and nothing else trainable
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.requires_grad_(name in mode)
            if name in mode:
                p.copy_(mode[name])
    la = Laplace(net, "classification", subset_of_weights="all", hessian_structure="full")
    with sdpa_kernel(SDPBackend.MATH):  # curvlinops' GGN needs forward-mode derivatives, which fused SDPA lacks
        la.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ipd.train.x, ipd.train.y), batch_size=67))
        la.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=30, lr=1e-1, prior_structure="scalar")
    assert torch.allclose(posterior.info["prior_precision"], la.prior_precision, rtol=1e-5)
    assert math.isclose(posterior.info["log_marginal_likelihood"], la.log_marginal_likelihood().item(), rel_tol=1e-5)

    names = [n for n, p in net.named_parameters() if p.requires_grad]
    draws = torch.cat([posterior.draws[n].reshape(4000, -1) for n in names], 1).double()
    mean = torch.cat([mode[n].reshape(-1) for n in names]).double()
    var = la.posterior_covariance.diagonal().double()
    s = draws.shape[0]
    assert ((draws.mean(0) - mean).abs() < 5 * (var / s).sqrt()).all()  # Monte Carlo error of the mean
    assert ((draws.var(0) / var - 1).abs() < 5 * math.sqrt(2 / s)).all()  # ... and of the variance

    # The GLM predictive: logits of the linearized network have laplace-torch's mean f(x; MAP) and covariance J S J^T
    x = ipd.test.x[:4]
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        f_mu, f_var = la._glm_predictive_distribution(x)
        logits = posterior.model.net(x, None, posterior.draws).double()
    assert posterior.model.linearized and not model.linearized  # the caller's model is left as it was
    f_sd = f_var.diagonal(dim1=-2, dim2=-1).double().sqrt()
    assert ((logits.mean(0) - f_mu).abs() < 5 * f_sd / math.sqrt(s)).all()
    assert ((logits.std(0) / f_sd - 1).abs() < 5 * math.sqrt(1 / (2 * s))).all()


def test_laplace_lora_kron_uses_kfac_and_marginal_likelihood(backbone_dir, ipd):
    from laplace import Laplace

    model = LoRAClassifier.for_dataset(ipd, backbone_dir, bayes="adapters")
    posterior = fit(model, ipd.train, guide="laplace_lora", steps=5, prior_steps=10, num_samples=10, progress=False)
    net = copy.deepcopy(model.net)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.requires_grad_(name in posterior.info["mode"])
            if name in posterior.info["mode"]:
                p.copy_(posterior.info["mode"][name])
    la = Laplace(net, "classification", subset_of_weights="all", hessian_structure="kron")
    la.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ipd.train.x, ipd.train.y), batch_size=67))
    la.optimize_prior_precision(pred_type="glm", method="marglik", n_steps=10, lr=1e-1, prior_structure="scalar")
    assert torch.allclose(posterior.info["prior_precision"], la.prior_precision, rtol=1e-5)
    assert math.isclose(posterior.info["log_marginal_likelihood"], la.log_marginal_likelihood().item(), rel_tol=1e-5)


def _normal_kl(mu, sigma, prior_scale):
    return (math.log(prior_scale) - sigma.log() + (sigma ** 2 + mu ** 2) / (2 * prior_scale ** 2) - 0.5).sum()


@pytest.mark.parametrize("bayes", ["*.A.weight", "adapters"])
def test_blob_kl_is_the_closed_form(backbone_dir, ipd, bayes):
    torch.manual_seed(1)
    model = LoRAClassifier.for_dataset(ipd, backbone_dir, bayes=bayes, prior="gaussian:scale=0.2")
    x, y = ipd.train.x, ipd.train.y
    guide = BLoB(model, x[:2], y[:2], None)
    with torch.no_grad():
        for p in guide.loc.values():
            p.normal_(0, 0.3)
    terms = elbo_terms(model, guide, x, y, None, len(y))
    scales = guide.scales()
    expected = sum(_normal_kl(guide.loc[n.replace(".", "__")], scales[n], 0.2) for n in guide.bayesian)
    points = [n for n in guide.sites if n not in scales]  # B matrices (Delta): their KL term is -log p(B)
    expected = expected - sum(torch.distributions.Normal(0.0, 0.2).log_prob(guide.loc[n.replace(".", "__")]).sum()
                              for n in points)
    assert all(n.endswith(".A.weight") for n in guide.bayesian) and len(guide.bayesian) == 2
    assert (len(points) == 0) == (bayes == "*.A.weight")
    assert torch.allclose(terms.kl, expected, rtol=1e-5)


def test_blob_starts_almost_a_point_and_needs_a_matrices(backbone_dir, ipd):
    model = LoRAClassifier.for_dataset(ipd, backbone_dir)
    guide = BLoB(model, ipd.train.x[:2], ipd.train.y[:2], None, init_eps=0.05)
    for scale in guide.scales().values():
        assert (scale >= 0.05 ** 2 / 2).all() and (scale <= 0.05 ** 2 + 1e-5).all()
    with pytest.raises(Exception, match="LoRA A matrices"):
        fit(LoRAClassifier.for_dataset(ipd, backbone_dir, bayes="head"), ipd.train, guide="blob", steps=1,
            progress=False)


def test_swag_samples_have_swag_moments():
    g = torch.Generator().manual_seed(0)
    snapshots = torch.randn(8, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    draws = swag_samples(snapshots, max_rank=5, scale=0.5, num_samples=40000, seed=1)
    mean = snapshots.mean(0)
    d = (snapshots - mean)[-5:]
    cov = 0.5 * (torch.diag(snapshots.var(0, unbiased=False)) + d.T @ d / 4)
    emp = torch.cov(draws.T)
    se = (cov.diagonal()[:, None] * cov.diagonal()[None] + cov ** 2).sqrt() / math.sqrt(40000)
    assert ((draws.mean(0) - mean).abs() < 5 * (cov.diagonal() / 40000).sqrt()).all()
    assert ((emp - cov).abs() < 5 * se).all()


def test_lora_ensemble_members_differ_only_in_adapters(backbone_dir, ipd):
    model = LoRAClassifier.for_dataset(ipd, backbone_dir)
    posterior = fit(model, ipd.train, guide="lora_ensemble", steps=2, num_members=3, progress=False)
    assert set(posterior.draws) == {n for n, _ in model.net.named_parameters()}
    assert all(v.shape[0] == 3 for v in posterior.draws.values())
    a = posterior.draws["lora.blocks.0.attn.q.A.weight"]
    assert not torch.equal(a[0], a[1])


def test_posterior_saves_and_loads_with_weights_only(backbone_dir, ipd, tmp_path):
    model = LoRAClassifier.for_dataset(ipd, backbone_dir)
    settings = {"mean_field": {}, "swag_lora": {"swag_steps": 4, "collect_every": 2, "num_samples": 5},
                "laplace_lora": {"prior_steps": 2, "num_samples": 5}}
    for guide, options in settings.items():
        posterior = fit(model, ipd.train, guide=guide, steps=3, progress=False, **options)
        path = posterior.save(tmp_path / f"{guide}.pt")
        loaded = Posterior.load(path)
        assert isinstance(loaded.model, LoRAClassifier)
        draws = posterior.sample(5) if guide == "mean_field" else None
        x = ipd.test.x[:6]
        assert torch.allclose(posterior.predict(x, 5, draws=draws), loaded.predict(x, 5, draws=draws), atol=1e-6)


def test_leakage_is_refused_by_name_and_by_content(backbone_dir):
    gunpoint = data.load("GunPoint")
    with pytest.raises(BackboneError, match="pretrained on GunPoint"):
        LoRAClassifier.for_dataset(gunpoint, backbone_dir)
    gunpoint.name = "my-renamed-data"
    with pytest.raises(BackboneError, match="series of my-renamed-data occur in the data"):
        LoRAClassifier.for_dataset(gunpoint, backbone_dir)


@pytest.mark.parametrize("adapter,match", [
    ("lora:rank=0", "rank must be a whole number >= 1"),
    ("lora:rank=9", "larger than projection 'blocks.0.attn.q' allows"),
    ("lora:targets=*.nothing", "targets glob '\\*.nothing' matches no projection"),
    ("lora:alpha=-1", "alpha must be a positive number"),
    ("lora:ranks=2", "unexpected 'ranks=2'"),
    ("dora", "unknown adapter 'dora'"),
])
def test_bad_adapters_are_refused_naming_the_culprit(backbone_dir, adapter, match):
    with pytest.raises(ModelError, match=match):
        LoRAClassifier(2, 1, backbone_dir, adapter=adapter)


def test_a_request_for_another_architecture_is_refused(backbone_dir):
    with pytest.raises(ModelError, match="d_model=32 does not match the backbone's d_model=8"):
        LoRAClassifier(2, 1, backbone_dir, d_model=32)
    assert parse_adapter("lora:rank=2,alpha=4,targets=*.mlp.*|embed").targets == "*.mlp.*|embed"


def _copy(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_bad_backbone_folders_are_refused_in_one_line(backbone_dir, tmp_path):
    cases = {}
    cases["does not exist"] = tmp_path / "missing"
    cases["lacks data.json"] = _copy(backbone_dir, tmp_path / "incomplete")
    (cases["lacks data.json"] / "data.json").unlink()
    corrupt = _copy(backbone_dir, tmp_path / "corrupt")
    (corrupt / "backbone.pt").write_bytes((backbone_dir / "backbone.pt").read_bytes()[:500])
    cases["damaged"] = corrupt
    mismatched = _copy(backbone_dir, tmp_path / "mismatched")
    info = json.loads((mismatched / "config.json").read_text())
    info["backbone"]["d_model"] = 16
    (mismatched / "config.json").write_text(json.dumps(info))
    cases["files disagree"] = mismatched
    other = _copy(backbone_dir, tmp_path / "other")
    obj = torch.load(io.BytesIO(read_bytes(other / "backbone.pt", "backbone")), weights_only=True)
    obj["config"]["input_dim"] = 3
    write(obj, other / "backbone.pt")  # signed again: the architecture check, not the checksum, must refuse it
    cases["another architecture"] = other
    for field, change in [("sha256", lambda o: o.pop("sha256")), ("config", lambda o: o.__setitem__("config", [1])),
                          ("state", lambda o: o["state"].__setitem__("head.weight", "not a tensor"))]:
        broken = _copy(backbone_dir, tmp_path / f"broken-{field}")
        obj = torch.load(io.BytesIO(read_bytes(broken / "backbone.pt", "backbone")), weights_only=True)
        change(obj)
        write(obj, broken / "backbone.pt")  # signed again: only its structure is wrong
        cases[f"field '{field}'"] = broken
    for match, folder in cases.items():
        with pytest.raises(BackboneError, match=match) as error:
            Backbone.load(folder)
        assert "\n" not in str(error.value)


def test_command_line_fits_adapters_and_refuses_bad_input(backbone_dir, tmp_path, capsys):
    before = folder_digest(backbone_dir)
    out = tmp_path / "run"
    assert main(["fit", "--dataset", "ItalyPowerDemand", "--backbone", str(backbone_dir), "--adapter",
                 "lora:rank=2,alpha=4", "--guide", "mean_field", "--steps", "3", "--num-samples", "3",
                 "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["config"]["model"]["adapter"].startswith("lora:rank=2")
    assert folder_digest(backbone_dir) == before
    for argv, match in [(["--backbone", str(tmp_path / "nope")], "does not exist"),
                        (["--backbone", str(backbone_dir), "--adapter", "lora:rank=0"], "rank must be"),
                        (["--backbone", str(backbone_dir), "--d-model", "64"], "d_model=64 does not match"),
                        (["--backbone", str(backbone_dir), "--dataset", "GunPoint"], "pretrained on GunPoint")]:
        capsys.readouterr()
        argv = ["fit", "--dataset", "ItalyPowerDemand", *argv] if "--dataset" not in argv else ["fit", *argv]
        assert main([*argv, "--steps", "1", "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1


def test_pretrain_refuses_an_existing_backbone_and_unknown_exclusions(backbone_dir, tmp_path):
    with pytest.raises(BackboneError, match="already holds a backbone"):
        pretrain(backbone_dir, ["ItalyPowerDemand"], only=["Lynx"], progress=False, **TINY)
    with pytest.raises(ValueError, match="--exclude 'ItalyPowerDemnad' matches no dataset"):
        pretrain(tmp_path / "x", ["ItalyPowerDemnad"], progress=False, **TINY)


def test_cached_backbone_is_pretrained_once_and_serves_study_rows(tmp_path, ipd):
    from zoo import recipes
    from zoo.pretrain import adapter_model, cached_backbone

    first = cached_backbone("ItalyPowerDemand", tmp_path, progress=False, only=["Lynx"], **TINY)
    stamp = (tmp_path / first.path / "backbone.pt").stat().st_mtime_ns
    again = cached_backbone("ItalyPowerDemand", tmp_path, progress=False, only=["Lynx"], **TINY)
    assert again.path == first.path and (tmp_path / again.path / "backbone.pt").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.path.split("/")[-1]]  # no scratch folder left
    row = next(r for r in recipes.LORA_STUDY if r["guide"] == "blob")
    model = adapter_model(row, ipd, backbone=again)
    assert model.adapter.rank == 4 and all(n.startswith("lora.") for n in model.sites)


def test_flipout_gives_each_example_the_draws_moments_and_decorrelates_examples():
    from torch.nn.functional import linear

    from zoo.models.lora import flipped

    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2, 3, generator=g, dtype=torch.float64)
    sigma = torch.tensor([[0.5, 1.0, 2.0], [1.5, 0.2, 0.7]], dtype=torch.float64)
    h = torch.tensor([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5], [0.3, 0.8, -1.1]], dtype=torch.float64)[:, None]  # 3 rows
    torch.manual_seed(0)
    draws = 20000
    flip, shared, channels = [], [], []
    for _ in range(draws):
        a = mean + sigma * torch.randn(2, 3, dtype=torch.float64)
        flip.append((flipped(h, a, mean, 3) - linear(h, mean))[:, 0])
        shared.append((linear(h, a) - linear(h, mean))[:, 0])
        channels.append((flipped(h[[0, 0, 0, 0]], a, mean, 2) - linear(h[[0, 0, 0, 0]], mean))[:, 0])  # 2 x 2
    flip, shared, channels = (torch.stack(v) for v in (flip, shared, channels))  # [draws, rows, rank]
    var = (sigma ** 2 * h[:, 0, None, :] ** 2).sum(-1)  # closed form: sum_j sigma_kj^2 h_nj^2, [rows, rank]
    assert ((flip.mean(0)).abs() < 5 * (var / draws).sqrt()).all()
    assert ((flip.var(0) - var).abs() < 5 * var * math.sqrt(2 / (draws - 1))).all()  # the deviation is Gaussian

    def corr(d, i=0, j=1):  # per rank component, between rows i and j
        d = d - d.mean(0)
        return (d[:, i] * d[:, j]).mean(0) / ((d[:, i] ** 2).mean(0) * (d[:, j] ** 2).mean(0)).sqrt()
    assert (corr(flip).abs() < 5 / math.sqrt(draws)).all()  # rows 0 and 1 hold the same input
    assert torch.allclose(corr(shared), torch.ones(2, dtype=torch.float64))  # without flipout: one shared draw
    # two examples of two channels each (rows: example 0's channels, then example 1's), all the same input
    assert torch.allclose(corr(channels), torch.ones(2, dtype=torch.float64))  # an example's channels share signs
    assert (corr(channels, 1, 2).abs() < 5 / math.sqrt(draws)).all()


def test_flipout_context_sets_and_restores_the_modules(backbone_dir, ipd):
    from zoo.models.lora import flipout

    model = LoRAClassifier.for_dataset(ipd, backbone_dir, bayes="adapters")
    guide = BLoB(model, ipd.train.x[:2], ipd.train.y[:2], None)
    module = model.net.get_submodule("lora.blocks.0.attn.q")
    with flipout(model.net, guide.means(), 4):
        assert module.flipout[1] == 4 and module.flipout[0] is guide.means()["lora.blocks.0.attn.q.A.weight"]
    assert module.flipout is None


def test_blob_kl_weights_are_the_reference_reweighting():
    from inference.blob import kl_cycle, reweighting

    assert [reweighting(t, 3) for t in range(6)] == pytest.approx([2 / 15, 4 / 15, 8 / 15] * 2, rel=1e-12)
    assert reweighting(0, 1) == pytest.approx(2 / 3)
    assert sum(reweighting(t, 7) for t in range(7)) == pytest.approx(1 - 1 / 255, rel=1e-12)
    assert kl_cycle(67, 67) == 7  # int(100 * 67 ** (pi / 8) / 67) = int(7.78)
    assert kl_cycle(1000, 10) == 150 and kl_cycle(10, 1000) == 1


def test_fit_blob_without_flipout_and_with_elbo_weight_is_the_svi_fit(backbone_dir, ipd):
    import pyro

    from inference.svi import svi
    from inference.blob import fit_blob

    x, y = ipd.train.x, ipd.train.y
    torch.manual_seed(1)
    model = LoRAClassifier.for_dataset(ipd, backbone_dir, bayes="adapters")
    twin = copy.deepcopy(model)
    pyro.set_rng_seed(0)
    posterior = fit_blob(model, (x, y, None), steps=4, batch_size=20, flipout=False, kl_weighting="elbo",
                         prior_scale=None, progress=False)
    pyro.set_rng_seed(0)
    guide = BLoB(twin, x[:2], y[:2], None)
    svi(twin, guide, x, y, None, 4, 1e-2, 20, 1, 0, 1.0, None, 0, False, "blob")
    for name, value in posterior.guide.state_dict().items():
        assert torch.equal(value, guide.state_dict()[name]), name
    assert torch.equal(model.net.head.weight, twin.net.head.weight)
    pyro.set_rng_seed(0)
    flipped = fit_blob(copy.deepcopy(twin), (x, y, None), steps=4, batch_size=20, kl_weighting="elbo",
                       prior_scale=None, progress=False)
    assert not torch.equal(flipped.guide.loc["lora__blocks__0__attn__q__B__weight"],
                           posterior.guide.loc["lora__blocks__0__attn__q__B__weight"])


def test_fit_blob_saves_and_loads_and_refuses_bad_options(backbone_dir, ipd, tmp_path):
    from inference import FitError
    from inference.blob import fit_blob

    data_ = (ipd.train.x, ipd.train.y, None)
    for options in ({}, {"kl_lr": 0.01}):
        model = LoRAClassifier.for_dataset(ipd, backbone_dir, bayes="adapters")
        posterior = fit_blob(model, data_, steps=3, progress=False, **options)
        loaded = Posterior.load(posterior.save(tmp_path / "blob.pt"))
        assert isinstance(loaded.guide, BLoB)  # saved as the guide itself, not as draws
        draws = posterior.sample(5)
        x = ipd.test.x[:6]
        assert torch.allclose(posterior.predict(x, 5, draws=draws), loaded.predict(x, 5, draws=draws), atol=1e-6)
        assert posterior.info["blob"]["kl_cycle"] == 7
    for options, match in [({"kl_weighting": "tempered"}, "kl_weighting"), ({"kl_lr": -1.0}, "kl_lr"),
                           ({"prior_scale": 0.0}, "prior_scale")]:
        with pytest.raises(FitError, match=match):
            fit_blob(LoRAClassifier.for_dataset(ipd, backbone_dir, bayes="adapters"), data_, steps=1,
                     progress=False, **options)
