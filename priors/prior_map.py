"""Assign priors to sites by glob: the first glob (in order) that matches a site wins."""
from fnmatch import fnmatchcase

from .base import Prior, PriorError


class PriorMap:
    """``PriorMap({"blocks.*.attn.*": StudentT(3), "*": Gaussian(fan_in=True)})``.

    ``resolve(names)`` returns ``{site: prior}`` and refuses a glob that matches no
    site (a typo would otherwise silently leave the default in place) and a site
    that no glob covers.
    """

    def __init__(self, mapping):
        if isinstance(mapping, Prior):
            mapping = {"*": mapping}
        elif isinstance(mapping, PriorMap):
            mapping = mapping.mapping
        self.mapping = dict(mapping)
        for glob, prior in self.mapping.items():
            if not isinstance(prior, Prior):
                raise PriorError(f"prior for glob '{glob}' is {prior!r}, not a priors.Prior")

    def resolve(self, names):
        names = list(names)
        chosen = {}
        for glob, prior in self.mapping.items():
            matched = [n for n in names if fnmatchcase(n, glob)]
            if not matched:
                raise PriorError(f"prior glob '{glob}' matches no Bayesian site; sites are: {', '.join(names) or 'none'}")
            for n in matched:
                chosen.setdefault(n, prior)
        missing = [n for n in names if n not in chosen]
        if missing:
            raise PriorError(f"no prior covers site '{missing[0]}' (add a glob such as '*')")
        return chosen

    def spec(self):
        return {glob: prior.spec() for glob, prior in self.mapping.items()}

    def __repr__(self):
        return f"PriorMap({self.spec()})"
