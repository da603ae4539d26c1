"""The front-end every rule-based optimizer shares: a ``torch.optim.Optimizer`` that validates,
owns the per-parameter state and step counts, and hands the math to an engine.

What a subclass provides: ``rule`` (an :class:`~rectified.rules.base.UpdateRule`) and
:meth:`validate_group`. Everything a drop-in replacement of torch.optim needs (param groups,
named parameters, closures, hooks, ``state_dict``) comes from ``torch.optim.Optimizer``; what
this class adds:

* every group is validated when added and again at each step, and all groups are checked before
  any is updated, so a bad value never leaves a step half-applied;
* ``load_state_dict`` checks the saved state against the parameters before changing anything,
  copies every tensor (the optimizer never shares storage with the dict it loaded), and fills
  in hyperparameters the saved groups lack (e.g. a ``torch.optim.RAdam`` checkpoint has no
  ``threshold``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from rectified.engines import apply_rule, check_engine, engine_for, fused, is_distributed
from rectified.engines.plans import GroupPlan
from rectified.optim.validation import check_bool, check_state_dtype
from rectified.rules.base import UpdateRule

StateDict = dict[str, Any]


def advance_steps_(steps: list[Tensor]) -> list[int]:
    """Add 1 to every step tensor and return the new counts (one host read for all).

    With the fused kernel loaded, CPU counters are advanced in one call of it: a foreach add
    dispatches once per tensor on the CPU, which costs more than the step itself for many small
    parameters.
    """
    if not steps:
        return []
    if fused.available():
        try:
            return [int(v) for v in torch.ops.rectified_fused.advance_steps_(steps)]
        except RuntimeError:  # counters off the CPU: checked before any was changed
            pass
    torch._foreach_add_(steps, 1.0)
    try:
        values = torch.stack(steps).tolist()
    except RuntimeError:  # steps on different devices
        values = [t.item() for t in steps]
    return [int(v) for v in values]


class RuleOptimizer(torch.optim.Optimizer):
    """Base of the optimizers of :mod:`rectified.optim`."""

    rule: ClassVar[UpdateRule]

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self._validate(defaults)
        super().__init__(params, defaults)

    # -- validation --------------------------------------------------------------------------
    def validate_group(self, group: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming the first invalid hyperparameter of ``group``."""
        raise NotImplementedError

    def _validate(self, group: Mapping[str, Any]) -> None:
        self.validate_group(group)
        check_bool("skip_nonfinite", group.get("skip_nonfinite", False))
        check_state_dtype(group.get("state_dtype"))
        for flag in ("foreach", "fused"):
            if group.get(flag) not in (None, True, False):
                raise ValueError(f"Invalid {flag} value: {group[flag]!r} (expected None or a bool)")
        if group.get("fused") and group.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        merged = {**self.defaults, **param_group}
        self._validate(merged)
        super().add_param_group(param_group)
        self.prepare_group(param_group)

    def prepare_group(self, group: dict[str, Any]) -> None:
        """Hook for groups that need derived keys (e.g. AdaBound's ``base_lr``)."""

    # -- stepping ----------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Every group is checked before any is updated, so an error never half-applies a step.
        work = [(group, self._prepare(group)) for group in self.param_groups]
        if self._skips_nonfinite() and not _all_finite(
            [g for _, todo in work for g in _grads(todo)]
        ):
            for group in self.param_groups:
                group["nonfinite_skips"] = group.get("nonfinite_skips", 0) + 1
            return loss
        plans = {}
        for group, todo in work:
            plan = self._step_group(group, todo)
            if plan is not None:
                plans[id(group)] = plan
        self._fused_plans = plans
        return loss

    def _skips_nonfinite(self) -> bool:
        return any(group.get("skip_nonfinite", False) for group in self.param_groups)

    def _prepare(self, group: Mapping[str, Any]) -> GroupPlan | list[Tensor]:
        """The group's kept fused plan, if it still holds; else its parameters with gradients
        (validated)."""
        plan = getattr(self, "_fused_plans", {}).get(id(group))
        if plan is not None:
            self._validate(group)
            if (
                engine_for(group) == "fused"
                and plan.matches(group, self.state, self.rule.state_keys(group))
                and plan.ready()
            ):
                return plan
        return self._params_with_grad(group)

    def _params_with_grad(self, group: Mapping[str, Any]) -> list[Tensor]:
        self._validate(group)
        params = [p for p in group["params"] if p.grad is not None]
        check_engine(group, params)
        for p in params:
            grad = p.grad
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if grad.shape != p.shape:
                raise RuntimeError(
                    f"{type(self).__name__}: gradient shape {tuple(grad.shape)} does not match "
                    f"parameter shape {tuple(p.shape)}"
                )
        return params

    def _step_group(
        self, group: Mapping[str, Any], todo: GroupPlan | list[Tensor]
    ) -> GroupPlan | None:
        """Update the group; return the fused plan that can repeat this step, if any."""
        if isinstance(todo, GroupPlan):
            todo.step_(self.rule, group)
            return todo
        params = todo
        if not params:
            return None
        keys = self.rule.state_keys(group)
        key_set = frozenset(keys)
        states = [self._state_of(p, group, key_set) for p in params]
        steps = advance_steps_([s["step"] for s in states])
        grads = [p.grad for p in params]
        engine = engine_for(group)
        apply_rule(engine, self.rule, group, params, grads, states, steps)
        if engine != "fused":
            return None
        return GroupPlan.make(group, params, states, keys, steps)

    def _state_of(
        self, param: Tensor, group: Mapping[str, Any], keys: frozenset[str]
    ) -> dict[str, Any]:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=_get_scalar_dtype())
            state.update(self.rule.init_state(_state_template(param, group), group))
        elif not state.keys() >= keys:
            # A group may turn on an option that needs more state (e.g. amsgrad) mid-run. Fresh
            # state is only built then: building it every step would allocate and zero-fill
            # every state tensor on every step.
            fresh = self.rule.init_state(_state_template(param, group), group)
            for key, value in fresh.items():
                state.setdefault(key, value)
        return state

    # -- state_dict ----------------------------------------------------------------------------
    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = torch.tensor(
                        float(p_state["step"]), dtype=_get_scalar_dtype()
                    )

    def load_state_dict(self, state_dict: StateDict) -> None:
        check_state_dict(self, state_dict)
        self._fused_plans = {}
        state_dict = {
            **state_dict,
            "state": {k: _detached_copy(v) for k, v in state_dict["state"].items()},
        }
        super().load_state_dict(state_dict)
        self._restore_state_dtypes(state_dict)

    def _restore_state_dtypes(self, state_dict: StateDict) -> None:
        """Put back, in each group's ``state_dtype``, the state torch.optim cast to the
        parameter's dtype on load (which would round float32 moments of bfloat16 parameters)."""
        saved_groups = state_dict["param_groups"]
        for group, saved in zip(self.param_groups, saved_groups):
            if group.get("state_dtype") is None:
                continue
            for param, saved_id in zip(group["params"], saved["params"]):
                for key, value in state_dict["state"].get(saved_id, {}).items():
                    if key != "step" and isinstance(value, Tensor) and (
                        value.is_floating_point() or value.is_complex()
                    ):
                        self.state[param][key] = value.to(
                            device=param.device, dtype=_state_dtype(param, group)
                        )


