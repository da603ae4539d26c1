"""Tracing a rule into a program: the fused engine's only source of what to compute.

:class:`TracingOps` is a :class:`~rectified.rules.base.TensorListOps` whose lists are symbolic
registers: running ``rule.update_`` with it records each list operation as one instruction of
:mod:`.instructions`, with the per-step scalars the rule computed (bias corrections, r_t and
RAdam's branch, AdaBound's bounds) as operands. A named operation (``adam_step_``, ...) is
recorded as one instruction, which the kernel runs as one loop; nothing looks for patterns in
sequences of primitives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from typing import Any

from rectified.engines.fused.instructions import OPCODES, OPERATIONS


@dataclass(frozen=True)
class Register:
    """A symbolic tensor list: ``index`` < n_slots is an input list, others temporaries."""

    index: int


NONE = Register(-1)  # an absent optional list (e.g. AMSGrad's running max)


@dataclass
class Program:
    """A stream of instructions: opcode and registers in ``code``, scalars in ``scalars``."""

    n_slots: int
    n_registers: int = 0
    code: list[int] = field(default_factory=list)
    scalars: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.n_registers = self.n_slots

    def temporary(self) -> Register:
        self.n_registers += 1
        return Register(self.n_registers - 1)

    def emit(self, name: str, registers: tuple[Register, ...], scalars: tuple[Any, ...] = ()):
        code = OPCODES[name]
        operation = OPERATIONS[code]
        assert len(registers) == len(operation.registers), name
        assert len(scalars) == len(operation.scalars), name
        self.code += [code, *(r.index for r in registers)]
        self.scalars += [float(s) for s in scalars]


class TracingOps:
    """:class:`~rectified.rules.base.TensorListOps` that records into a :class:`Program`."""

    def __init__(self, program: Program) -> None:
        self.program = program

    def _new(self, name: str, *sources: Register, scalars: tuple[float, ...] = ()) -> Register:
        out = self.program.temporary()
        self.program.emit(name, (out, *sources), scalars)
        return out

    def neg(self, xs: Register) -> Register:
        return self._new("neg", xs)

    def clone(self, xs: Register) -> Register:
        return self._new("copy", xs)

    def sqrt(self, xs: Register) -> Register:
        return self._new("sqrt", xs)

    def add(self, xs: Register, ys: Register, alpha: float = 1.0) -> Register:
        return self._new("add", xs, ys, scalars=(alpha,))

    def add_(self, xs: Register, ys: Register, alpha: float = 1.0) -> None:
        self.program.emit("add", (xs, xs, ys), (alpha,))

    def add_scalar_(self, xs: Register, value: float) -> None:
        self.program.emit("add_scalar", (xs, xs), (value,))

    def mul_(self, xs: Register, value: float) -> None:
        self.program.emit("mul_scalar", (xs, xs), (value,))

    def mul_tensors_(self, xs: Register, ys: Register) -> None:
        self.program.emit("mul", (xs, xs, ys))

    def div_(self, xs: Register, value: float) -> None:
        self.program.emit("div_scalar", (xs, xs), (value,))

    def div_tensors_(self, xs: Register, ys: Register) -> None:
        self.program.emit("div", (xs, xs, ys))

    def reciprocal_(self, xs: Register) -> None:
        self.program.emit("reciprocal", (xs, xs))

    def lerp_(self, xs: Register, ys: Register, weight: float) -> None:
        self.program.emit("lerp", (xs, xs, ys), (weight,))

    def addcmul_(self, xs: Register, ys: Register, zs: Register, value: float) -> None:
        self.program.emit("addcmul", (xs, xs, ys, zs), (value,))

    def addcdiv_(self, xs: Register, ys: Register, zs: Register, value: float) -> None:
        self.program.emit("addcdiv", (xs, xs, ys, zs), (value,))

    def maximum_(self, xs: Register, ys: Register) -> None:
        self.program.emit("maximum", (xs, xs, ys))

    def clamp_(self, xs: Register, low: float, high: float) -> None:
        self.program.emit("clamp", (xs, xs), (low, high))

    def copy_(self, xs: Register, ys: Register) -> None:
        self.program.emit("copy", (xs, ys))

    def adam_step_(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step) -> None:
        registers = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs or NONE)
        self.program.emit("adam_step_", registers, astuple(step))

    def bounded_step_(self, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, step) -> None:
        registers = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs or NONE)
        self.program.emit("bounded_step_", registers, astuple(step))

    def lookahead_sync_(self, slows: Register, params: Register, alpha: float) -> None:
        self.program.emit("lookahead_sync_", (slows, params), (alpha,))


def trace(body: Callable[..., None], n_slots: int) -> Program:
    """The program of ``body(ops, *slots)``, with ``slots`` the registers of the input lists."""
    program = Program(n_slots)
    body(TracingOps(program), *(Register(i) for i in range(n_slots)))
    return program


def instructions(program: Program) -> list[tuple[str, tuple[int, ...], tuple[float, ...]]]:
    """The program as (operation, registers, scalars) triples."""
    out, at, scalar_at = [], 0, 0
    while at < len(program.code):
        operation = OPERATIONS[program.code[at]]
        n, k = len(operation.registers), len(operation.scalars)
        registers = tuple(program.code[at + 1 : at + 1 + n])
        out.append((operation.name, registers, tuple(program.scalars[scalar_at : scalar_at + k])))
        at, scalar_at = at + 1 + n, scalar_at + k
    return out
