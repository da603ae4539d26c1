"""Chaining schedules: piece i runs from boundary b_i to b_{i+1} on its own clock.

    join([f_0, ..., f_n], [b_1, ..., b_n])(t) = f_i(t - b_i)   for b_i < t <= b_{i+1}

with b_0 = 0 and b_{n+1} = ∞: the first b_1 updates follow f_0, update b_1 + 1 is update 1 of
f_1, and so on (optax's join_schedules; torch's SequentialLR with milestones = boundaries).
Step 0 evaluates f_0 at 0.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from rectified.schedules.base import Schedule, StepSchedule
from rectified.schedules.validation import check_increasing_steps


class Join(StepSchedule):
    """Pieces chained at boundaries, each piece restarted at its own step 1."""

    name = "join"
    fields = ("schedules", "boundaries")

    def __init__(self, schedules: Sequence[Schedule], boundaries: Sequence[int]) -> None:
        if isinstance(schedules, str) or not isinstance(schedules, Sequence) or not schedules:
            raise ValueError(
                f"Invalid schedules value: {schedules!r} (expected a non-empty sequence)"
            )
        for i, schedule in enumerate(schedules):
            if not callable(schedule):
                raise ValueError(f"Invalid schedules[{i}] value: {schedule!r} (not callable)")
        self.schedules = list(schedules)
        self.boundaries = list(check_increasing_steps("boundaries", boundaries))
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"Invalid boundaries value: {self.boundaries!r} (expected "
                f"{len(self.schedules) - 1} boundaries for {len(self.schedules)} schedules)"
            )

    def value(self, step: int) -> float:
        index = bisect_left(self.boundaries, step)
        start = self.boundaries[index - 1] if index > 0 else 0
        return self.schedules[index](step - start)


join = Join
sequence = Join
