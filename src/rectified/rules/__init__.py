"""Update rules: one definition of each optimizer's math, over lists of tensors."""

from rectified.rules.adabound import ADABOUND_RULE, adabound_bounds
from rectified.rules.adadelta import ADADELTA_RULE
from rectified.rules.adagrad import ADAGRAD_RULE
from rectified.rules.adam import ADAM_RULE
from rectified.rules.base import TensorListOps, UpdateRule
from rectified.rules.moments import bias_corrections
from rectified.rules.radam import (
    RADAM_RULE,
    radam_coefficients,
    rectification_term,
    rho_inf,
    rho_t,
)
from rectified.rules.rmsprop import RMSPROP_RULE
from rectified.rules.sgd import SGD_RULE

__all__ = [
    "ADABOUND_RULE",
    "ADADELTA_RULE",
    "ADAGRAD_RULE",
    "ADAM_RULE",
    "RADAM_RULE",
    "RMSPROP_RULE",
    "SGD_RULE",
    "TensorListOps",
    "UpdateRule",
    "adabound_bounds",
    "bias_corrections",
    "radam_coefficients",
    "rectification_term",
    "rho_inf",
    "rho_t",
]
