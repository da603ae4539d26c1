from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from rectified.formats import DEFAULT_MIN_8BIT_SIZE
from rectified.optim.base import RuleOptimizer, StateDict
from rectified.optim.checkpoints import check_state_dict, detached_copy
from rectified.optim.eager import eager_step
from rectified.rules import nadam as nadam_rule
from rectified.rules.adam import betas_of

PRODUCT = "mu_product"


class NAdam(RuleOptimizer):
    summary = ("NAdam (Adam with Nesterov momentum); a drop-in for ``torch.optim.NAdam`` whose "
               "checkpoints load both ways: each parameter's state also holds torch's "
               "``mu_product`` (Π_t, a function of the step, written after each step).")
    rule = nadam_rule.NADAM_RULE
    scalar_state_keys: ClassVar[tuple[str, ...]] = (PRODUCT,)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = nadam_rule.DEFAULT_MOMENTUM_DECAY,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: torch.dtype | None = None,
        state_format: str | None = None,
        min_8bit_size: int = DEFAULT_MIN_8BIT_SIZE,
        param_rounding: str = "nearest",
        rounding_seed: int = 0,
    ) -> None:
        super().__init__(params, locals())

    @eager_step  # a graph break under torch.compile, as RuleOptimizer.step
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:  # first, so the gradients it makes are the ones stepped
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            products = [self._next_products(group) for group in self.param_groups]
        skips = sum(group.get("nonfinite_skips", 0) for group in self.param_groups)
        try:
            super().step()
        finally:
            for group in self.param_groups:
                group.pop(nadam_rule.PRODUCTS, None)
        if sum(group.get("nonfinite_skips", 0) for group in self.param_groups) == skips:
            for params, values in products:
                for p, value in zip(params, values):
                    self.state[p][PRODUCT] = value
        return loss

    def _next_products(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        """Π_t = Π_{t-1} μ_t of each parameter about to be stepped, as torch.optim.NAdam computes
        it; the group carries them by step count for the rule until the step is done."""
        params = [p for p in group["params"] if p.grad is not None]
        beta1, _ = betas_of(group)
        psi = group["momentum_decay"]
        states = [self.state.get(p, {}) for p in params]
        counts = [int(c) + 1 for c in torch.stack(
            [s["step"].reshape(()) if "step" in s else torch.zeros(()) for s in states]
        ).tolist()] if params else []
        by_count: dict[int, list[int]] = {}
        for index, count in enumerate(counts):
            by_count.setdefault(count, []).append(index)
        values: list[Tensor] = [torch.empty(())] * len(params)
        table = {}
        for count, indices in by_count.items():
            previous = [self._product(states[i], count - 1, beta1, psi) for i in indices]
            advanced = torch._foreach_mul(
                previous, nadam_rule.momentum_coefficient(count, beta1, psi))
            for i, value in zip(indices, advanced):
                values[i] = value
            table[count] = advanced[0].item()
        group[nadam_rule.PRODUCTS] = table
        return params, values

    @staticmethod
    def _product(state: dict[str, Any], count: int, beta1: float, psi: float) -> Tensor:
        """Π at ``count``: the parameter's ``mu_product``, or (fresh state, or state saved by
        another optimizer) μ_1 ⋯ μ_count at the group's β1, ψ."""
        value = state.get(PRODUCT)
        if isinstance(value, Tensor):
            return value.reshape(())
        return torch.tensor(nadam_rule.momentum_product(count, beta1, psi),
                            dtype=_get_scalar_dtype())

    def load_checked(self, state_dict: StateDict) -> None:
        # ``mu_product`` is one number per parameter, not a tensor of the parameter's shape:
        # it is checked here, and kept as saved (torch would cast it to the parameter's dtype).
        products = {saved_id: entry[PRODUCT]
                    for saved_id, entry in state_dict.get("state", {}).items()
                    if isinstance(entry, dict) and PRODUCT in entry}
        check_state_dict(self, state_dict)  # mu_product too, as one number per parameter
        without = {k: v for k, v in state_dict.items() if k != "state"}
        if "state" in state_dict:
            without["state"] = {saved_id: {k: v for k, v in entry.items() if k != PRODUCT}
                                for saved_id, entry in state_dict["state"].items()}
        super().load_checked(without)
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            for param, saved_id in zip(group["params"], saved["params"]):
                if saved_id in products:
                    value = products[saved_id]
                    self.state[param][PRODUCT] = (
                        detached_copy(value) if isinstance(value, Tensor)
                        else torch.tensor(value, dtype=_get_scalar_dtype()))
