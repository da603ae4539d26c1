"""A run is data: a :class:`RunSpec` names the task, the optimizer recipe, its hyperparameters,
the seed and the budget, and round-trips through JSON. ``resolve()`` fills every default, so
the JSON written next to a run says exactly what ran."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

import torch

from rectified.experiments import recipes, tasks


class Resolved(NamedTuple):
    """The values :meth:`RunSpec.resolve` fills in, as the numbers they then are."""

    lr: float
    batch_size: int
    eval_every: int
    warmup: int


@dataclass(frozen=True)
class RunSpec:
    task: str
    optimizer: str  # a recipe of :mod:`rectified.experiments.recipes`
    lr: float | None = None  # None: the recipe's default
    seed: int = 0
    steps: int = 300
    batch_size: int | None = None  # global batch; None: the task's default
    eval_every: int | None = None  # None: steps // 10
    warmup: int | None = None  # warmup steps, or adam-2k's extra v-only iterations
    task_options: dict[str, Any] = field(default_factory=dict)
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    monitor_steps: int = 0  # record |gradient| histograms over the first N steps
    group: str = ""  # a free label (the reproduce suite puts the section here)

    def resolve(self) -> RunSpec:
        """This spec with every default filled in; bad values raise ``ValueError``."""
        task = tasks.get_task(self.task)
        recipe = recipes.get_recipe(self.optimizer)
        lr = recipe.lr if self.lr is None else self.lr
        recipes.check_lr(lr)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        batch_size = task.batch_size if self.batch_size is None else self.batch_size
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        eval_every = max(1, self.steps // 10) if self.eval_every is None else self.eval_every
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {eval_every}")
        if not recipe.uses_warmup:
            warmup = 0
        elif self.warmup is None:
            warmup = max(1, self.steps // 10)
        else:
            warmup = self.warmup
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        if self.monitor_steps < 0:
            raise ValueError(f"monitor_steps must be >= 0, got {self.monitor_steps}")
        task_options = {**task.resolve_options(self.task_options)}
        # building the optimizer on a stand-in parameter checks every option before any run
        prepared = recipes.build(self.optimizer, [torch.zeros(1, requires_grad=True)], lr,
                                 warmup, self.optimizer_options)
        if self.monitor_steps and "betas" not in prepared.optimizer.param_groups[0]:
            raise ValueError(f"monitor_steps needs an Adam-family optimizer, not "
                             f"{self.optimizer!r}")
        # a JSON round trip makes tuples lists, so a spec equals its reloaded spec.json
        return replace(self, lr=float(lr), batch_size=batch_size, eval_every=eval_every,
                       warmup=warmup, task_options=json.loads(json.dumps(task_options)),
                       optimizer_options=json.loads(json.dumps(self.optimizer_options)))

    @property
    def resolved(self) -> Resolved:
        """lr, batch size, evaluation interval and warmup of a resolved spec."""
        if (self.lr is None or self.batch_size is None or self.eval_every is None
                or self.warmup is None):
            raise ValueError("the run spec is not resolved (call resolve() first)")
        return Resolved(self.lr, self.batch_size, self.eval_every, self.warmup)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"run spec has unknown field {unknown[0]!r}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:8]

    @property
    def run_id(self) -> str:
        """A folder name that reads as the run and is unique to the whole spec."""
        warmup = f"_w{self.warmup}" if self.warmup else ""
        return f"{self.task}_{self.optimizer}_lr{self.lr:g}{warmup}_s{self.seed}_{self.digest}"
