"""bzoo datasets: list the datasets that ship inside installed packages."""
from zoo import data

NAME = "datasets"
HELP = "list the shipped datasets (no download needed)"


def add_arguments(parser):
    pass


def run(args):
    for name, about in data.available().items():
        default = "  (default)" if name == data.DEFAULT_DATASET else ""
        print(f"{name:18s} {about}{default}")
    return 0
