"""Shared test data: a padded batch of two series and the same two unpadded."""
import torch


def padded_batch():
    """Two sequences of lengths 7 and 4 padded to 7, and the same two alone."""
    torch.manual_seed(1)
    x = torch.randn(2, 7, 3)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    x[1, 4:] = 100.0  # padding values must not matter
    return x, mask, [(x[:1], mask[:1]), (x[1:, :4], mask[1:, :4])]
