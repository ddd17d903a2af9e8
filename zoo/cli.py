"""``bzoo``: the command line. Each subcommand lives in ``zoo/commands/<name>.py``.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. User errors (``UserError`` and the library's ValueError
subclasses) print one line and exit 2, a diverged fit (NonFiniteError) exits 1;
``--debug`` shows the traceback.
"""
import argparse
import importlib
import sys

COMMANDS = ["study", "fit", "prior_check", "diagnose", "datasets", "bench", "pretrain"]


class UserError(Exception):
    """A problem with what the user asked for; printed as one line."""


def _load(name):
    try:
        return importlib.import_module(f"zoo.commands.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"zoo.commands.{name}":
            return None
        raise


def build_parser():
    parser = argparse.ArgumentParser(prog="bzoo", description="Bayesian transformers: priors, guides, diagnostics.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = _load(name)
        if module is None:
            continue
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("bzoo: interrupted", file=sys.stderr)
        return 130
    except (UserError, ValueError, FileNotFoundError, FileExistsError) as e:
        if args.debug:
            raise
        print(f"bzoo {args.command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # inference.NonFiniteError: the fit diverged; it names the step and site
        if args.debug:
            raise
        print(f"bzoo {args.command}: fit stopped: {first_line(e)}", file=sys.stderr)
        return 1


def first_line(error):
    """The message's first line: Pyro appends a table of trace shapes to errors raised inside a model."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
