"""The prediction memory budget: chunk plans, identical results under any budget, real peak memory."""
import json
import subprocess
import sys

import pytest
import torch

from core import memory
from core.memory import MemoryBudgetError
from inference import fit
from zoo import TransformerClassifier


def small(**kw):
    torch.manual_seed(0)
    return TransformerClassifier(2, input_dim=1, d_model=8, depth=1, heads=2, max_len=12, **kw)


def test_sizes_parse_and_bad_sizes_are_refused():
    assert memory.parse_size("4G") == 4 << 30 and memory.parse_size("512M") == 512 << 20
    assert memory.parse_size("1.5GiB") == int(1.5 * (1 << 30)) and memory.parse_size("1000") == 1000
    for bad in ("", "lots", "-1G", "0", "4X"):
        with pytest.raises(MemoryBudgetError, match="memory budget"):
            memory.parse_size(bad)


def test_budget_follows_set_budget_then_the_environment(monkeypatch):
    monkeypatch.setenv(memory.ENV, "3M")
    assert memory.budget() == 3 << 20
    with memory.limited("1M"):
        assert memory.budget() == 1 << 20
    assert memory.budget() == 3 << 20
    monkeypatch.delenv(memory.ENV)
    assert 0 < memory.budget() < memory.available()


@pytest.mark.parametrize("limit_pairs", [1, 3, 50, 10 ** 6])
def test_a_plan_fits_its_budget_and_uses_it(limit_pairs):
    model = small(bayes="attention")
    x = torch.randn(40, 12, 1)
    per_pair, per_draw = memory.pair_bytes(model, x), memory.draw_bytes(model)
    limit = limit_pairs * (per_pair + per_draw)
    draws, inputs = memory.plan(model, x, 30, limit)
    assert draws * inputs * per_pair + draws * per_draw <= limit
    assert draws == min(30, limit_pairs) and (inputs == 40 or draws * (inputs + 1) * per_pair + draws * per_draw > limit)


def test_a_pair_larger_than_the_budget_is_refused_with_its_estimate():
    model = small()
    with pytest.raises(MemoryBudgetError, match=r"one posterior draw on one input of length 12 needs about .* budget"):
        memory.plan(model, torch.randn(3, 12, 1), 5, limit=100)


@pytest.mark.parametrize("guide", ["ensemble", "map"])
def test_predictions_do_not_depend_on_the_budget(guide):
    x, y = torch.randn(9, 12, 1), torch.randint(0, 2, (9,))
    post = fit(small(), (x, y), guide=guide, steps=3, progress=False, **({"num_members": 2} if guide == "ensemble" else {}))
    full = post.predict(x)
    with memory.limited(2 * (memory.pair_bytes(post.model, x) + memory.draw_bytes(post.model))):
        assert guide == "map" or memory.plan(post.model, x, 2) == (2, 1)
        chunked = post.predict(x)
    assert torch.allclose(full, chunked, atol=1e-6)


def test_given_draws_are_evaluated_in_chunks_as_one_function_each():
    x, y = torch.randn(7, 12, 1), torch.randint(0, 2, (7,))
    post = fit(small(), (x, y), guide="mean_field", steps=3, progress=False)
    draws = post.sample(6)
    full = post.predict(x, draws=draws)
    with memory.limited(memory.pair_bytes(post.model, x) + memory.draw_bytes(post.model)):
        chunked = post.predict(x, draws=draws)
    assert torch.allclose(full, chunked, atol=1e-6)


PEAK = """
import json, resource, sys, torch
torch.set_num_threads(1)
from core import memory
from inference import fit
from zoo import TransformerClassifier
torch.manual_seed(0)
x, y = torch.randn(30, 150, 1), torch.randint(0, 2, (30,))
model = TransformerClassifier(2, input_dim=1, max_len=150, bayes="attention")
post = fit(model, (x[:4], y[:4]), guide="dirichlet", steps=1, progress=False)
post.predict(x[:2], 2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
with memory.limited(sys.argv[1]):
    probs = post.predict(x, 10)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": after - before, "shape": list(probs.shape)}))
"""


def test_dirichlet_prediction_on_long_series_stays_within_its_budget():
    """10 draws on 30 series of 150 tokens take about 0.8 GiB in one pass (2.7 MB a pair, measured); 128 MiB fits."""
    out = subprocess.run([sys.executable, "-c", PEAK, "128M"], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [10, 30, 2]
    assert result["peak"] <= 128 << 20


def test_the_default_budget_respects_the_address_space_limit():
    code = ("import resource; from core import memory; "
            "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY)); "
            "print(memory.available() <= 6 << 30, memory.budget() <= 3 << 30)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
