"""bzoo bench: run a benchmark that prints ratios against peers measured in the same run."""
import importlib

BENCHMARKS = {"speed": "benchmarks.speed", "nuts": "benchmarks.nuts", "reference": "benchmarks.reference",
              "memory": "benchmarks.memory", "lora": "benchmarks.lora"}  # zoo.options.BENCHMARKS names them


def run(args):
    return importlib.import_module(BENCHMARKS[args.which]).main(args.options) or 0
