"""The array port (benchmarks/array_port.py) replays the torch network on NumPy: the same logits, every input kind."""
import numpy as np
import pytest
import torch

from benchmarks import array_port
from benchmarks.array_port import PortError, port
from zoo.models.transformer import Transformer, TransformerConfig

CONFIGS = {
    "series, two blocks": dict(input_dim=1, d_model=16, depth=2, heads=2),
    "multichannel, patched": dict(input_dim=3, d_model=8, depth=1, heads=2, patch=4),
    "tokens": dict(vocab_size=7, d_model=8, depth=2, heads=4),
}


def network_and_inputs(config):
    torch.manual_seed(0)
    net = Transformer(TransformerConfig(num_classes=3, max_len=24, **config)).eval()
    x = torch.randint(0, 7, (5, 24)) if "vocab_size" in config else torch.randn(5, 24, config["input_dim"])
    params = {name: w.detach() + 0.3 * torch.randn_like(w) for name, w in net.weights().items()}
    return net, x, params


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_the_numpy_port_computes_the_torch_networks_logits(config):
    """Weights other than the network's own (perturbed draws) reach every layer: a rule wrong anywhere shows."""
    net, x, params = network_and_inputs(config)
    logits = port(net, x)({name: w.double().numpy() for name, w in params.items()})
    expected = net(x, params=params).detach().numpy()
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_the_port_follows_the_weights_it_is_given():
    net, x, params = network_and_inputs(CONFIGS["series, two blocks"])
    forward = port(net, x)
    arrays = {name: w.double().numpy() for name, w in params.items()}
    moved = dict(arrays, **{"head.bias": arrays["head.bias"] + np.array([1.0, 0.0, -1.0])})
    assert np.allclose(forward(moved) - forward(arrays), [1.0, 0.0, -1.0])


def test_an_operator_without_a_rule_is_named_in_one_line(monkeypatch):
    net, x, _ = network_and_inputs(CONFIGS["series, two blocks"])
    monkeypatch.delitem(array_port.OPS, torch.ops.aten.gelu.default)
    with pytest.raises(PortError, match=r"^the array port has no rule for operator aten.gelu.default"):
        port(net, x)
