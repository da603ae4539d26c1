"""rectified: adaptive optimizers built around RAdam, and the lab that shows why it works.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265).

The public names below are imported on first use (PEP 562), so ``import rectified`` and the
``rectified`` command start without importing torch; ``rectified.RAdam`` or
``from rectified import RAdam`` imports what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it (a subpackage's own name maps to the subpackage)
_LAZY: dict[str, str] = {
    "SGD": "rectified.optim",
    "AdaBound": "rectified.optim",
    "Adadelta": "rectified.optim",
    "Adagrad": "rectified.optim",
    "Adam": "rectified.optim",
    "AdamW": "rectified.optim",
    "NAdam": "rectified.optim",
    "RAdam": "rectified.optim",
    "RMSprop": "rectified.optim",
    "Lookahead": "rectified.wrappers",
    "Ranger": "rectified.wrappers",
    "rectification_term": "rectified.rules.radam",
    "rho_inf": "rectified.rules.radam",
    "rho_t": "rectified.rules.radam",
    "create_optimizer": "rectified.factory",
    "list_optimizers": "rectified.factory",
    "param_groups": "rectified.factory",
    "schedules": "rectified.schedules",
    "variance": "rectified.variance",
}

__all__ = [
    "SGD",
    "AdaBound",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Lookahead",
    "NAdam",
    "RAdam",
    "RMSprop",
    "Ranger",
    "__version__",
    "create_optimizer",
    "list_optimizers",
    "param_groups",
    "rectification_term",
    "rho_inf",
    "rho_t",
    "schedules",
    "variance",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'rectified' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name == f"rectified.{name}" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from rectified import schedules, variance
    from rectified.factory import create_optimizer, list_optimizers, param_groups
    from rectified.optim import (
        SGD,
        AdaBound,
        Adadelta,
        Adagrad,
        Adam,
        AdamW,
        NAdam,
        RAdam,
        RMSprop,
    )
    from rectified.rules.radam import rectification_term, rho_inf, rho_t
    from rectified.wrappers import Lookahead, Ranger
