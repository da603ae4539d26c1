from __future__ import annotations

from typing import Any

from torch import Tensor

from rectified.optim.base import RuleOptimizer
from rectified.rules.adagrad import ADAGRAD_RULE


class Adagrad(RuleOptimizer):
    summary = "AdaGrad; a drop-in for ``torch.optim.Adagrad``."
    rule = ADAGRAD_RULE

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        super().__init__(params, locals())
        for group in self.param_groups:  # made now, as torch.optim.Adagrad makes it
            self._stepper.fill_state(self.rule, group, self.state)

    def share_memory(self) -> None:
        """Move every parameter's ``sum`` into shared memory (as ``torch.optim.Adagrad``), for
        processes that train one model together (Hogwild)."""
        for group in self.param_groups:
            self._stepper.fill_state(self.rule, group, self.state)  # groups added later
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()
