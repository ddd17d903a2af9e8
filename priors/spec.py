"""Parse prior specifications: ``NAME[:key=value,...]`` or a JSON file of glob -> spec.

Values are read strictly: ``true``/``false`` are the only booleans (a parameter
that wants one refuses ``no`` or ``1``), a key given twice is refused, and so is a
JSON prior file with a glob given twice. File paths in a spec (an empirical prior's
``path``, a JSON prior file) are relative to ``base`` (default: the current folder),
so a saved posterior finds the files its prior reads beside it.
"""
import inspect
import json

from .base import PriorError, resolve
from .empirical import Empirical
from .hierarchical import HierarchicalGaussian
from .prior_map import PriorMap
from .weight import Gaussian, Laplace, StudentT

REGISTRY = {cls.name: cls for cls in (Gaussian, Laplace, StudentT, HierarchicalGaussian)}


def register(cls):
    """Make a Prior class available to ``parse`` under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


def _value(text):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return float(low)
    except ValueError:
        return text.strip()


def parse_one(spec, base=None):
    """``student-t:df=3,scale=1`` -> ``StudentT(df=3, scale=1)``."""
    if not isinstance(spec, str):
        raise PriorError(f"prior spec must be a string such as 'gaussian:scale=1' or a priors.Prior, "
                         f"got {type(spec).__name__} {spec!r}")
    name, _, args = spec.strip().partition(":")
    name = name.strip().lower()
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise PriorError(f"prior '{spec}': expected key=value, got '{item}'")
        if key.strip() in kwargs:
            raise PriorError(f"prior '{spec}': parameter '{key.strip()}' is given twice")
        kwargs[key.strip()] = _value(val)
    if name == "empirical":
        if set(kwargs) - {"path", "min_scale"} or "path" not in kwargs:
            raise PriorError(f"prior '{spec}': empirical takes path=FILE[,min_scale=X]")
        return Empirical.load(kwargs["path"], kwargs.get("min_scale", 1e-2), base=base)
    if name not in REGISTRY:
        raise PriorError(f"unknown prior '{name}'; valid: {', '.join(sorted([*REGISTRY, 'empirical']))}")
    cls = REGISTRY[name]
    valid = [p for p in inspect.signature(cls).parameters]
    for key in kwargs:
        if key not in valid:
            raise PriorError(f"prior '{name}' has no parameter '{key}'; valid: {', '.join(valid)}")
    return cls(**kwargs)


def parse(spec, base=None):
    """A prior spec string, a JSON file path, or a dict of glob -> spec -> Prior or PriorMap.

    ``base``: the folder relative file paths in the spec are read from (default: the current one).
    """
    if isinstance(spec, dict):
        return PriorMap({glob: parse_one(s, base) for glob, s in spec.items()})
    if isinstance(spec, str) and spec.strip().endswith(".json"):
        path = resolve(spec.strip(), base)
        try:
            mapping = json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_no_duplicates(spec))
        except (FileNotFoundError, IsADirectoryError):
            raise PriorError(f"prior file '{spec}' does not exist") from None
        except UnicodeDecodeError:
            raise PriorError(f"prior file '{spec}' is not UTF-8 text; save it as UTF-8") from None
        except json.JSONDecodeError as e:
            raise PriorError(f"prior file '{spec}' is not valid JSON: {e}") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise PriorError(f"prior file '{spec}' must map globs to prior specs, e.g. {{\"*\": \"gaussian:scale=1\"}}")
        return parse(mapping, base)
    return parse_one(spec, base)


def _no_duplicates(source):
    def pairs(items):
        seen = {}
        for key, value in items:
            if key in seen:
                raise PriorError(f"prior file '{source}' gives glob '{key}' twice; each glob takes one prior")
            seen[key] = value
        return seen
    return pairs
