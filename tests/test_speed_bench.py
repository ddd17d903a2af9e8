"""bzoo bench speed: figures register, run in interleaved rounds and report medians; unknown names are refused."""
import pytest
import torch

from benchmarks import speed


def test_figures_register_run_interleaved_and_report_medians(monkeypatch, capsys):
    monkeypatch.setattr(speed, "FIGURES", {})
    calls = []
    for name, values in (("a_ratio", [3.0, 1.0, 2.0]), ("b_ratio", [5.0, 4.0, 9.0])):
        speed.figure(name, ("<=", 2.5) if name == "a_ratio" else None, "no target")(
            lambda steps, name=name, values=values: calls.append(name) or values[calls.count(name) - 1])
    assert speed.measure(rounds=3, steps=1, threads=1) == {"a_ratio": 2.0, "b_ratio": 5.0}
    assert calls == ["a_ratio", "b_ratio"] * 3
    with pytest.raises(ValueError, match="unknown figure"):
        speed.measure(rounds=1, steps=1, threads=1, only=["warp_speed"])
    calls.clear()
    speed.main(["--rounds", "3", "--threads", "1", "--only", "a_ratio"])
    assert "a_ratio" in capsys.readouterr().out and calls == ["a_ratio"] * 3


def test_the_issue_targets_are_registered():
    assert speed.FIGURES["dirichlet_step_ratio"].target == ("<=", 1.6)
    assert speed.FIGURES["bam_step_ratio"].target == ("<=", 1.3)
    assert speed.FIGURES["predictive_vectorized_speedup"].target == (">=", 1.5)


@pytest.mark.parametrize("guide, bayes", [("dirichlet", "attention"), ("bam", "bam")])
def test_the_floor_figures_use_each_sites_posterior_mean_not_a_draw(guide, bayes):
    """The *_without_draws figures time the attention step with no sampler at all: every site's value is its
    posterior's mean, and the posterior is still attached for the KL."""
    from pyro import poutine

    x, y = speed._data()
    model = speed._model(bayes)
    built = speed.without_draws(guide)(model, x[:2], y[:2], None)
    trace = poutine.trace(built.local(model)).get_trace(x[:4], y[:4], None)
    sites = [s for s in trace.nodes.values() if s["type"] == "sample" and "attention" in s["infer"]]
    assert len(sites) == speed.WORKLOAD["depth"]
    for site in sites:
        assert torch.equal(site["value"], site["infer"]["posterior"].mean)
