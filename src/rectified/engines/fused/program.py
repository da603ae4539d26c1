"""The fused engine: a rule's step traced once per call into a short elementwise program, then
run by one C++ kernel over every tensor of a bucket in a single parallel pass.

The rule itself is the program's only source. :class:`TracingOps` is a
:class:`~rectified.rules.base.TensorListOps` whose lists are symbolic registers: running
``rule.update_`` with it records each list operation as an instruction, with the per-step scalars
the rule computed (bias corrections, r_t and RAdam's branch, AdaBound's bounds) as operands. The
kernel (``csrc/fused_cpu.cpp``) then walks all tensors in chunks of a few thousand elements and
runs the whole program on each chunk while it is in cache, so each parameter and state tensor is
read and written once per step, and no temporary the size of a parameter is allocated. The
kernel also recognises the run of instructions every Adam-family rule emits for its moments and
adaptive step (lerp, scale, addcmul, [max], sqrt, [div], add, addcdiv) and executes it as one loop
that computes the same values, so that common case never passes over a chunk twice.

Arithmetic runs in float32 for float32, bfloat16 and float16 tensors (rounded once, when stored)
and in float64 for float64 ones. Tensors the kernel cannot take (not on the CPU, not
contiguous) are handed back and run by the foreach engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rectified.engines import extension

# Opcodes of csrc/fused_cpu.cpp.
NEG, COPY, SQRT, ADD, ADD_SCALAR, MUL_SCALAR, MUL, DIV_SCALAR, DIV = range(9)
RECIPROCAL, LERP, ADDCMUL, ADDCDIV, MAXIMUM, CLAMP = range(9, 15)
ADAM_STEP, BOUND_STEP = 100, 101  # runs the kernel recognises and executes as one loop


@dataclass(frozen=True)
class Register:
    """A symbolic tensor list: slot ``index`` < n_slots is an input list, others temporaries."""

    index: int


@dataclass
class Program:
    """Instructions (op, dst, a, b, c) with two float operands each, over numbered registers."""

    n_slots: int
    n_registers: int = 0
    code: list[int] = field(default_factory=list)
    scalars: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.n_registers = self.n_slots

    def temporary(self) -> Register:
        self.n_registers += 1
        return Register(self.n_registers - 1)

    def emit(self, op: int, dst: Register, a: Register, b: Register | None = None,
             c: Register | None = None, s0: float = 0.0, s1: float = 0.0) -> None:
        self.code += [op, dst.index, a.index, (b or a).index, (c or a).index]
        self.scalars += [float(s0), float(s1)]


class TracingOps:
    """:class:`~rectified.rules.base.TensorListOps` that records into a :class:`Program`."""

    def __init__(self, program: Program) -> None:
        self.program = program

    def _new(self, op: int, *sources: Register, s0: float = 0.0) -> Register:
        out = self.program.temporary()
        self.program.emit(op, out, *sources, s0=s0)
        return out

    def neg(self, xs: Register) -> Register:
        return self._new(NEG, xs)

    def clone(self, xs: Register) -> Register:
        return self._new(COPY, xs)

    def sqrt(self, xs: Register) -> Register:
        return self._new(SQRT, xs)

    def add(self, xs: Register, ys: Register, alpha: float = 1.0) -> Register:
        return self._new(ADD, xs, ys, s0=alpha)

    def add_(self, xs: Register, ys: Register, alpha: float = 1.0) -> None:
        self.program.emit(ADD, xs, xs, ys, s0=alpha)

    def add_scalar_(self, xs: Register, value: float) -> None:
        self.program.emit(ADD_SCALAR, xs, xs, s0=value)

    def mul_(self, xs: Register, value: float) -> None:
        self.program.emit(MUL_SCALAR, xs, xs, s0=value)

    def mul_tensors_(self, xs: Register, ys: Register) -> None:
        self.program.emit(MUL, xs, xs, ys)

    def div_(self, xs: Register, value: float) -> None:
        self.program.emit(DIV_SCALAR, xs, xs, s0=value)

    def div_tensors_(self, xs: Register, ys: Register) -> None:
        self.program.emit(DIV, xs, xs, ys)

    def reciprocal_(self, xs: Register) -> None:
        self.program.emit(RECIPROCAL, xs, xs)

    def lerp_(self, xs: Register, ys: Register, weight: float) -> None:
        self.program.emit(LERP, xs, xs, ys, s0=weight)

    def addcmul_(self, xs: Register, ys: Register, zs: Register, value: float) -> None:
        self.program.emit(ADDCMUL, xs, xs, ys, zs, s0=value)

    def addcdiv_(self, xs: Register, ys: Register, zs: Register, value: float) -> None:
        self.program.emit(ADDCDIV, xs, xs, ys, zs, s0=value)

    def maximum_(self, xs: Register, ys: Register) -> None:
        self.program.emit(MAXIMUM, xs, xs, ys)

    def clamp_(self, xs: Register, low: float, high: float) -> None:
        self.program.emit(CLAMP, xs, xs, s0=low, s1=high)

    def copy_(self, xs: Register, ys: Register) -> None:
        self.program.emit(COPY, xs, ys)


def trace(body: Callable[..., None], n_slots: int) -> Program:
    """The program of ``body(ops, *slots)``, with ``slots`` the registers of the input lists."""
    program = Program(n_slots)
    body(TracingOps(program), *(Register(i) for i in range(n_slots)))
    return program


def available(build_if_missing: bool = False) -> bool:
    """Whether the kernel is loaded (from the build cache; compiled first if asked)."""
    return extension.load(build_if_missing)


def run(program: Program, slots: Sequence[Sequence[Tensor]]) -> list[int]:
    """Run ``program`` with ``slots[s][i]`` as input list s of parameter i.

    Returns the indices of the parameters the kernel could not take (left untouched).
    """
    flat = [x for tensors in zip(*slots) for x in tensors]
    if not flat:
        return []
    return torch.ops.rectified_fused.run_program_(
        flat, program.n_slots, program.n_registers, program.code, program.scalars
    )


def decoded_ops(program: Program) -> list[int]:
    """The opcodes the kernel runs for ``program``, after it has fused the Adam-family runs."""
    return list(torch.ops.rectified_fused.decoded_ops(
        program.n_slots, program.n_registers, program.code, program.scalars))


def apply_ops_(body: Callable[..., None], slots: Sequence[Sequence[Tensor]]) -> list[int]:
    """Trace ``body(ops, *lists)`` and run it fused over ``slots``; return the skipped indices."""
    return run(trace(body, len(slots)), slots)
