"""Assign priors to sites by glob: the first glob (in order) that matches a site wins; a shadowed glob is an error."""
from fnmatch import fnmatchcase

from .base import Prior, PriorError


class PriorMap:
    """``PriorMap({"blocks.*.attn.*": StudentT(3), "*": Gaussian(fan_in=True)})``.

    Globs are tried in the order given and a site takes the prior of the first glob
    that matches it, so put the specific globs before the general ones (``"*"`` last).
    ``resolve(names)`` returns ``{site: prior}`` and refuses, naming the glob:

    - a glob that matches no site (a typo would otherwise silently leave the default in place);
    - a glob every one of whose sites an earlier glob already took (``{"*": ..., "head.*": ...}``
      would never use the second prior, though it reads as if it did);
    - a site that no glob covers.
    """

    def __init__(self, mapping):
        if isinstance(mapping, Prior):
            mapping = {"*": mapping}
        elif isinstance(mapping, PriorMap):
            mapping = mapping.mapping
        elif not isinstance(mapping, dict):
            raise PriorError(f"prior must be a priors.Prior, a PriorMap, a spec string or a dict of glob -> prior; "
                             f"got {type(mapping).__name__} {mapping!r}")
        self.mapping = dict(mapping)
        for glob, prior in self.mapping.items():
            if not isinstance(glob, str):
                raise PriorError(f"prior glob {glob!r} is not a string")
            if not isinstance(prior, Prior):
                raise PriorError(f"prior for glob '{glob}' is {prior!r}, not a priors.Prior")

    def resolve(self, names):
        names = list(names)
        chosen, taker = {}, {}
        for glob, prior in self.mapping.items():
            matched = [n for n in names if fnmatchcase(n, glob)]
            if not matched:
                raise PriorError(f"prior glob '{glob}' matches no Bayesian site; sites are: {', '.join(names) or 'none'}")
            fresh = [n for n in matched if n not in chosen]
            if not fresh:
                earlier = sorted({taker[n] for n in matched}, key=list(self.mapping).index)
                raise PriorError(f"prior glob '{glob}' is shadowed: every site it matches ({', '.join(matched[:3])}"
                                 f"{', ...' if len(matched) > 3 else ''}) already takes the prior of the earlier glob "
                                 f"'{earlier[0]}'; put the more specific glob first")
            for n in fresh:
                chosen[n], taker[n] = prior, glob
        missing = [n for n in names if n not in chosen]
        if missing:
            raise PriorError(f"no prior covers site '{missing[0]}' (add a glob such as '*')")
        return chosen

    def spec(self):
        return {glob: prior.spec() for glob, prior in self.mapping.items()}

    def priors(self):
        """The distinct prior objects in the map, in order."""
        return list({id(p): p for p in self.mapping.values()}.values())

    def __repr__(self):
        return f"PriorMap({self.spec()})"
