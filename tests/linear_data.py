"""Shared test data: a small linear-regression set with a known generating weight."""
import torch


def regression(n=20, noise=0.5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + noise * torch.randn(n, generator=g)
