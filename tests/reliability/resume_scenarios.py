"""Training runs that are checkpointed and resumed in another process.

A scenario is an optimizer configuration (a registry row or a variant of one), the engine it
is saved with and the engine it resumes on, and optionally a learning-rate scheduler and a
GradScaler. Both the test and the process that resumes build scenarios from this module by
name, so they build identical objects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rectified.schedules import (
    ReduceOnPlateau,
    ScheduleLR,
    cosine_annealing,
    exponential_decay,
    join,
    linear_warmup,
    radam_warmup,
)
from tests.registry import CASES, Case
from tests.reliability.support import (
    RULE_CASES,
    TinyNet,
    batch,
    build_for,
    engines_of,
    loss_of,
    switch_engine_,
)

FIRST_STEPS, MORE_STEPS = 7, 6  # 7 is not a multiple of Lookahead's k (2, 3 or 6)
# A metric that improves, stalls and improves again, so plateaus are reached on both sides of
# the checkpoint and the checkpoint falls in the middle of a run of bad evaluations.
METRIC = (1.0, 0.9, 0.95, 0.96, 0.97, 0.8, 0.85, 0.9, 0.91, 0.92, 0.7, 0.75, 0.8)
OVERFLOW_STEPS = frozenset({2, 9})


def _warmup_cosine(optimizer):
    return ScheduleLR(optimizer, join([linear_warmup(4), cosine_annealing(20, lr_min=0.1)], [4]))


def _per_group(optimizer):
    return ScheduleLR(optimizer, [radam_warmup(0.999, threshold=4.0), exponential_decay(0.9)])


def _plateau(optimizer):
    return ReduceOnPlateau(optimizer, patience=1, factor=0.5)


def _one_cycle(optimizer):
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.05, total_steps=FIRST_STEPS + MORE_STEPS
    )


def _step_lr(optimizer):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "warmup-cosine": _warmup_cosine,
    "per-group": _per_group,
    "plateau": _plateau,
    "one-cycle": _one_cycle,
    "step-lr": _step_lr,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    case: Case
    save_engine: str
    load_engine: str
    scheduler: str | None = None
    scaler: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32 if self.scaler else torch.float64


def _case(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


def _tensor_lr(case: Case) -> Case:
    """The case with its first group's lr a tensor (a new one per optimizer: schedulers write
    into it)."""

    def build(params: Any, lr: float, **kwargs: Any) -> torch.optim.Optimizer:
        return case.build(params, lr=torch.tensor(lr, dtype=torch.float64), **kwargs)

    return dataclasses.replace(case, name=f"{case.name}-tensor-lr", build=build)


def _stored(case: Case, state_format: str) -> Case:
    """The case with its moments in ``state_format``, every tensor encoded (TinyNet's are
    small)."""
    kwargs = {**case.kwargs, "state_format": state_format, "min_8bit_size": 0}
    return dataclasses.replace(case, name=f"{case.name}-{state_format}", kwargs=kwargs,
                               engines=tuple(dict.fromkeys((*case.engines, *engines_of(case)))))


def _scenarios() -> dict[str, Scenario]:
    found = []
    for case in CASES:
        for engine in engines_of(case):
            found.append(Scenario(f"{case.name}@{engine}", case, engine, engine))
    for case in RULE_CASES:
        for saved in engines_of(case):
            for loaded in engines_of(case):
                if saved != loaded:
                    found.append(Scenario(f"{case.name}@{saved}->{loaded}", case, saved, loaded))
    with_schedulers = (
        ("RAdam", "warmup-cosine"), ("Ranger", "warmup-cosine"), ("AdaBound", "per-group"),
        ("Adam", "plateau"), ("Lookahead(SGD)", "plateau"), ("AdamW", "one-cycle"),
        ("SGD", "one-cycle"), ("RAdam-decoupled", "step-lr"), ("Lookahead(torch Adam)", "step-lr"),
    )
    for name, scheduler in with_schedulers:
        case = _case(name)
        engine = engines_of(case)[-1]
        found.append(Scenario(f"{name}+{scheduler}@{engine}", case, engine, engine, scheduler))
    found.append(Scenario("RAdam-tensor-lr+warmup-cosine@foreach", _tensor_lr(_case("RAdam")),
                          "foreach", "foreach", "warmup-cosine"))
    for name in ("Adam", "Ranger", "AdaBound"):
        for engine in engines_of(_case(name)):
            found.append(Scenario(f"{name}+GradScaler@{engine}", _case(name), engine, engine,
                                  scaler=True))
    for name in ("Adam-amsgrad", "RAdam", "NAdam", "AMSBound", "Ranger"):
        for state_format in ("8bit", "bfloat16"):
            case = _stored(_case(name), state_format)
            for engine in engines_of(case):
                found.append(Scenario(f"{case.name}@{engine}", case, engine, engine))
    return {scenario.name: scenario for scenario in found}


SCENARIOS = _scenarios()


class Run:
    """A model, its optimizer and, if the scenario has them, a scheduler and a GradScaler."""

    def __init__(self, scenario: Scenario, engine: str, seed: int = 0) -> None:
        self.scenario = scenario
        self.model = TinyNet(scenario.dtype, seed=seed)
        self.optimizer = build_for(scenario.case, self.model, engine)
        make = SCHEDULERS.get(scenario.scheduler or "")
        self.scheduler = make(self.optimizer) if make else None
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3) \
            if scenario.scaler else None

    def step(self, step: int) -> None:
        x, y = batch(step, self.scenario.dtype)
        self.optimizer.zero_grad()
        loss = loss_of(self.model, x, y)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            overflow = math.inf if step in OVERFLOW_STEPS else 1.0
            self.scaler.scale(loss * overflow).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if isinstance(self.scheduler, ReduceOnPlateau):
            self.scheduler.step(METRIC[step])
        elif self.scheduler is not None:
            self.scheduler.step()

    def train(self, steps: range) -> None:
        for step in steps:
            self.step(step)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
        }

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(checkpoint["scaler"])

    def outcome(self) -> dict[str, Any]:
        """The parameters, the learning rates and the GradScaler's scale and growth count."""
        scaler = None if self.scaler is None else self.scaler.state_dict()
        return {
            "params": [p.detach().clone() for p in self.model.parameters()],
            "lrs": [float(group["lr"]) for group in self.optimizer.param_groups],
            "scaler": None if scaler is None else (scaler["scale"], scaler["_growth_tracker"]),
        }


def checkpoint_path(folder: Path, scenario: Scenario) -> Path:
    return folder / f"{hashlib.sha1(scenario.name.encode()).hexdigest()[:16]}.pt"


def save_first_part(scenario: Scenario, folder: Path) -> Path:
    """Train the first steps with the saving engine and write the checkpoint."""
    run = Run(scenario, scenario.save_engine)
    run.train(range(FIRST_STEPS))
    path = checkpoint_path(folder, scenario)
    torch.save(run.checkpoint(), path)
    return path


def resume(scenario: Scenario, path: Path) -> dict[str, Any]:
    """Fresh objects (other initial weights), the checkpoint loaded, the remaining steps."""
    run = Run(scenario, scenario.load_engine, seed=1)
    run.load(torch.load(path, weights_only=True))
    if scenario.load_engine != scenario.save_engine:
        switch_engine_(run.optimizer, scenario.load_engine)
    run.train(range(FIRST_STEPS, FIRST_STEPS + MORE_STEPS))
    return run.outcome()


def uninterrupted(scenario: Scenario) -> dict[str, Any]:
    run = Run(scenario, scenario.save_engine)
    run.train(range(FIRST_STEPS + MORE_STEPS))
    return run.outcome()
