"""bzoo datasets: list the datasets that ship inside installed packages, with their sizes and shapes."""


def run(args):
    from zoo import data

    print(f"{'dataset':22s} {'train':>6s} {'test':>6s} {'classes':>7s} {'channels':>8s}  length")
    for name in data.available():
        i = data.info(name)
        lo, hi = i.lengths
        length = f"{hi}" if lo == hi else f"{lo}-{hi} (variable)"
        default = "  (default)" if name == data.DEFAULT_DATASET else ""
        print(f"{name:22s} {i.sizes[0]:6d} {i.sizes[1]:6d} {len(i.classes):7d} {i.channels:8d}  {length}{default}")
    left_out = data.skipped()
    if left_out:
        print(f"not listed (see docs/data.md): {', '.join(left_out)}")
    return 0
