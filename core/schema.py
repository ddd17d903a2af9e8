"""Declared inputs: one table per verb gives both the command line's flags and the Python API's checks.

An ``Option`` says what one input is: its type, range or choices, whether None is allowed, its
default, flag and help. A ``Schema`` is a verb's options with its cross-option rules (``requires``,
``excludes``, ``at_most``). ``Schema.add_arguments(parser)`` makes the argparse flags (text is only
converted there); ``Schema.check(values, error, spell)`` then refuses, before any work, the first
value outside its declaration and the first broken rule, in one line naming the option as the caller
spells it (``steps`` from Python, ``--steps`` from the command line), raised as the caller's own
exception type. A new option inherits every check, and the generated tests, by being declared.
``Fields`` declares the structure of a saved file the same way. Standard library only, so ``bzoo
--help`` imports no torch.
"""
import argparse
import math
import numbers
import os
from dataclasses import dataclass, field, replace

KINDS = ("int", "float", "str", "bool", "path", "list", "size")
# list: comma-separated text (or a list, or one integer, from Python); size: "4G" and the like, or a number of bytes


def flag(name):
    """``d_model`` -> ``--d-model``: how the command line names an option."""
    return "--" + name.replace("_", "-")


def is_integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Option:
    """One input. ``low``/``high`` bound an int (inclusive) or a float (open unless ``closed`` names the end);
    ``optional``: None is allowed; ``cli``: the flag's spelling (``--no-peers`` for a store_false), "" for none,
    "positional" for an argument without a flag; ``repeat``: the flag may be given many times (a list)."""
    name: str
    kind: str
    help: str = ""
    default: object = None
    low: float | None = None
    high: float | None = None
    closed: tuple = ()  # "low", "high": ends a float range includes
    choices: tuple | None = None
    optional: bool = False
    required: bool = False
    cli: str | None = None
    repeat: bool = False
    metavar: str | None = None
    valid_text: str | None = None  # what is valid, where the generated words would not do

    def __post_init__(self):
        assert self.kind in KINDS, self.kind

    def but(self, **changes):
        """This option with some fields changed (the command line's own default or help, say)."""
        return replace(self, **changes)

    @property
    def spelling(self):
        return flag(self.name) if self.cli is None else self.cli

    # --- what is valid ----------------------------------------------------------------------------------------------

    def inside(self, v):
        closed = ("low", "high") if self.kind == "int" else self.closed
        low_ok = self.low is None or (v >= self.low if "low" in closed else v > self.low)
        return low_ok and (self.high is None or (v <= self.high if "high" in closed else v < self.high))

    def accepts(self, value):
        if value is None:
            return self.optional and not self.required
        if self.repeat:
            return isinstance(value, (list, tuple)) and all(self.one(v) for v in value)
        return self.one(value)

    def one(self, v):
        if self.choices is not None and v not in self.choices:
            return False
        if self.kind == "int":
            return is_integer(v) and self.inside(v)
        if self.kind == "float":
            return is_number(v) and self.inside(v)
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "str":
            return isinstance(v, str) and bool(v.strip())  # "" would silently mean the default (--prior '')
        if self.kind == "path":
            return isinstance(v, (str, os.PathLike)) and bool(str(v).strip())
        if self.kind == "size":
            return (isinstance(v, str) and bool(v.strip())) or (is_integer(v) and v > 0)
        return isinstance(v, (str, list, tuple, os.PathLike)) or is_integer(v)  # emptiness: zoo.study.plan names it

    def valid(self):
        """What is valid, as it reads after "must be" (the words of ``core.checks``)."""
        if self.valid_text:
            what = self.valid_text
        elif self.choices is not None:
            what = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "int":
            bounds = [f">= {self.low}"] * (self.low is not None) + [f"<= {self.high}"] * (self.high is not None)
            what = " ".join(["an integer", " and ".join(bounds)]).strip()
        elif self.kind == "float":
            what = self.interval()
        else:
            what = {"bool": "true or false", "str": "a non-empty string",
                    "path": "a path (a non-empty string or a Path)", "list": "a comma-separated string or a list",
                    "size": "a size such as 4G or 512M, or a number of bytes >= 1"}[self.kind]
        if self.repeat:
            what = f"a list of values, each {what}"
        return ("None or " if self.optional and not self.required else "") + what

    def interval(self):
        if self.low == 0 and "low" not in self.closed and self.high is None:
            return "a positive finite number"
        if self.low is None and self.high is None:
            return "a finite number"
        return (f"a number in {'[' if 'low' in self.closed else '('}{'-inf' if self.low is None else self.low}, "
                f"{'inf' if self.high is None else self.high}{']' if 'high' in self.closed else ')'}")

    def refusal(self, value, spell=str):
        if value is None and self.required:
            return f"{spell(self.name)} is required"
        return f"{spell(self.name)} must be {self.valid()}, got {value!r}"

    # --- the command line ---------------------------------------------------------------------------------------

    def parse(self, text):
        """Text from the command line as this option's Python type (the range is checked later, with the rules)."""
        try:
            return {"int": int, "float": float}.get(self.kind, str)(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.valid()}, got {text!r}") from None

    def add_to(self, parser):
        if self.cli == "":
            return
        extra = {"help": self.help}
        if self.metavar:
            extra["metavar"] = self.metavar
        if self.cli == "positional":
            if self.kind == "list":  # the rest of the command line, handed on as it is
                parser.add_argument(self.name, nargs=argparse.REMAINDER, **extra)
                return
            parser.add_argument(self.name, type=self.parse, **extra)
            return
        if self.kind == "bool":
            store = "store_true" if self.default is not True else "store_false"
            parser.add_argument(self.spelling, dest=self.name, action=store, **extra)
            return
        action = {"action": "append"} if self.repeat else {}
        parser.add_argument(self.spelling, dest=self.name, type=self.parse, default=self.default,
                            required=self.required, **action, **extra)

    def example(self):
        """A valid value that is not the default: what the generated tests set to break a cross-option rule."""
        if self.kind == "bool":
            return not self.default
        if self.choices is not None:
            return next(c for c in self.choices if c != self.default)
        if self.kind in ("int", "float"):
            base = self.low if self.low is not None else (self.high - 1 if self.high is not None else 0)
            value = base + (1 if self.kind == "int" else 0.5)
            value = value if self.inside(value) else base
            return value if value != self.default else value + (1 if self.high is None else 0)
        return "x.npz" if self.kind == "path" else "x"


