"""The front-end every rule-based optimizer shares: a ``torch.optim.Optimizer`` that checks its
hyperparameters, owns the per-parameter state, and hands each group's step to the engines.

A subclass provides ``rule`` (an :class:`~rectified.rules.base.UpdateRule`), ``summary`` (the
docstring's first paragraph) and an ``__init__`` whose signature declares its hyperparameters
and defaults and which passes ``locals()`` on: ``super().__init__(params, locals())``. The
defaults dict, the checks (by name, :mod:`.hyperparameters`) and the docstring's Args all come
from that signature. ``check_group`` adds checks that relate several values.

Everything a drop-in replacement of torch.optim needs (param groups, named parameters,
closures, hooks, ``state_dict``) comes from ``torch.optim.Optimizer``; what this class adds:

* every group is checked when added and again at each step where one of its values changed,
  and all groups are checked before any is updated, so a bad value never leaves a step
  half-applied;
* ``load_state_dict`` checks the saved state against the parameters before changing anything,
  copies every tensor (the optimizer never shares storage with the dict it loaded), and fills
  in hyperparameters the saved groups lack (e.g. a ``torch.optim.RAdam`` checkpoint has no
  ``threshold``).
"""

from __future__ import annotations

import inspect
import types
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype

from rectified import formats
from rectified.engines import GroupStep, Stepper, state_dtype
from rectified.formats import check_storage, storage_of
from rectified.optim._doc import arguments, with_algorithm
from rectified.optim.checkpoints import check_state_dict, detached_copy
from rectified.optim.eager import eager_step
from rectified.optim.flags import check_capturable_devices, check_engine_flags
from rectified.optim.hyperparameters import check_hyperparameters
from rectified.optim.nonfinite import all_finite
from rectified.rules.base import UpdateRule

StateDict = dict[str, Any]
Init = TypeVar("Init", bound=Callable[..., None])


def with_defaults(init: Init, **defaults: Any) -> Init:
    """``init`` with other default values (e.g. AdamW: Adam with weight_decay=1e-2), the same
    function otherwise, so its signature shows the new defaults."""
    names = list(inspect.signature(init).parameters)
    unknown = set(defaults) - set(names)
    if unknown:
        raise TypeError(f"not parameters of {init.__qualname__}: {sorted(unknown)}")
    code = init.__code__
    positional = names[: code.co_argcount]
    old = init.__defaults__ or ()
    first = len(positional) - len(old)
    new_positional = tuple(defaults.get(name, value)
                           for name, value in zip(positional[first:], old))
    copy = types.FunctionType(code, init.__globals__, init.__name__, new_positional,
                              init.__closure__)
    copy.__kwdefaults__ = {**(init.__kwdefaults__ or {}),
                           **{k: v for k, v in defaults.items() if k not in positional}}
    copy.__annotations__ = dict(init.__annotations__)
    copy.__qualname__ = init.__qualname__
    return copy  # type: ignore[return-value]


def _fingerprint(value: Any) -> Any:
    """What tells whether a hyperparameter changed (a tensor changes in place: its version)."""
    if isinstance(value, Tensor):
        return (id(value), value._version)
    if isinstance(value, list | tuple):
        return tuple(map(_fingerprint, value))
    return value


def step_counter(state: dict[str, Any]) -> Tensor:
    """A parameter's ``step`` as the engines keep it: a float tensor. A checkpoint of
    ``torch.optim.SGD`` has none; its momentum buffer then says whether the first step was taken
    (the only count SGD's rule reads)."""
    step = state.get("step")
    if torch.is_tensor(step):
        # An integer or float16 counter (torch keeps what it loads) counts here in float32 or
        # float64: float16 stops at 2048, and integer counters fail the engines' float updates.
        return step if step.dtype in (torch.float32, torch.float64) else step.to(
            _get_scalar_dtype())
    if step is None:
        step = 1.0 if any(torch.is_tensor(v) for v in state.values()) else 0.0
    return torch.tensor(float(step), dtype=_get_scalar_dtype())


