"""Tensor helpers every layer uses: where a model lives, its dtype, data as tensors, minibatch indices."""
import torch

from .checks import as_tensor, unpack_data


def model_device(model):
    """Where the model's parameters (or, failing those, buffers) live."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_dtype(model):
    """The floating dtype of the model's parameters (float32 unless the user changed it)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def unpack(data, device=None, dtype=None, source="data"):
    """(x, y) or (x, y, mask) or an object with .x .y .mask -> tensors on ``device``.

    Arrays and lists become tensors; real-valued x takes ``dtype`` (the model's), so
    float64 data from NumPy fits a float32 model. Anything else is a DataError.
    """
    x, y, mask = unpack_data(data, source)
    x = as_tensor(x, "x", source, dtype)
    y = None if y is None else as_tensor(y, "y", source)
    mask = None if mask is None else as_tensor(mask, "mask", source)
    move = (lambda t: t if t is None else t.to(device)) if device is not None else (lambda t: t)
    return move(x), move(y), move(mask)


def minibatches(n, batch_size, steps, generator):
    """Indices for ``steps`` minibatches, each epoch a fresh permutation (full batch when batch_size >= n)."""
    if batch_size is None or batch_size >= n:
        for _ in range(steps):
            yield None
        return
    done = 0
    while done < steps:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            if done == steps:
                return
            yield perm[i:i + batch_size]
            done += 1
