"""The transformer model: site names, parity with plain PyTorch, masks, vectorized draws."""
import pyro
import pytest
import torch

from zoo.models.plain import PlainTransformer
from zoo import ModelError, TransformerClassifier


def small(**kw):
    torch.manual_seed(0)
    return TransformerClassifier(3, input_dim=2, d_model=16, depth=2, heads=2, **kw)


def test_sites_are_named_after_module_paths_and_shaped_like_parameters():
    model = small()
    params = dict(model.net.named_parameters())
    trace = pyro.poutine.trace(model).get_trace(torch.randn(4, 5, 2))
    latent = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n not in ("data", "y")]
    assert latent == list(model.sites)
    assert "blocks.0.attn.qkv.weight" in latent and "head.bias" in latent
    assert not any(".ln" in n or n.startswith("ln_f") for n in latent)  # layer norms stay point estimates
    for n in latent:
        assert trace.nodes[n]["value"].shape == params[n].shape


def test_bayes_choices_select_sites():
    assert list(small(bayes="last-layer").sites) == ["head.weight", "head.bias"]
    assert small(bayes="none").sites == {}
    assert list(small(bayes="blocks.1.mlp.*").sites) == [f"blocks.1.mlp.{a}.{b}" for a in ("fc", "proj")
                                                          for b in ("weight", "bias")]
    with pytest.raises(ModelError, match="'blocks.7.*'"):
        small(bayes="blocks.7.*")


@pytest.mark.parametrize("patch", [1, 3])
def test_point_network_equals_plain_pytorch_with_same_weights(patch):
    model = small(bayes="none", patch=patch)
    plain = PlainTransformer(2, 3, d_model=16, depth=2, heads=2, patch=patch)
    plain.load_state_dict(model.net.state_dict())
    x = torch.randn(5, 7, 2)
    mask = torch.arange(7) < torch.tensor([7, 3, 5, 1, 6])[:, None]
    assert torch.allclose(model.net(x), plain(x), atol=1e-5)
    assert torch.allclose(model.net(x, mask), plain(x, mask), atol=1e-5)


@pytest.mark.parametrize("patch", [1, 2, 3])
def test_padding_changes_nothing_and_variable_lengths_batch_like_singles(patch):
    model = small(bayes="none", patch=patch)
    lengths = [7, 3, 5]
    x = torch.randn(3, 7, 2)
    mask = torch.arange(7) < torch.tensor(lengths)[:, None]
    batched = model.net(x.masked_fill(~mask[..., None], 123.0), mask)  # garbage in the padding
    for i, t in enumerate(lengths):
        assert torch.allclose(batched[i], model.net(x[i:i + 1, :t])[0], atol=1e-5)


@pytest.mark.parametrize("tokens", [False, True])
def test_vectorized_draws_equal_a_loop_over_draws(tokens):
    torch.manual_seed(1)
    model = TransformerClassifier(3, vocab_size=11 if tokens else None, input_dim=None if tokens else 2,
                                  d_model=16, depth=2, heads=2)
    x = torch.randint(0, 11, (4, 6)) if tokens else torch.randn(4, 6, 2)
    mask = torch.arange(6) < torch.tensor([6, 2, 4, 5])[:, None]
    s = 5
    draws = {n: torch.randn(s, *site.shape) * 0.3 for n, site in model.sites.items()}
    batched = model.net(x, mask, draws)
    assert batched.shape == (s, 4, 3)
    for i in range(s):
        single = model.net(x, mask, {n: v[i] for n, v in draws.items()})
        assert torch.allclose(batched[i], single, atol=1e-5)


def test_patches_cut_long_series_into_at_most_the_default_number_of_tokens():
    from zoo.models import MAX_TOKENS, default_patch
    from zoo.models.layers import patches

    for length in (1, 24, 64, 65, 150, 427, 1460):
        p = default_patch(length)
        tokens, _ = patches(torch.randn(2, length, 3), None, p)
        assert tokens.shape == (2, -(-length // p), 3 * p) and tokens.shape[1] <= MAX_TOKENS
        assert p == 1 or -(-length // (p - 1)) > MAX_TOKENS  # the smallest such patch
    x = torch.arange(10.0).reshape(1, 5, 2)
    tokens, mask = patches(x, torch.tensor([[True, True, True, False, False]]), 2)
    assert tokens.tolist() == [[[0, 1, 2, 3], [4, 5, 0, 0], [0, 0, 0, 0]]] and mask.tolist() == [[True, True, False]]
    long = small(bayes="none", patch=default_patch(300), max_len=300)
    assert long.net(torch.randn(2, 300, 2)).shape == (2, 3)


def test_model_logits_follow_the_particle_plate():
    model = small()
    x = torch.randn(4, 5, 2)
    with pyro.plate("particles", 6, dim=-2):
        trace = pyro.poutine.trace(model).get_trace(x, torch.zeros(4, dtype=torch.long), None, 40)
    y = trace.nodes["y"]
    assert y["fn"].batch_shape == (6, 4)
    assert y["scale"] == 10.0  # 40 data points seen through a batch of 4


def test_bayesian_biases_with_point_weights_broadcast_over_draws():
    model = small(bayes="*.bias")
    x = torch.randn(4, 5, 2)
    draws = {n: torch.randn(3, *site.shape) for n, site in model.sites.items()}
    batched = model.net(x, None, draws)
    for i in range(3):
        assert torch.allclose(batched[i], model.net(x, None, {n: v[i] for n, v in draws.items()}), atol=1e-5)


def test_a_glob_map_of_priors_is_accepted_as_the_model_prior():
    model = small(prior={"head.*": "student-t:df=3", "*": "gaussian:scale=1"})
    assert type(model.priors["head.weight"]).__name__ == "StudentT"
    assert type(model.priors["embed.weight"]).__name__ == "Gaussian"
