"""bzoo datasets: list the datasets that ship inside installed packages."""


def add_arguments(parser):
    pass


def run(args):
    from zoo import data

    for name, about in data.available().items():
        default = "  (default)" if name == data.DEFAULT_DATASET else ""
        print(f"{name:18s} {about}{default}")
    return 0
