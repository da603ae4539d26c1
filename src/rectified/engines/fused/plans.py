"""Fused steps kept from one step to the next: a param group's tensors handed to the kernel once.

A fused step over many small parameters is dominated by fixed costs, not arithmetic: finding
the parameters with gradients, looking up their state, and converting a Python list of
thousands of tensors for the kernel on every call (about 0.3 us a tensor, 1.3 ms for 1,000
parameters with two moments, a quarter of the whole step's memory traffic at 10M parameters).
A :class:`GroupPlan` does that work once. It keeps the group's tensors on the C++ side
(``torch.classes.rectified_fused.Plan``), and a later step only

* checks in Python that the group's parameter list, every state dict and every state tensor
  are still the same objects (identity, not values: a checkpoint load, a ZeRO-style
  ``optimizer.state[p] = saved`` or ``state["exp_avg"] = new`` all invalidate the plan);
* checks in C++ that every parameter has a dense gradient of its shape that shares no memory
  with a tensor the step writes, every parameter that had none still has none, every step
  counter holds the expected count, and every tensor still fits the kernel;
* traces the rule for the new step (so learning-rate schedules and changed hyperparameters
  apply as usual) and runs the program.

When any check fails the optimizer takes its general path for that step, which raises the
usual errors or handles the change, and makes a new plan afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import is_, itemgetter
from typing import Any, cast

import torch
from torch import Tensor

from rectified import formats
from rectified.engines.engine import update
from rectified.engines.fused import kernel
from rectified.engines.fused.program import trace
from rectified.engines.identity import same_objects
from rectified.engines.state import eps_underflows
from rectified.rules.base import UpdateRule

KERNEL_DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})
PLAIN = (Tensor, torch.nn.Parameter)


def _fits_kernel(tensor: Tensor | None) -> bool:
    """Whether the kernel can read ``tensor`` as it is (its C++ side checks it again each step):
    a plain tensor or Parameter (no subclass) on the CPU, contiguous, with no lazy bits."""
    return (
        tensor is not None
        and type(tensor) in PLAIN
        and tensor.is_cpu
        and tensor.dtype in KERNEL_DTYPES
        and tensor.layout == torch.strided
        and tensor.is_contiguous()
        and not tensor.is_neg()
        and not tensor.is_conj()
    )


class GroupPlan:
    """The fused step of one param group, valid while its parameters and state are unchanged."""

    def __init__(
        self,
        group: Mapping[str, Any],
        params: Sequence[Tensor],
        states: Sequence[dict[str, Any]],
        keys: Sequence[str],
        count: int,
    ) -> None:
        self.group = group
        self.group_params = tuple(group["params"])
        self.params = tuple(params)
        planned = set(map(id, params))
        self.frozen = tuple(p for p in self.group_params if id(p) not in planned)
        self.states = tuple(states)
        self.state_map: Mapping[Tensor, dict] | None = None  # the optimizer's, when it is known
        self.state_entries: tuple[dict, ...] = ()
        self.keys = tuple(keys)
        self.tensors = {key: tuple(map(itemgetter(key), states)) for key in (*keys, "step")}
        self.count = count  # what every step counter holds now
        self.dtypes = frozenset(p.dtype for p in params)
        self._handle: Any = None

    @classmethod
    def make(
        cls,
        group: Mapping[str, Any],
        params: Sequence[Tensor],
        states: Sequence[dict[str, Any]],
        keys: Sequence[str],
        counts: Sequence[int],
    ) -> GroupPlan | None:
        """A plan for the step just taken, or None where the kernel would not take every
        tensor in one bucket (mixed step counts, float64 beside other dtypes, a gradient of
        another dtype than its parameter, tensors off the CPU, non-contiguous, complex or
        distributed, tensors sharing memory, an ε that vanishes in a parameter's dtype)."""
        if not params or len(set(counts)) != 1 or not kernel.is_loaded():
            return None
        tensors = [*params, *(p.grad for p in params),
                   *(s[key] for s in states for key in keys)]
        if not all(map(_fits_kernel, tensors)):
            return None
        if len({t.dtype is torch.float64 for t in tensors}) != 1:
            return None
        if any(cast(Tensor, p.grad).dtype is not p.dtype for p in params):
            return None  # the kernel's plan reads a gradient of its parameter's dtype
        if eps_underflows(group, {p.dtype for p in params}):
            return None  # those parameters run foreach (see FusedEngine.apply)
        slots: list[list[Tensor]] = [
            list(params), [cast(Tensor, p.grad) for p in params],
            *([s[k] for s in states] for k in keys)]
        if kernel.overlapping(slots, (1,)):
            return None  # parameters sharing memory run one at a time, never in one pass
        plan = cls(group, params, states, keys, counts[0])
        plan.hand_over()
        return plan

    def matches(self, group: Mapping[str, Any], state: Mapping[Tensor, dict], keys) -> bool:
        """Whether the group and its state are the objects the plan was made from."""
        members = group["params"]
        if group is not self.group or tuple(keys) != self.keys:
            return False
        if not same_objects(members, self.group_params):
            return False
        # The whole state mapping, entry by entry in order: cheaper than looking up each
        # parameter (a tensor's hash is a Python call), and any entry replaced, added or removed
        # anywhere shows. Taken on the first check, right after the step that made the plan.
        if self.state_map is None:
            # Only once the entries are the plan's: a snapshot taken of a replaced entry would
            # make the plan match it for good.
            if not all(map(is_, map(state.get, self.params), self.states)):
                return False
            self.state_map, self.state_entries = state, tuple(state.values())
        if state is not self.state_map or not same_objects(state.values(), self.state_entries):
            return False
        try:
            return all(
                all(map(is_, map(itemgetter(key), self.states), tensors))
                for key, tensors in self.tensors.items()
            )
        except KeyError:
            return False

    def usable(self, rule: UpdateRule, group: Mapping[str, Any]) -> bool:
        """Whether the next step of ``group`` can run through the plan (after :meth:`matches`):
        the group still stores state plainly, its ε does not vanish, and :meth:`ready`."""
        return (formats.storage_of(group) is None and not eps_underflows(group, self.dtypes)
                and self.ready())

    def hand_over(self) -> None:
        """Give the tensors to the kernel's plan now, as they were when the plan was made
        (checked not to overlap): the memory each has then is what every later check expects."""
        # Slot 1 stands for the gradient, which `check` reads from the parameter each step.
        slots = [t for p, s in zip(self.params, self.states)
                 for t in (p, p, *(s[key] for key in self.keys))]
        self._handle = kernel.plan(
            slots, list(self.tensors["step"]), list(self.frozen), 2 + len(self.keys))

    def ready(self) -> bool:
        """Whether the gradients and counters allow the next step (see the module's doc)."""
        return bool(self._handle.check(float(self.count)))

    @property
    def grads(self) -> list[Tensor]:
        return [cast(Tensor, p.grad) for p in self.params]

    def step_(self, rule: UpdateRule, group: Mapping[str, Any]) -> bool:
        """Advance every counter and apply ``rule``'s step; call after :meth:`usable`. True:
        done; False: nothing was done (a counter no longer reads the count), the general path
        must run."""
        count = self.count + 1
        keys = self.keys

        def body(ops, *slots) -> None:
            update(rule, ops, group, keys, list(slots), count)

        program = trace(body, 2 + len(keys))
        if not self._handle.run(float(self.count), program.n_registers, program.code,
                                program.scalars):
            return False  # a counter moved since the check (a parameter in two groups)
        self.count = count
        return True
