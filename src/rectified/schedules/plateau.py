"""ReduceOnPlateau: the performance-dependent schedule of seed 002.

"Fixed η until the validation set stops improving, then halve η": after each evaluation,
``step(metric)`` compares the metric with the best one so far,

    improved = metric < best · (1 - threshold)     (mode "min", threshold_mode "rel")
               metric < best - threshold           (mode "min", threshold_mode "abs")
               metric > best · (1 + threshold)     (mode "max", threshold_mode "rel")
               metric > best + threshold           (mode "max", threshold_mode "abs")

and once more than ``patience`` evaluations in a row have not improved, every group's lr becomes
``max(lr · factor, min_lr)`` (changes smaller than ``eps`` are skipped); then ``cooldown``
evaluations are ignored before bad ones count again. This is torch's ReduceLROnPlateau rule
(the same decisions and learning rates); the default ``factor`` is 0.5, the seed's halving,
where torch's is 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, SupportsFloat

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rectified.schedules.validation import check_int, check_real

MODES = ("min", "max")
THRESHOLD_MODES = ("rel", "abs")


def _lrs(optimizer: Optimizer) -> list[float | Tensor]:
    """Each group's lr as a float (typed as torch's ``LRScheduler`` keeps them)."""
    return [float(group["lr"]) for group in optimizer.param_groups]


class ReduceOnPlateau(LRScheduler):
    """Multiplies the learning rates by ``factor`` when a metric stops improving.

    Args:
        optimizer: the optimizer whose learning rates are reduced (any ``torch.optim.Optimizer``,
            ``rectified.Lookahead`` and ``Ranger`` included).
        mode: "min" (lower metric is better, e.g. a loss) or "max" (e.g. an accuracy).
        factor: multiplier applied on a plateau, 0 < factor < 1 (default 0.5: halve).
        patience: evaluations without improvement tolerated before reducing (default 10).
        threshold: smallest change that counts as an improvement (default 1e-4).
        threshold_mode: "rel" (relative to the best metric) or "abs".
        cooldown: evaluations after a reduction during which bad ones are not counted.
        min_lr: lower bound of the lr, one number or one per param group (default 0).
        eps: reductions smaller than this are skipped (default 1e-8).

    The learning rates live in the optimizer's param groups (and its ``state_dict``); this
    object's ``state_dict`` holds the best metric and the counters.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.5,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if mode not in MODES:
            raise ValueError(f"Invalid mode value: {mode!r} (expected 'min' or 'max')")
        if threshold_mode not in THRESHOLD_MODES:
            raise ValueError(
                f"Invalid threshold_mode value: {threshold_mode!r} (expected 'rel' or 'abs')"
            )
        self.optimizer = optimizer
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.factor = check_real("factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = check_int("patience", patience, 0)
        self.threshold = check_real("threshold", threshold, 0.0)
        self.cooldown = check_int("cooldown", cooldown, 0)
        self.eps = check_real("eps", eps, 0.0)
        self.min_lrs = self._check_min_lr(min_lr)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = _lrs(optimizer)

    def _check_min_lr(self, min_lr: float | Sequence[float]) -> list[float]:
        """One lower bound per group; a single number also covers groups added later."""
        groups = len(self.optimizer.param_groups)
        if isinstance(min_lr, Sequence) and not isinstance(min_lr, str):
            if len(min_lr) != groups:
                raise ValueError(
                    f"Invalid min_lr value: {list(min_lr)!r} (expected {groups} values, "
                    "one per param group)"
                )
            self.default_min_lr = None
            return [check_real(f"min_lr[{i}]", v, 0.0) for i, v in enumerate(min_lr)]
        self.default_min_lr = check_real("min_lr", min_lr, 0.0)
        return [self.default_min_lr] * groups

    def is_better(self, metric: float, best: float) -> bool:
        """Whether ``metric`` improves on ``best`` by more than the threshold."""
        sign = -1.0 if self.mode == "min" else 1.0
        if self.threshold_mode == "rel":
            bound = best * (1.0 + sign * self.threshold)
        else:
            bound = best + sign * self.threshold
        return metric < bound if self.mode == "min" else metric > bound

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def step(self, metric: SupportsFloat) -> None:  # type: ignore[override]
        """Record one evaluation of the metric; reduce the learning rates on a plateau."""
        current = float(metric.item() if isinstance(metric, Tensor) else metric)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lrs()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _lrs(self.optimizer)

    def _reduce_lrs(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs) and self.default_min_lr is not None:
            self.min_lrs = [self.default_min_lr] * len(groups)
        if len(groups) != len(self.min_lrs):
            raise ValueError(
                f"Invalid min_lr value: {self.min_lrs!r} (the optimizer now has {len(groups)} "
                "param groups)"
            )
        for group, min_lr in zip(groups, self.min_lrs, strict=True):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(new)
                else:
                    group["lr"] = new

    def get_lr(self) -> list[float | Tensor]:
        return _lrs(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)

    def __repr__(self) -> str:
        return (
            f"ReduceOnPlateau(mode={self.mode!r}, factor={self.factor!r}, "
            f"patience={self.patience!r}, threshold={self.threshold!r}, "
            f"threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown!r}, "
            f"min_lr={self.min_lrs!r}, eps={self.eps!r})"
        )


PlateauSchedule = ReduceOnPlateau
