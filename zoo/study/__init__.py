"""The study: where uncertainty lives x prior x guide, with peers, fitted and compared on shipped data."""
from .run import run_study

__all__ = ["run_study"]
