"""ScheduleLR: any schedule as a ``torch.optim.lr_scheduler.LRScheduler``.

Group g's learning rate for update t (counted from 1) is ``base_lr_g · schedule_g(t)``, where
``base_lr_g`` is the group's ``initial_lr`` (its lr when the scheduler was created). After
``k`` calls of ``scheduler.step()`` the optimizer's next update is update ``k + 1``, so
``last_epoch`` (torch's counter, -1 before the initial step) maps to ``t = last_epoch + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rectified.schedules.base import Schedule


def _schedules_per_group(
    optimizer: Optimizer, schedule: Schedule | Sequence[Schedule]
) -> list[Schedule]:
    groups = len(optimizer.param_groups)
    if callable(schedule):
        return [schedule] * groups
    if isinstance(schedule, str) or not isinstance(schedule, Sequence):
        raise ValueError(
            f"Invalid schedule value: {schedule!r} (expected a schedule or a list of them)"
        )
    if len(schedule) != groups:
        raise ValueError(
            f"Invalid schedule value: {len(schedule)} schedules for {groups} param groups"
        )
    for i, piece in enumerate(schedule):
        if not callable(piece):
            raise ValueError(f"Invalid schedule[{i}] value: {piece!r} (not callable)")
    return list(schedule)


class ScheduleLR(LRScheduler):
    """Sets each param group's lr to ``initial_lr · schedule(t)`` before update t.

    Works with any ``torch.optim.Optimizer`` whose ``param_groups`` hold the learning rates:
    ``rectified``'s and torch.optim's optimizers, and ``rectified.Lookahead``/``Ranger``
    (whose ``param_groups`` are the inner optimizer's).

    Args:
        optimizer: the optimizer whose learning rates are set.
        schedule: one schedule for every group, or a list with one schedule per group.
        last_epoch: torch's counter of ``step()`` calls made before; -1 starts a new run.

    ``state_dict`` holds the counters and base learning rates but not the schedules (they are
    code, rebuilt with the scheduler; the dict stays loadable with ``weights_only=True``).
    ``load_state_dict`` also sets the groups' lr for the restored step, so it does not matter
    whether the optimizer's state is loaded before or after.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: Schedule | Sequence[Schedule],
        last_epoch: int = -1,
    ) -> None:
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, int) or last_epoch < -1:
            raise ValueError(
                f"Invalid last_epoch value: {last_epoch!r} (expected an integer >= -1)"
            )
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.schedules = _schedules_per_group(optimizer, schedule)
        super().__init__(optimizer, last_epoch)

    @property
    def step_index(self) -> int:
        """t, the index (from 1) of the optimizer update the current lrs are for."""
        return self.last_epoch + 1

    def get_lr(self) -> list[float | Tensor]:
        t = self.step_index
        return [
            base_lr * schedule(t)
            for base_lr, schedule in zip(self.base_lrs, self.schedules, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        skipped = ("optimizer", "schedules")
        return {key: value for key, value in self.__dict__.items() if key not in skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "schedules"})
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [
            group["lr"].clone() if isinstance(group["lr"], Tensor) else group["lr"]
            for group in self.optimizer.param_groups
        ]

    def __repr__(self) -> str:
        return f"ScheduleLR({self.schedules!r}, last_epoch={self.last_epoch})"
