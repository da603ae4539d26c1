"""One row per optimizer: how to build it, its torch.optim twin, its bad inputs.

The shared tests (``tests/optim/``) iterate over these rows, so a new optimizer gets engine
parity, torch parity, checkpoint, validation and convergence tests by adding a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import rectified


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[..., torch.optim.Optimizer]  # build(params, **kwargs)
    kwargs: dict[str, Any]  # a configuration that exercises the rule (wd, momentum, ...)
    torch_twin: type[torch.optim.Optimizer] | None = None  # same algorithm in torch.optim
    invalid: tuple[tuple[dict[str, Any], str], ...] = ()  # (kwargs, expected message)
    converge: tuple[tuple[str, Any], ...] = (("lr", 1e-2),)  # overrides for Rosenbrock
    converge_steps: int = 3000
    wrapper: bool = False
    engines: tuple[str, ...] = ("reference", "foreach")
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}({options})"


BAD_LR = ({"lr": -1.0}, "Invalid learning rate: -1.0")
BAD_WD = ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1")
BAD_EPS = ({"eps": -1e-8}, "Invalid epsilon value: -1e-08")
BAD_BETAS = (
    ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
    ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1: 1.0"),
    ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
)
ADAM_FAMILY_INVALID = (BAD_LR, BAD_WD, BAD_EPS, *BAD_BETAS)


def _lookahead_sgd(params: Any, k: int = 3, alpha: float = 0.5, **kwargs: Any):
    return rectified.Lookahead(rectified.SGD(params, **kwargs), k=k, alpha=alpha)


def _lookahead_torch_adam(params: Any, k: int = 4, alpha: float = 0.3, **kwargs: Any):
    return rectified.Lookahead(torch.optim.Adam(params, **kwargs), k=k, alpha=alpha)


CASES: tuple[Case, ...] = (
    Case(
        "SGD",
        rectified.SGD,
        dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
        torch.optim.SGD,
        (BAD_LR, BAD_WD, ({"momentum": -0.5}, "Invalid momentum value: -0.5"),
         ({"momentum": 0.0, "nesterov": True},
          "Nesterov momentum requires a momentum and zero dampening")),
        converge=(("lr", 1e-3),),
    ),
    Case("SGD-nesterov", rectified.SGD, dict(lr=0.05, momentum=0.9, nesterov=True,
                                             weight_decay=0.01), torch.optim.SGD,
         converge=(("lr", 1e-3),)),
    Case(
        "Adagrad",
        rectified.Adagrad,
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
        torch.optim.Adagrad,
        (BAD_LR, BAD_WD, BAD_EPS, ({"lr_decay": -1.0}, "Invalid lr_decay value: -1.0"),
         ({"initial_accumulator_value": -1.0},
          "Invalid initial_accumulator_value value: -1.0")),
        converge=(("lr", 0.1), ("lr_decay", 0.0)), converge_steps=10000,
    ),
    Case(
        "RMSprop",
        rectified.RMSprop,
        dict(lr=0.01, alpha=0.9, weight_decay=0.01, momentum=0.5, centered=True),
        torch.optim.RMSprop,
        (BAD_LR, BAD_WD, BAD_EPS, ({"alpha": -0.1}, "Invalid alpha value: -0.1"),
         ({"momentum": -0.1}, "Invalid momentum value: -0.1")),
        converge=(("lr", 1e-3),),
    ),
    Case("RMSprop-plain", rectified.RMSprop, dict(lr=0.01), torch.optim.RMSprop,
         converge=(("lr", 1e-3),)),
    Case(
        "Adadelta",
        rectified.Adadelta,
        dict(lr=1.0, rho=0.8, weight_decay=0.01),
        torch.optim.Adadelta,
        (BAD_LR, BAD_WD, BAD_EPS, ({"rho": 1.5}, "Invalid rho value: 1.5")),
        converge=(("lr", 0.03), ("rho", 0.9)), converge_steps=6000,
    ),
    Case("Adam", rectified.Adam, dict(lr=0.01, weight_decay=0.01), torch.optim.Adam,
         ADAM_FAMILY_INVALID),
    Case("Adam-amsgrad", rectified.Adam, dict(lr=0.01, weight_decay=0.01, amsgrad=True),
         torch.optim.Adam),
    Case("AdamW", rectified.AdamW, dict(lr=0.01, weight_decay=0.1), torch.optim.AdamW,
         ADAM_FAMILY_INVALID),
    Case("AdamW-amsgrad", rectified.AdamW, dict(lr=0.01, weight_decay=0.1, amsgrad=True),
         torch.optim.AdamW, converge=(("lr", 3e-3),)),
    Case(
        "RAdam",
        rectified.RAdam,
        dict(lr=0.01, weight_decay=0.01),
        torch.optim.RAdam,
        (*ADAM_FAMILY_INVALID, ({"threshold": 3.0}, "Invalid threshold value: 3.0"),
         ({"degenerated_to_sgd": "yes"}, "Invalid degenerated_to_sgd value: 'yes'")),
    ),
    Case("RAdam-decoupled", rectified.RAdam,
         dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), torch.optim.RAdam),
    Case("RAdam-paper", rectified.RAdam, dict(lr=0.01, threshold=4.0, degenerated_to_sgd=False),
         converge=(("lr", 3e-3),)),
    Case(
        "NAdam",
        rectified.NAdam,
        dict(lr=0.01, weight_decay=0.01),
        torch.optim.NAdam,
        (*ADAM_FAMILY_INVALID,
         ({"momentum_decay": -1e-3}, "Invalid momentum_decay value: -0.001")),
        converge=(("lr", 3e-3),),
    ),
    Case("NAdam-decoupled", rectified.NAdam,
         dict(lr=0.01, weight_decay=0.1, momentum_decay=1e-2, decoupled_weight_decay=True),
         torch.optim.NAdam, converge=(("lr", 3e-3),)),
    Case(
        "AdaBound",
        rectified.AdaBound,
        dict(lr=0.01, final_lr=0.1, gamma=1e-2, weight_decay=0.01),
        None,
        (*ADAM_FAMILY_INVALID, ({"final_lr": -0.1}, "Invalid final_lr value: -0.1"),
         ({"gamma": 1.0}, "Invalid gamma value: 1.0")),
        converge=(("lr", 1e-2), ("final_lr", 1e-2)),
    ),
    Case("AMSBound", rectified.AdaBound, dict(lr=0.01, final_lr=0.1, amsbound=True,
                                              decoupled_weight_decay=True, weight_decay=0.1),
         converge=(("lr", 1e-2), ("final_lr", 1e-2))),
    Case(
        "Lookahead(SGD)",
        _lookahead_sgd,
        dict(lr=0.05, momentum=0.9),
        None,
        (BAD_LR, ({"k": 0}, "Invalid k value: 0"), ({"alpha": 1.5}, "Invalid alpha value: 1.5")),
        converge=(("lr", 1e-3),),
        wrapper=True,
    ),
    Case("Lookahead(torch Adam)", _lookahead_torch_adam, dict(lr=0.01), converge=(("lr", 3e-3),),
         wrapper=True, engines=("foreach",)),
    Case(
        "Ranger",
        rectified.Ranger,
        dict(lr=0.01, weight_decay=0.01),
        None,
        (*ADAM_FAMILY_INVALID, ({"k": 2.5}, "Invalid k value: 2.5"),
         ({"alpha": -0.5}, "Invalid alpha value: -0.5")),
        converge=(("lr", 3e-3),),
        wrapper=True,
    ),
)

TORCH_TWINS = tuple(case for case in CASES if case.torch_twin is not None)
WITH_INVALID = tuple(case for case in CASES if case.invalid)


def case_id(case: Case) -> str:
    return case.name
