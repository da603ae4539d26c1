"""Optimizer recipes by name: an optimizer of :mod:`rectified`, its defaults, and its schedule.

The Adam variants are the paper's probes of why warmup helps (Liu et al., arXiv 1908.03265,
Section 3.2), and the later literature's answer to it:

* ``adam-warmup``: the learning rate rises linearly from lr/W to lr over the first W steps;
* ``adam-eps``: ε = 1e-4 instead of 1e-8, which bounds the adaptive learning rate 1/(√v̂ + ε)
  and so its variance;
* ``adam-2k``: before training, W *extra* iterations update only the second moment v, with the
  parameters and the first moment m frozen (the paper uses W = 2,000), so the adaptive learning
  rate has seen W samples before the first real update. The run then trains for its full step
  budget as plain Adam. Built on the public optimizer: the extra iterations are Adam steps at
  lr 0 (v moves, the parameters cannot), after which m is reset to 0. Adam's step counter then
  reads W + t at real update t, which is right for v̂ (an average of W + t squared gradients)
  but would shrink m̂; the learning rate of update t is therefore scaled by
  (1 - β1^(W+t)) / (1 - β1^t), which makes the step exactly lr · m̂_t / (√v̂ + ε) with m̂_t
  bias-corrected over the t real gradients;
* ``adam-untuned`` and ``adam-untuned-exp``: the untuned warmups of Ma & Yarats ("On the
  adequacy of untuned warmup for adaptive optimization", arXiv 1910.04209), which need no
  warmup length: linear over 2 / (1 - β2) updates, min(1, t (1 - β2) / 2), and exponential,
  1 - exp(-(1 - β2) t), with β2 the optimizer's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

import rectified
from rectified.schedules import ScheduleLR, exponential_warmup, linear_warmup, untuned_warmup

OptimizerFactory = Callable[..., torch.optim.Optimizer]
StepFactor = Callable[[int], float]  # update t (from 1) -> multiplier of the learning rate


def _lookahead_adam(params: Any, lr: float, **options: Any) -> torch.optim.Optimizer:
    k, alpha = options.pop("k", 5), options.pop("alpha", 0.5)
    return rectified.Lookahead(rectified.Adam(params, lr=lr, **options), k=k, alpha=alpha)


def untuned_linear(beta2: float) -> StepFactor:
    """Ma & Yarats' untuned linear warmup: min(1, t (1 - β2) / 2)."""
    return untuned_warmup(beta2)


def untuned_exponential(beta2: float) -> StepFactor:
    """Ma & Yarats' untuned exponential warmup: 1 - exp(-(1 - β2) t)."""
    return exponential_warmup(1.0 / (1.0 - beta2))


@dataclass(frozen=True)
class Recipe:
    name: str
    factory: OptimizerFactory
    lr: float  # default learning rate
    options: Mapping[str, Any] = field(default_factory=dict)
    # what the run's `warmup` means: "" (nothing), "linear" (warmup steps) or "second-moment"
    # (extra iterations that update only v, before training)
    uses_warmup: str = ""
    # a warmup fixed by the optimizer's β2 (the untuned warmups), or None
    warmup_of_beta2: Callable[[float], StepFactor] | None = None
    description: str = ""


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("sgd", rectified.SGD, 0.1, {"momentum": 0.9}, description="SGD, momentum 0.9"),
        Recipe("adam", rectified.Adam, 1e-3, description="Adam"),
        Recipe("adam-warmup", rectified.Adam, 1e-3, uses_warmup="linear",
               description="Adam with linear warmup over `warmup` steps"),
        Recipe("adam-eps", rectified.Adam, 1e-3, {"eps": 1e-4}, description="Adam, eps = 1e-4"),
        Recipe("adam-2k", rectified.Adam, 1e-3, uses_warmup="second-moment",
               description="Adam after `warmup` extra iterations that update only v"),
        Recipe("adam-untuned", rectified.Adam, 1e-3, warmup_of_beta2=untuned_linear,
               description="Adam with the untuned linear warmup over 2 / (1 - beta2) steps"),
        Recipe("adam-untuned-exp", rectified.Adam, 1e-3, warmup_of_beta2=untuned_exponential,
               description="Adam with the untuned exponential warmup 1 - exp(-(1 - beta2) t)"),
        Recipe("radam", rectified.RAdam, 1e-3, description="RAdam"),
        Recipe("radamw", rectified.RAdam, 1e-3,
               {"decoupled_weight_decay": True, "weight_decay": 1e-2},
               description="RAdam with decoupled weight decay 0.01"),
        Recipe("adamw", rectified.AdamW, 1e-3, description="AdamW (weight decay 0.01)"),
        Recipe("nadam", rectified.NAdam, 2e-3, description="NAdam"),
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
    """A recipe applied to one model: the optimizer, its scheduler, and the number of extra
    iterations that update only the second moment before training (Adam-2k's)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    second_moment_steps: int = 0

    def update_second_moment_only(self, gradient: Callable[[int], None]) -> None:
        """Run the extra iterations: ``gradient(i)`` fills the parameters' ``.grad`` for
        iteration i; each optimizer step runs at lr 0, so v moves and the parameters do not.
        Afterwards m is reset to 0, the value it had before (the paper keeps it frozen)."""
        if not self.second_moment_steps:
            return
        groups = self.optimizer.param_groups
        saved = [group["lr"] for group in groups]
        for group in groups:
            group["lr"] = 0.0
        for index in range(self.second_moment_steps):
            self.optimizer.zero_grad(set_to_none=True)
            gradient(index)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for group, lr in zip(groups, saved, strict=True):
            group["lr"] = lr
        for state in self.optimizer.state.values():
            if "exp_avg" in state:
                state["exp_avg"].zero_()


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
    second_moment_steps = 0
    if recipe.uses_warmup == "linear" and warmup > 0:
        scheduler = ScheduleLR(optimizer, linear_warmup(warmup))
    elif recipe.warmup_of_beta2 is not None:
        scheduler = ScheduleLR(optimizer, [recipe.warmup_of_beta2(float(g["betas"][1]))
                                           for g in optimizer.param_groups])
    elif recipe.uses_warmup == "second-moment" and warmup > 0:
        scheduler = ScheduleLR(optimizer, [first_moment_correction(float(g["betas"][0]), warmup)
                                           for g in optimizer.param_groups])
        second_moment_steps = warmup
    return Prepared(optimizer, scheduler, second_moment_steps)


def first_moment_correction(beta1: float, extra: int) -> StepFactor:
    """(1 - β1^(extra + t)) / (1 - β1^t): turns Adam's bias correction of m at its step counter
    extra + t into the correction over the t real updates (see ``adam-2k`` above)."""

    def factor(t: int) -> float:
        if t < 1:
            return 1.0
        return (1.0 - beta1 ** (extra + t)) / (1.0 - beta1**t)

    return factor
