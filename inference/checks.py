"""Checks on the tensors a fit or prediction is given, before any work starts."""
import torch


class DataError(ValueError):
    """A dataset name or data file is invalid; the message names it."""


def check_data(x, y, mask=None, num_classes=None, vocab_size=None, source="data"):
    """Refuse tensors a classifier cannot fit, naming the problem: lengths, NaN/inf, label range, tokens."""
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{source}: x has {x.shape[0]} examples but y has {y.shape[0]}")
    if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
        raise DataError(f"{source}: mask has shape {list(mask.shape)}, expected [N, T] = {list(x.shape[:2])}")
    if x.is_floating_point():
        bad = ~torch.isfinite(x)
        if bad.any():
            first = bad.nonzero()[0].tolist()
            raise DataError(f"{source}: x holds {int(bad.sum())} NaN or infinite values (first at index {first})")
    elif vocab_size is not None and x.numel() and (x.min() < 0 or x.max() >= vocab_size):
        raise DataError(f"{source}: token ids must be in 0..{vocab_size - 1}, found {int(x.min())}..{int(x.max())}")
    if num_classes is not None:
        if y.is_floating_point() or y.dtype == torch.bool or y.is_complex():
            raise DataError(f"{source}: labels must be integers 0..{num_classes - 1}, got dtype {y.dtype}")
        out = (y < 0) | (y >= num_classes)
        if out.any():
            i = int(out.nonzero()[0])
            raise DataError(f"{source}: label {int(y[i])} at example {i} is outside 0..{num_classes - 1} "
                            f"(the model has num_classes={num_classes})")
