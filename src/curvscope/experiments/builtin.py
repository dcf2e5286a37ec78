"""Registers the built-in experiments (imported lazily by the registry).

Each module ``curvscope.experiments.<name>`` defines ``RECIPE``.
"""

import importlib

from curvscope.experiments.registry import EXPERIMENTS, register

BUILTIN = ("demo", "sagun2016", "sagun2017", "papyan2019", "fernandez2025", "fortganguli2019", "cohen2021", "zhang2024")

for _name in BUILTIN:
    _recipe = importlib.import_module(f"curvscope.experiments.{_name}").RECIPE
    if _recipe.name not in EXPERIMENTS:
        register(_recipe)
