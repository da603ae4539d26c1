"""10,000 steps of everything at once, kept out of the default run:

    .venv/bin/pytest -m slow tests/reliability/test_stress.py

Each optimizer trains 10,000 steps while param groups are added (0-d and zero-size parameters
included), hyperparameters change in single groups, gradients go missing or hold NaN (skipped),
a ReduceOnPlateau scheduler halves learning rates, groups switch engine, and the run is saved
and reloaded into fresh objects about a hundred times. A second run makes the same changes and
engine switches without ever reloading: the two must agree bit for bit throughout. A third run
makes the same changes on the reference engine only: within float tolerance of the first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from rectified.schedules import ReduceOnPlateau
from tests.registry import Case
from tests.reliability.support import (
    ENGINE_FLAGS,
    RULE_CASES,
    assert_equal_tensors,
    engines_of,
    max_relative_error,
    roundtrip,
)

STEPS = 10_000
COMPARE_EVERY = 500
SHAPES = ((), (0,), (3,), (2, 3), (4, 1, 2))
MAX_GROUPS = 8
ENGINE_TOLERANCE = 1e-9  # float64, the reference engine against every switch of engine

# Values a group's hyperparameters change to (for the keys the group has).
CHANGES: dict[str, tuple[Any, ...]] = {
    "betas": ((0.0, 0.9), (0.5, 0.99), (0.9, 0.999)),
    "weight_decay": (0.0, 1e-3, 1e-2),
    "eps": (1e-8, 1e-6),
    "amsgrad": (False, True),
    "amsbound": (False, True),
    "maximize": (False, True),
    "centered": (False, True),
    "alpha": (0.9, 0.99),
    "rho": (0.8, 0.9, 0.95),
    "lr_decay": (0.0, 1e-3),
    "final_lr": (0.05, 0.1),
    "gamma": (1e-3, 1e-2),
    "threshold": (4.0, 5.0),
    "degenerated_to_sgd": (False, True),
    "lookahead_alpha": (0.3, 0.5, 0.8),
    "lookahead_k": (2, 3, 5),
}


@dataclass
class Events:
    """What happens before step ``t``; the same for every run of a case."""

    add_group: dict[int, tuple[list[tuple[int, ...]], float]] = field(default_factory=dict)
    change: dict[int, tuple[float, str, Any]] = field(default_factory=dict)
    engine: dict[int, tuple[float, str]] = field(default_factory=dict)
    reload: set[int] = field(default_factory=set)
    plateau: dict[int, float] = field(default_factory=dict)
    missing: dict[int, float] = field(default_factory=dict)
    nan: set[int] = field(default_factory=set)


def _events(case: Case, keys: set[str], seed: int) -> Events:
    rng = random.Random(seed)
    events = Events()
    changeable = sorted(k for k in CHANGES if k in keys)
    groups = 1
    for step in range(STEPS):
        if groups < MAX_GROUPS and rng.random() < 0.002:
            shapes = [rng.choice(SHAPES) for _ in range(rng.randint(1, 2))]
            events.add_group[step] = (shapes, 10 ** rng.uniform(-3, -1.5))
            groups += 1
        if rng.random() < 0.01:
            name = rng.choice([*changeable, "lr"])
            value = 10 ** rng.uniform(-3, -1.5) if name == "lr" else rng.choice(CHANGES[name])
            events.change[step] = (rng.random(), name, value)
        if rng.random() < 0.01:
            events.engine[step] = (rng.random(), rng.choice(engines_of(case)))
        if rng.random() < 0.01:
            events.reload.add(step)
        if step % 50 == 49:
            events.plateau[step] = rng.uniform(0.5, 1.0)
        if rng.random() < 0.05:
            events.missing[step] = rng.random()
        if rng.random() < 0.005:
            events.nan.add(step)
    return events


class Run:
    def __init__(self, case: Case, events: Events, *, reloads: bool, switches: bool) -> None:
        self.case, self.events = case, events
        self.reloads, self.switches = reloads, switches
        generator = torch.Generator().manual_seed(0)
        self.params = [torch.randn(4, 3, generator=generator, dtype=torch.float64)
                       .requires_grad_()]
        self.optimizer = self._build([self.params], [])
        self.scheduler = ReduceOnPlateau(self.optimizer, patience=2, factor=0.5, min_lr=1e-5)
        self.layout = [1]  # parameters per group
        self.reloaded = self.reductions = 0

    def _build(self, groups: list[list[torch.Tensor]], extra_lrs: list[float]):
        options = {**self.case.kwargs, "skip_nonfinite": True, "foreach": False}
        optimizer = self.case.build(groups[0], **options)
        for params, lr in zip(groups[1:], extra_lrs):
            optimizer.add_param_group({"params": params, "lr": lr})
        return optimizer

    def _groups(self) -> list[list[torch.Tensor]]:
        groups, start = [], 0
        for count in self.layout:
            groups.append(self.params[start:start + count])
            start += count
        return groups

    def _reload(self) -> None:
        checkpoint = roundtrip({
            "params": [p.detach() for p in self.params],
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
        })
        self.params = [p.clone().requires_grad_() for p in checkpoint["params"]]
        lrs = [float(g["lr"]) for g in checkpoint["optimizer"]["param_groups"]]
        self.optimizer = self._build(self._groups(), lrs[1:])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler = ReduceOnPlateau(self.optimizer, patience=2, factor=0.5, min_lr=1e-5)
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.reloaded += 1

    def step(self, step: int) -> None:
        events = self.events
        if step in events.add_group:
            shapes, lr = events.add_group[step]
            generator = torch.Generator().manual_seed(10_000 + step)
            new = [torch.randn(s, generator=generator, dtype=torch.float64).requires_grad_()
                   for s in shapes]
            self.optimizer.add_param_group({"params": new, "lr": lr})
            self.params += new
            self.layout.append(len(new))
        groups = self.optimizer.param_groups
        if step in events.change:
            where, name, value = events.change[step]
            groups[int(where * len(groups))][name] = value
        if self.switches and step in events.engine:
            where, engine = events.engine[step]
            group = groups[int(where * len(groups))]
            group.update({k: v for k, v in ENGINE_FLAGS[engine].items() if k in group or v})
        if self.reloads and step in events.reload:
            self._reload()
        self._set_gradients(step)
        self.optimizer.step()
        if step in events.plateau:
            before = [float(g["lr"]) for g in self.optimizer.param_groups]
            self.scheduler.step(events.plateau[step])
            after = [float(g["lr"]) for g in self.optimizer.param_groups]
            self.reductions += after != before

    def _set_gradients(self, step: int) -> None:
        generator = torch.Generator().manual_seed(step)
        for p in self.params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if step in self.events.missing:
            self.params[int(self.events.missing[step] * len(self.params))].grad = None
        if step in self.events.nan:
            target = next((p for p in self.params if p.grad is not None and p.numel()), None)
            if target is not None:
                target.grad.view(-1)[0] = float("nan")

    def values(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]


@pytest.mark.slow
@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_ten_thousand_steps_of_changes_reloads_and_engine_switches(case):
    probe = case.build([torch.zeros(1, requires_grad=True)], **case.kwargs)
    keys = set(probe.param_groups[0])
    if case.build.__name__ == "AdamW":
        keys.discard("decoupled_weight_decay")
    events = _events(case, keys, seed=sum(map(ord, case.name)))
    stressed = Run(case, events, reloads=True, switches=True)
    same_switches = Run(case, events, reloads=False, switches=True)
    reference_engine = Run(case, events, reloads=False, switches=False)
    for step in range(STEPS):
        for run in (stressed, same_switches, reference_engine):
            run.step(step)
        if step % COMPARE_EVERY == COMPARE_EVERY - 1 or step == STEPS - 1:
            assert_equal_tensors(stressed.values(), same_switches.values(), what="parameter")
            error = max_relative_error(stressed.values(), reference_engine.values())
            assert error <= ENGINE_TOLERANCE, f"step {step}: {error:.3e} from the reference engine"
    assert stressed.reloaded >= 50
    assert len(stressed.optimizer.param_groups) >= 4
    assert stressed.optimizer.param_groups[0].get("nonfinite_skips", 0) >= 10
    assert {engine for _, engine in events.engine.values()} == set(engines_of(case))
    assert stressed.reductions >= 5
