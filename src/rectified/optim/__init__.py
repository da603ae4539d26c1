"""``torch.optim.Optimizer`` front-ends: validation, state and dispatch to an engine."""

from rectified.optim.adabound import AdaBound
from rectified.optim.adadelta import Adadelta
from rectified.optim.adagrad import Adagrad
from rectified.optim.adam import Adam, AdamW
from rectified.optim.base import RuleOptimizer
from rectified.optim.nadam import NAdam
from rectified.optim.radam import RAdam
from rectified.optim.rmsprop import RMSprop
from rectified.optim.sgd import SGD

__all__ = ["SGD", "AdaBound", "Adadelta", "Adagrad", "Adam", "AdamW", "NAdam", "RAdam", "RMSprop",
           "RuleOptimizer"]
