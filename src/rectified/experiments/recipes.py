"""Optimizer recipes by name: an optimizer of :mod:`rectified`, its defaults, and its schedule.

The Adam variants are the paper's probes of why warmup helps (Liu et al., arXiv 1908.03265,
Section 3.2):

* ``adam-warmup``: the learning rate rises linearly from lr/W to lr over the first W steps;
* ``adam-eps``: ε = 1e-4 instead of 1e-8, which bounds the adaptive learning rate 1/(√v̂ + ε)
  and so its variance;
* ``adam-2k``: for the first W steps only the second moment v is updated; the parameters and
  the first moment stay frozen, so the adaptive learning rate has seen W samples before the
  first real update (the paper uses W = 2,000). Here the frozen steps count in the run's step
  budget. Freezing is lr = 0 with β1 = 0; when the freeze ends, m is set to (1 - β1^W) times
  the last frozen gradient (the first moment of W equal gradients at the initial parameters),
  so the bias-corrected m̂ is an average from the first real update on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

import rectified
from rectified.schedules import ScheduleLR, linear_warmup

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _lookahead_adam(params: Any, lr: float, **options: Any) -> torch.optim.Optimizer:
    k, alpha = options.pop("k", 5), options.pop("alpha", 0.5)
    return rectified.Lookahead(rectified.Adam(params, lr=lr, **options), k=k, alpha=alpha)


@dataclass(frozen=True)
class Recipe:
    name: str
    factory: OptimizerFactory
    lr: float  # default learning rate
    options: Mapping[str, Any] = field(default_factory=dict)
    uses_warmup: str = ""  # "" | "linear" | "freeze": what the run's `warmup` steps mean
    description: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("sgd", rectified.SGD, 0.1, {"momentum": 0.9}, description="SGD, momentum 0.9"),
        Recipe("adam", rectified.Adam, 1e-3, description="Adam"),
        Recipe("adam-warmup", rectified.Adam, 1e-3, uses_warmup="linear",
               description="Adam with linear warmup over `warmup` steps"),
        Recipe("adam-eps", rectified.Adam, 1e-3, {"eps": 1e-4}, description="Adam, eps = 1e-4"),
        Recipe("adam-2k", rectified.Adam, 1e-3, uses_warmup="freeze",
               description="Adam updating only v for the first `warmup` steps"),
        Recipe("radam", rectified.RAdam, 1e-3, description="RAdam"),
        Recipe("radamw", rectified.RAdam, 1e-3,
               {"decoupled_weight_decay": True, "weight_decay": 1e-2},
               description="RAdam with decoupled weight decay 0.01"),
        Recipe("adamw", rectified.AdamW, 1e-3, description="AdamW (weight decay 0.01)"),
        Recipe("adabound", rectified.AdaBound, 1e-3, description="AdaBound"),
        Recipe("ranger", rectified.Ranger, 1e-3, description="Ranger = Lookahead(RAdam)"),
        Recipe("lookahead", _lookahead_adam, 1e-3, description="Lookahead(Adam)"),
        Recipe("rmsprop", rectified.RMSprop, 1e-3, description="RMSprop"),
        Recipe("adagrad", rectified.Adagrad, 1e-2, description="Adagrad"),
        Recipe("adadelta", rectified.Adadelta, 1.0, description="Adadelta"),
    )
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def check_lr(lr: float) -> None:
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"Invalid learning rate: {lr}")


@dataclass
class Prepared:
    """A recipe applied to one model: the optimizer, its scheduler, and a per-step hook."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    before_step: Callable[[int], None]  # called with the 0-based step before each update


def build(name: str, params: Any, lr: float, warmup: int,
          overrides: Mapping[str, Any] | None = None) -> Prepared:
    """Apply recipe ``name`` with learning rate ``lr`` and ``warmup`` steps (where it uses them).

    ``overrides`` are keyword arguments of the optimizer's constructor; an unknown one raises
    ``ValueError``.
    """
    recipe = get_recipe(name)
    check_lr(lr)
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    options = {**recipe.options, **(overrides or {})}
    try:
        optimizer = recipe.factory(params, lr=lr, **options)
    except TypeError as error:
        raise ValueError(f"optimizer {name}: {error}") from None
    scheduler = None
    before_step: Callable[[int], None] = _nothing
    if recipe.uses_warmup == "linear" and warmup > 0:
        scheduler = ScheduleLR(optimizer, linear_warmup(warmup))
    elif recipe.uses_warmup == "freeze" and warmup > 0:
        scheduler = ScheduleLR(optimizer, lambda t: 0.0 if t <= warmup else 1.0)
        before_step = _second_moment_only(optimizer, warmup)
    return Prepared(optimizer, scheduler, before_step)


def _nothing(step: int) -> None:
    return None


def _second_moment_only(optimizer: torch.optim.Optimizer, frozen_steps: int
                        ) -> Callable[[int], None]:
    beta1 = [group["betas"][0] for group in optimizer.param_groups]

    def before_step(step: int) -> None:
        for group, b1 in zip(optimizer.param_groups, beta1, strict=True):
            group["betas"] = (0.0 if step < frozen_steps else b1, group["betas"][1])
            if step == frozen_steps:
                # m holds the last frozen gradient; scaled by 1 - β1^W it is the first moment
                # of W equal gradients, so m̂ stays an average (weights summing to 1) once the
                # usual bias correction 1 - β1^t takes over.
                for param in group["params"]:
                    state = optimizer.state.get(param, {})
                    if "exp_avg" in state:
                        state["exp_avg"].mul_(1.0 - float(b1) ** frozen_steps)

    return before_step
