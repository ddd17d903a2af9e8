"""The peers a researcher would otherwise use, run on the same split: plain PyTorch and MiniRocket."""
import time

import torch


def plain_pytorch(dataset, model_options, seed, steps, lr, device):
    """The peer: the identical architecture trained with Adam and cross-entropy, no prior."""
    from ..models.plain import PlainTransformer, train_step

    torch.manual_seed(seed)
    net = PlainTransformer(dataset.input_dim, dataset.num_classes, **model_options).to(device)
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(net, optim, x, y)
    seconds = time.perf_counter() - started
    net.eval()
    with torch.no_grad():
        probs = net(dataset.test.x.to(device), None if dataset.test.mask is None else dataset.test.mask.to(device))
    return probs.softmax(-1)[None].cpu(), seconds


def minirocket(dataset, seed):
    """aeon's MiniRocket accuracy on the same split (the accuracy peer for UCR data)."""
    from aeon.classification.convolution_based import MiniRocketClassifier

    if dataset.tokens or dataset.train.mask is not None:
        return None
    clf = MiniRocketClassifier(random_state=seed)
    started = time.perf_counter()
    clf.fit(dataset.train.x.numpy().transpose(0, 2, 1).astype("float64"), dataset.train.y.numpy())
    seconds = time.perf_counter() - started
    proba = clf.predict_proba(dataset.test.x.numpy().transpose(0, 2, 1).astype("float64"))
    return torch.as_tensor(proba, dtype=torch.float32)[None], seconds