def _state_dtype(param: Tensor, group: Mapping[str, Any]) -> torch.dtype:
    """The dtype of a parameter's state: the group's ``state_dtype`` (its complex counterpart
    for complex parameters), else the parameter's own."""
    dtype = group.get("state_dtype")
    if dtype is None or not (param.is_floating_point() or param.is_complex()):
        return param.dtype
    return _COMPLEX_OF[dtype] if param.is_complex() else dtype


_COMPLEX_OF = {torch.float16: torch.complex32, torch.bfloat16: torch.complex64,
               torch.float32: torch.complex64, torch.float64: torch.complex128}


def _state_template(param: Tensor, group: Mapping[str, Any]) -> Tensor:
    """What the rule builds fresh state like: the parameter, or an empty tensor of its shape in
    the group's ``state_dtype``."""
    dtype = _state_dtype(param, group)
    if dtype == param.dtype:
        return param
    return torch.empty_like(param, dtype=dtype, memory_format=torch.preserve_format)


def _grads(todo: GroupPlan | list[Tensor]) -> list[Tensor]:
    return todo.grads if isinstance(todo, GroupPlan) else [p.grad for p in todo]


def _all_finite(tensors: list[Tensor]) -> bool:
    """Whether no tensor holds a NaN or an infinity (one host read for the whole list).

    DTensors are checked on their local shards and the answer is agreed on by every rank of
    their device meshes, so all ranks skip a step together.
    """
    meshes = {id(t.device_mesh): t.device_mesh for t in tensors if is_distributed(t)}
    local = [t.to_local() if is_distributed(t) else t for t in tensors]
    local = [t for t in local if t.numel() > 0]
    # The max-abs norm is NaN or inf exactly when the tensor holds one.
    finite = (
        torch.stack(torch._foreach_norm(local, float("inf"))).isfinite().all()
        if local
        else torch.tensor(True)
    )
    if meshes:
        finite = _agree_on_meshes(finite, list(meshes.values()))
    return bool(finite)


