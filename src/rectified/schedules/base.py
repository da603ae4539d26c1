"""What a schedule is: a pure function of the step.

Step convention (every schedule and :class:`~rectified.schedules.ScheduleLR` follow it): the
value at step ``t`` is the one applied by the ``t``-th optimizer update, counting from 1 as
Adam and RAdam count their own step. Step 0 means "before the first update": it is accepted
(warmups are 0 there, decays are at their start value) but the adapter never applies it.

Decays count the updates already made, ``s = max(t - 1, 0)``, so their first update gets the
start value, as torch.optim.lr_scheduler does; warmups are written in ``t`` itself, so that the
first update already has a non-zero learning rate and the warmup ends exactly at update ``T_w``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias

from rectified.schedules.validation import check_step

Schedule: TypeAlias = Callable[[int], float]
"""A schedule maps the step t (t-th update, from 1) to a learning rate or a multiplier of it."""


def elapsed(step: int) -> int:
    """s = max(t - 1, 0): the updates made before update t (the clock of the decays)."""
    return max(step - 1, 0)


class StepSchedule(ABC):
    """Base of the schedules: validates the step, then evaluates :meth:`value`.

    Subclasses store their (validated) arguments as attributes named like the constructor's
    parameters and list them in ``fields``; ``__repr__`` and ``__eq__`` are built from them.
    """

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]

    def __call__(self, step: int) -> float:
        return self.value(check_step(step))

    @abstractmethod
    def value(self, step: int) -> float:
        """The schedule at a validated step >= 0."""

    def arguments(self) -> dict[str, Any]:
        return {field: getattr(self, field) for field in self.fields}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.arguments().items())
        return f"{self.name}({args})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.arguments() == other.arguments()

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))
