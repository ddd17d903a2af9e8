"""Padding changes no prediction, for every attention form, with and without patches.

``FORMS`` lists every way the zoo attends and predicts: a name -> (model options, predict).
A new attention form (GP attention, ...) joins by adding a row; every test here then covers it.
"""
import pyro
import pytest
import torch
from pyro import poutine

import inference
from zoo import TransformerClassifier

pytestmark = pytest.mark.usefixtures("one_thread")
LENGTHS = [7, 3, 5]
DRAWS = 4


def point(model, x, mask):
    return model.net(x, mask).softmax(-1)[None]


def attention_mean(guide_name):
    """Posterior-mean attention rows: deterministic, so a batch must equal each sequence alone."""
    def predict(model, x, mask):
        guide = inference.GUIDES[guide_name](model, x[:2], None, None if mask is None else mask[:2])
        trace = poutine.trace(guide.local(model, mean=True)).get_trace(x, None, mask)
        return trace.nodes["_RETURN"]["value"].softmax(-1)[None]
    return predict


def attention_draws(guide_name):
    def predict(model, x, mask):
        guide = inference.GUIDES[guide_name](model, x[:2], None, None if mask is None else mask[:2])
        pyro.set_rng_seed(0)
        return inference.Posterior(model, guide_name, guide=guide).predict(x, DRAWS, mask)
    return predict


def dropout_draws(model, x, mask):
    posterior = inference.fit(model, (x, torch.zeros(len(x), dtype=torch.long), mask), guide="mc_dropout", steps=0,
                              num_samples=DRAWS, progress=False)
    torch.manual_seed(0)
    return posterior.predict(x, mask=mask)


FORMS = {  # name -> (TransformerClassifier options, predict(model, x, mask) -> probs [S, N, K], deterministic?)
    "softmax": ({"bayes": "none"}, point, True),
    "dirichlet mean": ({"bayes": "attention"}, attention_mean("dirichlet"), True),
    "dirichlet draws": ({"bayes": "attention"}, attention_draws("dirichlet"), False),
    "bam mean": ({"bayes": "bam"}, attention_mean("bam"), True),
    "bam draws": ({"bayes": "bam"}, attention_draws("bam"), False),
    "mc dropout": ({"bayes": "none", "dropout": 0.3}, dropout_draws, False),
    "cgpt mean": ({"bayes": "cgpt"}, attention_mean("cgpt"), True),
    "cgpt draws": ({"bayes": "cgpt"}, attention_draws("cgpt"), False),
    "cgpt-sparse mean": ({"bayes": "cgpt-sparse", "attention_prior": "cgpt-sparse:inducing=2"},  # docs/cgpt.md
                         attention_mean("cgpt-sparse"), True),
    "cgpt-sparse draws": ({"bayes": "cgpt-sparse"}, attention_draws("cgpt-sparse"), False),
}


def model_for(form, patch):
    torch.manual_seed(0)
    return TransformerClassifier(3, input_dim=2, d_model=8, depth=2, heads=2, max_len=16, patch=patch,
                                 **FORMS[form][0])


def batch():
    torch.manual_seed(1)
    x = torch.randn(len(LENGTHS), max(LENGTHS), 2)
    mask = torch.arange(max(LENGTHS)) < torch.tensor(LENGTHS)[:, None]
    return x.masked_fill(~mask[..., None], 0.0), mask


@pytest.mark.parametrize("patch", [1, 3])
@pytest.mark.parametrize("form", list(FORMS))
def test_what_the_padding_holds_changes_no_prediction(form, patch):
    x, mask = batch()
    predict = FORMS[form][1]
    with torch.no_grad():
        clean = predict(model_for(form, patch), x, mask)
        noisy = predict(model_for(form, patch), x.masked_fill(~mask[..., None], 1e3), mask)
    assert clean.shape == (DRAWS if not FORMS[form][2] else 1, len(LENGTHS), 3)
    assert torch.allclose(clean, noisy, atol=1e-5)
    if not FORMS[form][2]:
        assert clean.std(0).max() > 1e-4  # the draws do differ: the comparison above is not between constants


@pytest.mark.parametrize("patch", [1, 3])
@pytest.mark.parametrize("form", [f for f, (_, _, deterministic) in FORMS.items() if deterministic])
def test_a_padded_batch_predicts_each_sequence_as_it_would_alone(form, patch):
    x, mask = batch()
    model, predict = model_for(form, patch), FORMS[form][1]
    with torch.no_grad():
        batched = predict(model, x, mask)
        longer = predict(model, torch.cat([x, torch.zeros(3, 4, 2)], 1),
                         torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], 1))
        alone = torch.cat([predict(model, x[i:i + 1, :t], None) for i, t in enumerate(LENGTHS)], 1)
    assert torch.allclose(batched, alone, atol=1e-5) and torch.allclose(longer, batched, atol=1e-5)
