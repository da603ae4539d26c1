"""rectified: adaptive optimizers built around RAdam, and the lab that shows why it works.

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (arXiv 1908.03265).
"""

from rectified import schedules
from rectified.optim import SGD, AdaBound, Adadelta, Adagrad, Adam, AdamW, RAdam, RMSprop
from rectified.rules.radam import rectification_term, rho_inf, rho_t
from rectified.wrappers import Lookahead, Ranger

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "AdaBound",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Lookahead",
    "RAdam",
    "RMSprop",
    "Ranger",
    "__version__",
    "rectification_term",
    "rho_inf",
    "rho_t",
    "schedules",
]
