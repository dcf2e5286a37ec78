"""Paper reproductions and user analyses: config → run directory with claims, arrays and figures."""

from curvscope.experiments.registry import Context, Recipe, get, names, register, run_experiment
from curvscope.experiments.run import Claim, Figure, RunDir

__all__ = ["Claim", "Context", "Figure", "Recipe", "RunDir", "get", "names", "register", "run_experiment"]
