"""Near out-of-distribution inputs by a held-out class: train without one class, score its test series as OOD.

``held_out(dataset)`` returns the dataset less its last class (``classes[-1]``) in both splits, labels
renumbered 0..K-2, with that class's test series as its OOD set (``Dataset.ood``). Those series come from
the same sensor, length and preprocessing as the data, so only what the class looks like sets them apart:
the protocol a user of torch-uncertainty's UCR/UEA data module knows. A dataset needs at least 3 classes,
so that 2 remain to classify. ``ref`` and ``parse`` give it a name a study can carry: ``"ArrowHead:held-out"``.
"""
from dataclasses import replace

from core.checks import DataError

from .shipped import Split

SUFFIX = ":held-out"


def held_out(dataset):
    """``dataset`` without its last class, whose test series become ``ood`` (a DataError below 3 classes)."""
    k = dataset.num_classes
    if k < 3:
        raise DataError(f"'{dataset.name}' has {k} classes; holding one out as near-OOD needs at least 3")

    def keep(split, wanted):
        index = (split.y != k - 1) if wanted else (split.y == k - 1)
        return Split(split.x[index], split.y[index], None if split.mask is None else split.mask[index])

    held = keep(dataset.test, False)
    return replace(dataset, name=dataset.name + SUFFIX, train=keep(dataset.train, True),
                   test=keep(dataset.test, True), num_classes=k - 1, classes=dataset.classes[:-1],
                   ood=(held.x, held.mask))


def parse(ref):
    """``"Name:held-out"`` -> ("Name", True); any other reference -> (ref, False)."""
    text = str(ref)
    if text.lower().endswith(SUFFIX):
        return text[: -len(SUFFIX)], True
    return text, False
