"""The zoo's network on another array library, generated from the torch network itself.

``port(net, x)`` exports ``net(x, params=p)`` with ``torch.export`` (core ATen operators) and returns a pure
function ``params -> logits`` that replays the graph with an array namespace: ``numpy`` (the tests hold it against
torch) or ``jax.numpy`` (NumPyro's NUTS in ``benchmarks/nuts.py`` differentiates and compiles it). Nothing is
written twice: a change to ``Block.forward`` reaches the port on its next export, and an operator the table below
lacks is a one-line error naming it.
"""
import functools
import math
import operator

import numpy as np
import torch


class PortError(ValueError):
    """The network uses an operator the port cannot replay."""


def _split(xp, x, sizes, dim=0):
    return xp.split(x, np.cumsum(sizes)[:-1].tolist(), axis=dim)


def _layer_norm(xp, x, shape, weight, bias, eps):
    axes = tuple(range(-len(shape), 0))
    mean = x.mean(axes, keepdims=True)
    rstd = 1 / xp.sqrt(((x - mean) ** 2).mean(axes, keepdims=True) + eps)
    return (x - mean) * rstd * weight + bias, mean, rstd


def _softmax(xp, x, dim, half_to_float=False):
    e = xp.exp(x - x.max(dim, keepdims=True))
    return e / e.sum(dim, keepdims=True)


def _gelu(xp, x, approximate="none", erf=None):
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _slice(xp, x, dim=0, start=None, end=None, step=1):
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, min(end, x.shape[dim]) if end is not None else None, step)
    return x[tuple(index)]


def _expand(xp, x, shape):
    shape = [x.shape[i - len(shape) + x.ndim] if s == -1 else s for i, s in enumerate(shape)]
    return xp.broadcast_to(x, shape)


def _mean(xp, x, dims=None, keepdim=False, dtype=None):
    return x.mean(tuple(dims) if dims is not None else None, keepdims=keepdim)


def _any(xp, x, dim=None, keepdim=False):
    return xp.any(x, axis=dim, keepdims=keepdim)


def _full_like(xp, x, value, **_):
    return xp.full_like(x, value)


INPUT = "<inputs>"  # the exported call's first argument, named apart from every weight
aten = torch.ops.aten
OPS = {  # ATen operator -> f(xp, *args, **kwargs) on arrays of the namespace xp
    aten.view.default: lambda xp, x, shape: xp.reshape(x, shape),
    aten._unsafe_view.default: lambda xp, x, shape: xp.reshape(x, shape),
    aten.permute.default: lambda xp, x, dims: xp.transpose(x, dims),
    aten.expand.default: _expand,
    aten.clone.default: lambda xp, x, **_: x,
    aten.alias.default: lambda xp, x: x,
    aten.addmm.default: lambda xp, bias, a, b: bias + a @ b,
    aten.mm.default: lambda xp, a, b: a @ b,
    aten.bmm.default: lambda xp, a, b: a @ b,
    aten.add.Tensor: lambda xp, a, b, alpha=1: a + alpha * b,
    aten.sub.Tensor: lambda xp, a, b, alpha=1: a - alpha * b,
    aten.mul.Tensor: lambda xp, a, b: a * b,
    aten.mul.Scalar: lambda xp, a, b: a * b,
    aten.div.Tensor: lambda xp, a, b: a / b,
    aten.div.Scalar: lambda xp, a, b: a / b,
    aten.native_layer_norm.default: _layer_norm,
    aten._softmax.default: _softmax,
    aten.gelu.default: _gelu,
    aten.split_with_sizes.default: _split,
    aten.slice.Tensor: _slice,
    aten.mean.dim: _mean,
    aten.sum.dim_IntList: lambda xp, x, dims, keepdim=False, dtype=None: x.sum(tuple(dims), keepdims=keepdim),
    aten.eq.Scalar: lambda xp, a, b: a == b,
    aten.logical_not.default: lambda xp, a: xp.logical_not(a),
    aten.any.dim: _any,
    aten.full_like.default: _full_like,
    aten.where.self: lambda xp, c, a, b: xp.where(c, a, b),
    aten.embedding.default: lambda xp, w, ids, *_: xp.take(w, ids, axis=0),
    aten.unsqueeze.default: lambda xp, x, dim: xp.expand_dims(x, dim),
    aten.squeeze.dim: lambda xp, x, dim: xp.squeeze(x, dim) if x.shape[dim] == 1 else x,
    aten.t.default: lambda xp, x: x.T,
    operator.getitem: lambda xp, seq, i: seq[i],
}


def export(net, x):
    """``net(x, params=p)``'s core-ATen graph, with ``p`` every weight of the network, and its inputs' names."""
    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x, params):
            return self.net(x, params=params)

    params = {name: w.detach() for name, w in net.weights().items()}
    with torch.no_grad():
        program = torch.export.export(Call(), (x, params)).run_decompositions()
    missing = sorted({str(n.target) for n in program.graph.nodes if n.op == "call_function"} -
                     {str(op) for op in OPS})
    if missing:
        raise PortError(f"the array port has no rule for operator {missing[0]} (add it to benchmarks.array_port.OPS)")
    return program


def port(net, x, xp=np, erf=None):
    """``forward(params) -> logits`` on inputs ``x`` (a torch tensor) in namespace ``xp``.

    ``params`` maps every weight name of ``net.weights()`` to an array; ``erf`` is the namespace's error function
    (SciPy's for NumPy, ``jax.scipy.special.erf`` for JAX), which exact GELU needs.
    """
    if erf is None:
        from scipy.special import erf
    rules = {**OPS, aten.gelu.default: functools.partial(_gelu, erf=erf)}
    program = export(net, x)
    signature = program.graph_signature
    user = {spec.arg.name: spec for spec in signature.input_specs}
    constants = {**program.state_dict, **program.constants}
    inputs = xp.asarray(x.numpy())
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user_inputs = [n for n in placeholders if user[n.name].kind.name == "USER_INPUT"]
    leaves = torch.utils._pytree.tree_flatten((INPUT, {name: name for name in net.weights()}))[0]  # export's order

    def forward(params):
        env = {}
        for node in placeholders:
            spec = user[node.name]
            if node in user_inputs:
                leaf = leaves[user_inputs.index(node)]
                env[node] = inputs if leaf == INPUT else params[leaf]
            else:  # the module's own parameters and buffers (the sinusoidal positions)
                env[node] = xp.asarray(constants[spec.target].detach().numpy())
        for node in program.graph.nodes:
            if node.op == "call_function":
                args = torch.fx.node.map_arg(node.args, env.__getitem__)
                kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
                env[node] = rules[node.target](xp, *args, **kwargs)
            elif node.op == "output":
                return env[node.args[0][0]]

    return forward
