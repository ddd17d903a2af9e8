"""docs/attention-collapse.md is what its JSON gives, and the benchmark behind it measures what it says.

The page's generated block must equal ``render`` of ``benchmarks/results/attention_collapse.json``; the
benchmark's training loop must be ``inference.fit``'s (same losses, step for step); its frozen attention must be
uniform, and stay so without any gradient reaching the zeroed query and key rows.
"""
import json

import pytest
import torch

from benchmarks import attention_collapse as ac
from zoo import TransformerClassifier


def tiny_data(n=12, t=6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, t, 1, generator=g)
    return x, (x.mean((1, 2)) > 0).long()


def tiny_model(bayes, seed=0):
    torch.manual_seed(seed)
    return TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, max_len=6, bayes=bayes)


def test_page_is_what_the_json_gives():
    results = json.loads(ac.RESULTS.read_text())
    text = ac.PAGE.read_text()
    assert ac.BEGIN in text and ac.END in text
    block = ac.BEGIN + text.split(ac.BEGIN, 1)[1].split(ac.END, 1)[0] + ac.END
    assert block == ac.render(results), "the page is stale: run `python -m benchmarks.attention_collapse --page-only`"
    for name in results["settings"]["datasets"]:
        figure = ac.FIGURES / ac.figure_name(name)
        assert figure.is_file() and figure.stat().st_size > 1000, f"missing figure {figure}"


@pytest.mark.parametrize("guide, bayes, kl_anneal", [("dirichlet", "attention", 0), ("dirichlet", "attention", 3),
                                                     ("map", "weights", 3)])
def test_training_loop_is_fits_loop(guide, bayes, kl_anneal):
    from inference import fit

    data = tiny_data()
    reference = fit(tiny_model(bayes), data, guide=guide, steps=6, lr=1e-2, kl_anneal=kl_anneal, seed=3,
                    progress=False)
    ours = ac.train(tiny_model(bayes), data, guide, 6, 1e-2, kl_anneal, seed=3)
    assert ours.info["losses"] == pytest.approx(reference.info["losses"], rel=1e-6)


def test_snapshot_reads_the_steps_terms():
    records = []
    ac.train(tiny_model("attention"), tiny_data(), "dirichlet", 3, 1e-2, seed=0,
             record=lambda *a: records.append(ac.snapshot(*a)))
    first = records[0]
    assert [r["step"] for r in records] == [0, 2]
    assert first["attention_numbers"] == 12 * 1 * 2 * 6 * 6 and first["local_kl_scale"] == 1.0
    assert first["concentration_per_token"] == pytest.approx(100 / 6, rel=1e-5)  # init_concentration 100
    assert 0 < first["drawn_row_entropy_ratio"] < first["mean_row_entropy_ratio"] <= 1


def test_frozen_query_and_key_give_uniform_attention_and_stay_zero():
    zeroed = []
    uniform = ac.train(tiny_model("weights"), tiny_data(), "map", 5, 1e-2, 2, seed=0,
                       after_step=lambda guide: zeroed.append(ac.zero_query_key(guide)))
    learned = ac.train(tiny_model("weights"), tiny_data(), "map", 5, 1e-2, 2, seed=0)
    x = tiny_data()[0]
    deviation = max(float((r - 1 / r.shape[-1]).abs().max()) for r in ac.attention_rows(uniform, x))
    assert zeroed[0] > 0 and max(zeroed[1:]) == 0.0  # no gradient reaches q or k while both are zero
    assert deviation < ac.UNIFORM_TOLERANCE
    assert max(float((r - 1 / r.shape[-1]).abs().max()) for r in ac.attention_rows(learned, x)) > 1e-3


def test_milestones_of_a_fit():
    records = [{"step": s, "kl_per_attention_number": v, "mean_row_entropy_ratio": e} for s, v, e in
               zip((0, 10, 20, 30, 40, 50), (0.5, 0.7, 0.8, 9e-4, 5e-4, 6e-4), (0.99, 0.9995, 0.998, 0.9999, 1, 1))]
    assert ac.milestones(records) == {"drift_start": 20, "rises": 0, "intervals": 1, "on_prior_from": 30,
                                      "uniform_from": 30}
    records[2]["kl_per_attention_number"] = 0.6  # now largest at step 10, rising once on the way to the prior
    records[3]["kl_per_attention_number"] = 0.65
    records[4]["kl_per_attention_number"] = 5e-4
    assert ac.milestones(records)["drift_start"] == 10 and ac.milestones(records)["on_prior_from"] == 40
    assert (ac.milestones(records)["rises"], ac.milestones(records)["intervals"]) == (1, 3)
    records[-1]["kl_per_attention_number"] = 2e-3
    assert ac.milestones(records)["on_prior_from"] is None


def test_prior_draw_entropy_closed_form():
    torch.manual_seed(0)
    draws = torch.distributions.Dirichlet(torch.ones(24)).sample((200000,)).double()
    entropy = -(draws * draws.log()).sum(-1)
    standard_error = float(entropy.std()) / len(entropy) ** 0.5
    expected = ac.prior_draw_entropy_ratio(24) * torch.log(torch.tensor(24.0)).item()
    assert abs(float(entropy.mean()) - expected) < 4 * standard_error