class RuleOptimizer(torch.optim.Optimizer):
    """Base of the optimizers of :mod:`rectified.optim`."""

    rule: ClassVar[UpdateRule]
    summary: ClassVar[str] = ""
    arg_docs: ClassVar[dict[str, str]] = {}
    # per-parameter state entries that are one number, not a tensor of the parameter's shape
    scalar_state_keys: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Only the classes that declare their own summary: subclasses made by users or trainers
        # (Lightning wraps the class it is given in one) keep the docstring they inherit.
        if "summary" in cls.__dict__:
            cls.__doc__ = with_algorithm(
                cls.summary, type(cls.rule).__module__, arguments(cls.__init__, cls.arg_docs))

    def __init__(self, params: Iterable[Any], hyperparameters: Mapping[str, Any]) -> None:
        defaults = {name: value for name, value in hyperparameters.items()
                    if name not in ("self", "params", "__class__")}
        self._check(defaults)
        self._declared = frozenset(defaults)
        self._checked: dict[int, Any] = {}
        self._stepper = Stepper()
        super().__init__(params, defaults)

    # -- checks ------------------------------------------------------------------------------
    def check_group(self, group: Mapping[str, Any]) -> None:
        """Checks that relate several values of ``group`` (each value alone is checked by
        name); raise ``ValueError`` naming what does not fit."""

    def _check(self, group: Mapping[str, Any]) -> None:
        check_hyperparameters(group, self.defaults if hasattr(self, "defaults") else group)
        check_storage(group)
        self.check_group(group)
        check_engine_flags(group)

    def _check_if_changed(self, group: Mapping[str, Any]) -> None:
        fingerprint = tuple((name, _fingerprint(group.get(name))) for name in self.defaults)
        if self._checked.get(id(group)) != fingerprint:
            self._check(group)
            before = dict(self._checked.get(id(group), ()))
            self._checked[id(group)] = fingerprint
            if before and any(before.get(key) != group.get(key) for key in formats.STORAGE_KEYS):
                self._convert_state(group)

    def _convert_state(self, group: Mapping[str, Any]) -> None:
        """Bring the group's moments into the ``state_format`` it now asks for."""
        storage = storage_of(group)
        for param in group["params"]:
            entry = self.state.get(param)
            if entry:
                formats.convert(entry, param, list(entry), storage, state_dtype(param, group))

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._check({**self.defaults, **param_group})
        super().add_param_group(param_group)
        self.prepare_group(param_group)

    def prepare_group(self, group: dict[str, Any]) -> None:
        """Hook for groups that need derived keys (e.g. AdaBound's ``base_lr``)."""

    # -- stepping ----------------------------------------------------------------------------
    @eager_step  # a graph break under torch.compile (see rectified.optim.eager)
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss.

        The step runs without autograd, except in groups with ``differentiable=True``: there
        it runs on the reference engine with grad mode on, so the updated parameters carry the
        graph of the step back to the parameters, gradients and state it started from.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            steps = self._prepare_steps()
            if self._skips_nonfinite() and not all_finite(
                [g for s in steps for g in (*s.grads, *s.sparse_values)]
            ):
                for group in self.param_groups:
                    group["nonfinite_skips"] = group.get("nonfinite_skips", 0) + 1
                return loss
        for group_step in steps:
            with torch.set_grad_enabled(bool(group_step.group.get("differentiable"))):
                group_step.run()
        return loss

    def _prepare_steps(self) -> list[GroupStep]:
        """Every group's step, checked: every group is checked before any is updated, so an
        error never half-applies a step."""
        for group in self.param_groups:
            self._check_if_changed(group)
        for group in self.param_groups:
            check_capturable_devices(group)
        owner = type(self).__name__
        return [
            self._stepper.engine("reference").prepare(self.rule, group, self.state, owner)
            if group.get("differentiable")
            else self._stepper.prepare(self.rule, group, self.state, owner)
            for group in self.param_groups
        ]

    def _skips_nonfinite(self) -> bool:
        return any(group.get("skip_nonfinite", False) for group in self.param_groups)

    # -- state_dict ----------------------------------------------------------------------------
    def __setstate__(self, state: dict[str, Any]) -> None:
        declared = frozenset(state.get("defaults", self.__dict__.get("defaults", {})))
        super().__setstate__(state)  # torch.optim adds ``differentiable`` to the defaults
        self.__dict__.setdefault("_declared", declared)
        self.__dict__.setdefault("_checked", {})
        self.__dict__.setdefault("_stepper", Stepper())
        for group in self.param_groups:
            # Only what this class's constructor declares: a loaded state_dict() then equals
            # the saved one.
            for key in self._declared:
                group.setdefault(key, self.defaults[key])
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state:
                    p_state["step"] = step_counter(p_state)
                    for key, value in p_state.items():
                        if torch.is_tensor(value) and value.is_sparse:  # torch's SGD buffer
                            p_state[key] = value.to_dense()

    def load_state_dict(self, state_dict: StateDict) -> None:
        """torch.optim's load, with the saved state checked against the parameters before
        anything changes. The load pre-hooks run first (they may adapt the dict, e.g. reorder
        it by ``param_names``), the post-hooks last, when the state is as loaded."""
        state_dict = state_dict.copy()
        for hook in list(self._optimizer_load_state_dict_pre_hooks.values()):
            adapted = hook(self, state_dict)
            if adapted is not None:
                state_dict = adapted
        hooks = (self._optimizer_load_state_dict_pre_hooks,
                 self._optimizer_load_state_dict_post_hooks)
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()  # run above, not again
        self._optimizer_load_state_dict_post_hooks = OrderedDict()  # run below, once loaded
        try:
            self.load_checked(state_dict)
        finally:
            (self._optimizer_load_state_dict_pre_hooks,
             self._optimizer_load_state_dict_post_hooks) = hooks
        for post_hook in list(hooks[1].values()):
            post_hook(self)

    def load_checked(self, state_dict: StateDict) -> None:
        """The load itself (what :meth:`load_state_dict` does between the hooks): check, copy,
        load, restore the state's dtypes and formats."""
        check_state_dict(self, state_dict)
        self._stepper.forget()
        self._checked.clear()
        state_dict = {**state_dict, "state": detached_copy(dict(state_dict["state"]))}
        # How state is stored belongs to this optimizer, not to the checkpoint: the saved
        # moments are converted to it (a float32 checkpoint loads into an 8-bit optimizer).
        storage = [{key: group[key] for key in formats.STORAGE_KEYS if key in group}
                   for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, kept in zip(self.param_groups, storage):
            group.update(kept)
        self._restore_state(state_dict)

    def _restore_state(self, state_dict: StateDict) -> None:
        """Put back the state torch.optim cast to the parameter's dtype on load: in each
        group's ``state_dtype`` (it would round float32 moments of bfloat16 parameters), and
        8-bit codes and scales as saved; then bring the moments into the group's
        ``state_format`` (a checkpoint of another format)."""
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            storage = storage_of(group)
            saved_entries = [state_dict["state"].get(i, {}) for i in saved["params"]]
            plain = group.get("state_dtype") is None and group.get("state_format") is None
            if plain and not any(formats.is_scales(key, entry)
                                 for entry in saved_entries for key in entry):
                continue
            for param, saved_id in zip(group["params"], saved["params"]):
                saved_entry = state_dict["state"].get(saved_id, {})
                entry = self.state.get(param)
                if not saved_entry or entry is None:
                    continue
                dtype = state_dtype(param, group)
                for key, value in saved_entry.items():
                    if key == "step" or not isinstance(value, Tensor):
                        continue
                    encoded = formats.is_scales(key, saved_entry) or (
                        formats.scales_key(key) in saved_entry)
                    if encoded:
                        entry[key] = value.to(param.device)
                    elif value.is_floating_point() or value.is_complex():
                        entry[key] = value.to(device=param.device, dtype=dtype)
                formats.convert(entry, param, list(saved_entry), storage, dtype)