def _agree_on_meshes(finite: Tensor, meshes: list[Any]) -> Tensor:
    """The logical AND of ``finite`` over every rank of ``meshes`` (an all-reduce of the min)."""
    import torch.distributed as dist

    for mesh in meshes:
        device = torch.device(mesh.device_type)
        if device.type == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
        flag = finite.to(device=device, dtype=torch.int32).reshape(1)
        for dim in range(mesh.ndim):
            dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=mesh.get_group(dim))
        finite = flag.bool().all()
    return finite


def _detached_copy(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detached_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_detached_copy(v) for v in value)
    return value


def check_state_dict(optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``state_dict`` does not fit ``optimizer``'s parameters.

    Checks the number of groups, the number of parameters per group and, for every saved state
    tensor but the ``step`` counter, that its shape is the parameter's shape and its dtype of the
    parameter's kind (complex for complex parameters, floating point for floating ones; a
    different float width is cast on load, as torch.optim does).
    """
    if "state" not in state_dict or "param_groups" not in state_dict:
        raise ValueError("state_dict must have the keys 'state' and 'param_groups'")
    groups, saved_groups = optimizer.param_groups, state_dict["param_groups"]
    if len(groups) != len(saved_groups):
        raise ValueError(
            f"loaded state dict has {len(saved_groups)} parameter groups, "
            f"the optimizer has {len(groups)}"
        )
    saved_state = state_dict["state"]
    for index, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(group["params"]) != len(saved["params"]):
            raise ValueError(
                f"loaded state dict's parameter group {index} has {len(saved['params'])} "
                f"parameters, the optimizer's has {len(group['params'])}"
            )
        for position, (param, saved_id) in enumerate(zip(group["params"], saved["params"])):
            for key, value in saved_state.get(saved_id, {}).items():
                if not isinstance(value, Tensor) or key == "step":
                    continue
                where = f"state {key!r} of parameter {position} in group {index}"
                if value.shape != param.shape:
                    raise ValueError(
                        f"{where} has shape {tuple(value.shape)}, the parameter has shape "
                        f"{tuple(param.shape)}"
                    )
                if value.is_complex() != param.is_complex() or (
                    param.is_floating_point() and not value.is_floating_point()
                ):
                    raise ValueError(
                        f"{where} has dtype {value.dtype}, the parameter has dtype {param.dtype}"
                    )
