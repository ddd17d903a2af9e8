"""Parse prior specifications: ``NAME[:key=value,...]`` or a JSON file of glob -> spec."""
import inspect
import json
from pathlib import Path

from .base import PriorError
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


def parse_one(spec):
    """``student-t:df=3,scale=1`` -> ``StudentT(df=3, scale=1)``."""
    name, _, args = spec.strip().partition(":")
    name = name.strip().lower()
    kwargs = {}
    for item in filter(None, (a.strip() for a in args.split(","))):
        key, eq, val = item.partition("=")
        if not eq:
            raise PriorError(f"prior '{spec}': expected key=value, got '{item}'")
        kwargs[key.strip()] = _value(val)
    if name == "empirical":
        if set(kwargs) - {"path", "min_scale"} or "path" not in kwargs:
            raise PriorError(f"prior '{spec}': empirical takes path=FILE[,min_scale=X]")
        return Empirical.load(kwargs["path"], kwargs.get("min_scale", 1e-2))
    if name not in REGISTRY:
        raise PriorError(f"unknown prior '{name}'; valid: {', '.join(sorted([*REGISTRY, 'empirical']))}")
    cls = REGISTRY[name]
    valid = [p for p in inspect.signature(cls).parameters]
    for key in kwargs:
        if key not in valid:
            raise PriorError(f"prior '{name}' has no parameter '{key}'; valid: {', '.join(valid)}")
    return cls(**kwargs)


def parse(spec):
    """A prior spec string, a JSON file path, or a dict of glob -> spec -> Prior or PriorMap."""
    if isinstance(spec, dict):
        return PriorMap({glob: parse_one(s) for glob, s in spec.items()})
    if spec.strip().endswith(".json"):
        path = Path(spec)
        try:
            mapping = json.loads(path.read_text())
        except FileNotFoundError:
            raise PriorError(f"prior file '{spec}' does not exist") from None
        except json.JSONDecodeError as e:
            raise PriorError(f"prior file '{spec}' is not valid JSON: {e}") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise PriorError(f"prior file '{spec}' must map globs to prior specs, e.g. {{\"*\": \"gaussian:scale=1\"}}")
        return parse(mapping)
    return parse_one(spec)
