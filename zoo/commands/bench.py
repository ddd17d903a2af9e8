"""bzoo bench: run a benchmark that prints ratios against peers measured in the same run."""
import importlib

BENCHMARKS = {"speed": "benchmarks.speed", "nuts": "benchmarks.nuts", "reference": "benchmarks.reference",
              "memory": "benchmarks.memory", "lora": "benchmarks.lora"}


def add_arguments(parser):
    parser.add_argument("which", choices=list(BENCHMARKS), help="which benchmark")
    parser.add_argument("options", nargs="...", help="options passed to the benchmark (see `bzoo bench NAME -h`)")


def run(args):
    return importlib.import_module(BENCHMARKS[args.which]).main(args.options) or 0