# --- rules across options ---------------------------------------------------------------------------------------

def is_set(option, value):
    return value is not None and value is not False and value != option.default


@dataclass(frozen=True)
class Requires:
    """``name`` set needs ``needed`` set too."""
    name: str
    needed: str
    why: str

    def broken(self, schema, values, spell):
        given = values.get(self.name, schema[self.name].default)
        if is_set(schema[self.name], given) and not is_set(schema[self.needed], values.get(self.needed)):
            shown = "" if isinstance(given, bool) else f" {given}"
            return f"{spell(self.name)}{shown} needs {spell(self.needed)}: {self.why}"
        return None

    def violation(self, schema):
        return {self.name: schema[self.name].example()}


@dataclass(frozen=True)
class Excludes:
    """At most one of ``names`` is set; ``why`` completes "--a and --b ..."."""
    names: tuple
    why: str

    def broken(self, schema, values, spell):
        given = [n for n in self.names if is_set(schema[n], values.get(n, schema[n].default))]
        if len(given) > 1:
            return f"{spell(given[0])} and {spell(given[1])} {self.why}"
        return None

    def violation(self, schema):
        return {n: schema[n].example() for n in self.names[:2]}


@dataclass(frozen=True)
class AtMost:
    """``name`` at most ``bound`` (both numbers; either left out passes)."""
    name: str
    bound: str

    def broken(self, schema, values, spell):
        a = values.get(self.name, schema[self.name].default)
        b = values.get(self.bound, schema[self.bound].default)
        if a is not None and b is not None and a > b:
            return f"{spell(self.name)}={a!r} is beyond {spell(self.bound)}={b!r}"
        return None

    def violation(self, schema):
        b = schema[self.bound].example()
        return {self.bound: b, self.name: b + 1}


def requires(name, needed, why):
    return Requires(name, needed, why)


def excludes(*names, why):
    return Excludes(tuple(names), why)


def at_most(name, bound):
    return AtMost(name, bound)


@dataclass(frozen=True)
class Schema:
    """The inputs of one verb or function: its options in order and the rules between them."""
    name: str
    options: tuple
    rules: tuple = field(default=())

    def __post_init__(self):
        names = [o.name for o in self.options]
        assert len(names) == len(set(names)), f"{self.name}: an option is declared twice"
        for rule in self.rules:
            for n in getattr(rule, "names", None) or (rule.name, getattr(rule, "needed", None) or rule.bound):
                assert n in names, f"{self.name}: rule on undeclared option '{n}'"

    def __getitem__(self, name):
        return next(o for o in self.options if o.name == name)

    def __contains__(self, name):
        return any(o.name == name for o in self.options)

    def names(self):
        return [o.name for o in self.options]

    def defaults(self, *names):
        return {o.name: o.default for o in self.options if not names or o.name in names}

    def add_arguments(self, parser):
        """Every option as a flag (the rules are checked with the values, so every refusal reads the same)."""
        for option in self.options:
            option.add_to(parser)

    def check(self, values, error, spell=str):
        """Refuse the first of ``values`` (name -> value; names not declared here are left to the caller) that its
        option does not accept, then the first broken rule: one line naming the option, as ``error``."""
        for name, value in values.items():
            if name in self and not self[name].accepts(value):
                raise error(self[name].refusal(value, spell))
        for option in self.options:
            if option.required and values.get(option.name) is None:
                raise error(option.refusal(None, spell))
        for rule in self.rules:
            message = rule.broken(self, values, spell)
            if message:
                raise error(message)
        return values


# --- saved files ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fields:
    """The structure of a saved file: field -> type (a tuple of types; ``type(None)`` where it may be None), and for
    fields that are dicts of one kind of value (a state dict of tensors), field -> the type of every value."""
    kind: str
    types: dict
    entries: dict = field(default_factory=dict)

    def check(self, obj, where, error):
        """Refuse ``obj`` (read from ``where``) if it is not a dict, lacks a field or holds one of another type."""
        if not isinstance(obj, dict):
            raise error(f"{self.kind} file '{where}' holds a {type(obj).__name__}, not a {self.kind}")
        for name, types in self.types.items():
            if name not in obj:
                raise error(f"{self.kind} file '{where}' has no field '{name}'; it is damaged or not a {self.kind}")
            if not isinstance(obj[name], types):
                raise error(f"{self.kind} file '{where}': field '{name}' must be {names(types)}, got "
                            f"{type(obj[name]).__name__}")
        for name, types in self.entries.items():
            for key, value in (obj[name] or {}).items():
                if not isinstance(key, str) or not isinstance(value, types):
                    raise error(f"{self.kind} file '{where}': field '{name}' must map names to {names(types)}, "
                                f"got {type(value).__name__} at {key!r}")
        return obj


def names(types):
    """``(dict, NoneType)`` -> "dict or None"."""
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)
