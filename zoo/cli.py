"""``bzoo``: the command line. Each subcommand lives in ``zoo/commands/<name>.py``; its flags are declared in
``zoo/options.py``.

``COMMANDS`` lists the verbs and their one-line help; ``zoo.options.VERBS`` gives each verb's schema, from which
its flags are built and against which the parsed values are checked before the verb runs. The module of a verb
(``prior-check`` -> ``zoo.commands.prior_check``) defines ``run(args) -> int``. Only the module of the verb given
is imported, and command modules import the library inside ``run``, so ``bzoo --help`` and ``bzoo VERB --help``
answer at once, without torch. A new verb is a line here, a schema there and a module.

User errors (``UserError``, the library's ValueError subclasses, files that cannot be read or written) print one
line and exit 2, a diverged fit (NonFiniteError) exits 1; warnings are one line too; ``--debug`` shows the traceback.
"""
import argparse
import importlib
import sys
import warnings

from zoo import options

COMMANDS = {
    "study": "compare where uncertainty lives, priors, guides and peers over datasets x seeds (resumable, parallel "
             "on Dask); writes results.md",
    "fit": "fit a Bayesian transformer and write metrics.json, posterior.pt, posterior.nc and plots",
    "prior-check": "prior predictive check: logit scale, predictive entropy and degenerate functions per prior",
    "diagnose": "diagnose a fitted run: R-hat/ESS, PSIS-LOO with Pareto k, calibration, plots",
    "datasets": "list the shipped datasets with train/test sizes, classes, channels and length (no download needed)",
    "bench": "benchmarks: speed (vs plain PyTorch), nuts (function-space mixing, vs NumPyro), reference (many "
             "chains from an ensemble: nested R-hat, ESS, agreement of two runs), memory, lora (vs full-weight MAP)",
    "pretrain": "pretrain a backbone transformer (masked-patch reconstruction) on every shipped series but --exclude's",
}


class UserError(ValueError):
    """A problem with what the user asked for; printed as one line."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (the usage is one ``--help`` away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


HELP_VALUES = {  # placeholders in help texts (zoo.options mirrors the registries, so help needs no torch)
    "{where}": lambda: ", ".join(options.WHERE),
    "{max_tokens}": lambda: str(options.MAX_TOKENS),
    "{guides}": lambda: ", ".join(options.GUIDE_NAMES),
}


class HelpFormatter(argparse.HelpFormatter):
    """Every flag's help ends with its default (a help that names its default is left as it is);
    ``HELP_VALUES`` placeholders are filled in."""

    def _get_help_string(self, action):
        text = action.help or ""
        for key, value in HELP_VALUES.items():
            if key in text:
                text = text.replace(key, value())
        if not action.option_strings or "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # a store_true is off by default, as is a store_false (--no-peers)
            return text + (" (default: off)" if action.default != action.const else " (default: on)")
        return text + " (default: %(default)s)" if action.default is not None else text


def command(verb):
    """The module that implements ``verb``."""
    return importlib.import_module(f"zoo.commands.{verb.replace('-', '_')}")


def build_parser(verbs=None):
    """The ``bzoo`` parser, with the flags of ``verbs`` (default: every verb, which imports every command)."""
    parser = Parser(prog="bzoo", description="Bayesian transformers: priors, guides, diagnostics.",
                    formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for verb, about in COMMANDS.items():
        p = sub.add_parser(verb, help=about, description=about, formatter_class=HelpFormatter)
        if verbs is None or verb in verbs:
            options.VERBS[verb].add_arguments(p)
            p.set_defaults(run=command(verb).run)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    verb = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser([verb] if verb in COMMANDS else []).parse_args(argv)
    plain = warnings.formatwarning
    if not args.debug:  # a warning reads like an error: one line naming the verb, without a source line
        warnings.formatwarning = lambda message, *_, **__: f"bzoo {args.command}: warning: {first_line(message)}\n"
    try:
        check(args)
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("bzoo: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # the library's errors are ValueErrors; files that cannot be read or written
        if args.debug:
            raise
        print(f"bzoo {args.command}: error: {first_line(e)}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # inference.NonFiniteError: the fit diverged; it names the step and site
        if args.debug:
            raise
        print(f"bzoo {args.command}: fit stopped: {first_line(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        if args.debug:
            raise
        print(f"bzoo {args.command}: error: out of memory (try fewer --num-samples, a smaller model or "
              f"--batch-size)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = plain


def check(args):
    """The parsed flags against the verb's schema (ranges, required values, rules across flags), before any work."""
    schema = options.VERBS[args.command]
    schema.check({name: getattr(args, name) for name in schema.names()}, UserError, lambda name: spelling(schema, name))


def spelling(schema, name):
    """How the command line names an option: its flag, or an argument's metavar (``RUN_DIR``)."""
    option = schema[name]
    return (option.metavar or name.upper()) if option.cli == "positional" else option.spelling


def warn(args, message):
    """A one-line warning from a command."""
    print(f"bzoo {args.command}: warning: {message}", file=sys.stderr)


def first_line(error):
    """The message's first line: Pyro appends a table of trace shapes to errors raised inside a model."""
    lines = str(error).strip().splitlines()
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.strerror}: '{error.filename}'"
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
