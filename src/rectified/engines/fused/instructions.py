"""The fused engine's instruction set, declared once: the tracer emits these instructions and
the C++ kernel reads the same table through a header generated from it at build time
(:func:`cpp_header`), so opcodes, operand counts and operand names are never kept in step by
hand.

An instruction is its opcode, then its registers (tensor lists), then its scalars. The
primitives are the elementwise list operations of
:class:`~rectified.rules.base.TensorListOps` (destination register first). The named
operations are whole steps whose scalars are the fields of the rules' operand classes
(:class:`~rectified.rules.moments.AdamStep`, ...), in field order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from rectified.rules import moments
from rectified.rules.adabound import BoundedStep
from rectified.rules.moments import AdamStep


@dataclass(frozen=True)
class Operation:
    name: str  # the TensorListOps method it records
    registers: tuple[str, ...]
    scalars: tuple[str, ...] = ()
    writes: tuple[str, ...] = ("d",)  # registers it writes; the others are only read

    @property
    def cpp_name(self) -> str:
        return "k" + "".join(part.capitalize() for part in self.name.strip("_").split("_"))


def _named(name: str, registers: tuple[str, ...], operands: type, writes: tuple[str, ...]):
    return Operation(name, registers, tuple(f.name for f in fields(operands)), writes)


D, DA, DAB, DABC = ("d",), ("d", "a"), ("d", "a", "b"), ("d", "a", "b", "c")
ADAM_REGISTERS = ("p", "g", "m", "v", "vmax")  # vmax: -1 without AMSGrad

OPERATIONS: tuple[Operation, ...] = (
    Operation("neg", DA),  # d = -a
    Operation("copy", DA),  # d = a
    Operation("sqrt", DA),
    Operation("add", DAB, ("alpha",)),  # d = a + alpha b
    Operation("add_scalar", DA, ("value",)),
    Operation("mul_scalar", DA, ("value",)),
    Operation("mul", DAB),
    Operation("div_scalar", DA, ("value",)),
    Operation("div", DAB),
    Operation("reciprocal", DA),
    Operation("lerp", DAB, ("weight",)),  # d = a + weight (b - a), torch.lerp's two-sided form
    Operation("addcmul", DABC, ("value",)),  # d = a + value b c
    Operation("addcdiv", DABC, ("value",)),  # d = a + value (b / c)
    Operation("maximum", DAB),  # NaN-propagating
    Operation("clamp", DA, ("low", "high")),  # NaN-propagating
    _named("adam_step_", ADAM_REGISTERS, AdamStep, ("p", "m", "v", "vmax")),
    _named("bounded_step_", ADAM_REGISTERS, BoundedStep, ("p", "m", "v", "vmax")),
    Operation("lookahead_sync_", ("slow", "param"), ("alpha",), ("slow", "param")),
)
OPCODES: dict[str, int] = {op.name: code for code, op in enumerate(OPERATIONS)}
NAMED = frozenset(op.name for op in OPERATIONS if op.name.endswith("_"))
# The parameter step modes of adam_step_ (rules/moments.py).
MODES = {"kAdaptive": moments.ADAPTIVE, "kMomentum": moments.MOMENTUM, "kNoStep": moments.NO_STEP}


def cpp_header() -> str:
    """``instructions.h``: the table above as C++ constants."""
    lines = ["// Generated from rectified/engines/fused/instructions.py at build time.",
             "#pragma once", "#include <cstdint>", "namespace rectified_fused {",
             "enum Op : int64_t {"]
    lines += [f"  {op.cpp_name} = {code}," for code, op in enumerate(OPERATIONS)]
    lines += [f"  kOpCount = {len(OPERATIONS)},", "};"]

    def array(name: str, values: list[int]) -> str:
        return f"constexpr int {name}[] = {{{', '.join(map(str, values))}}};"

    lines.append(array("kRegisterCount", [len(op.registers) for op in OPERATIONS]))
    lines.append(array("kScalarCount", [len(op.scalars) for op in OPERATIONS]))
    lines.append(array("kWriteMask", [
        sum(1 << i for i, r in enumerate(op.registers) if r in op.writes) for op in OPERATIONS]))
    lines.append(f"constexpr int kMaxRegisters = {max(len(op.registers) for op in OPERATIONS)};")
    lines.append(f"constexpr int kMaxScalars = {max(len(op.scalars) for op in OPERATIONS)};")
    lines += [f"constexpr int {name} = {value};" for name, value in MODES.items()]
    for op in OPERATIONS:
        if op.name in NAMED:
            space = op.name.strip("_")
            lines.append(f"namespace {space} {{")
            lines.append(f"enum Register : int {{ {', '.join(op.registers)} }};")
            lines.append(f"enum Scalar : int {{ {', '.join(op.scalars)} }};")
            lines.append(f"}}  // namespace {space}")
    lines += ["}  // namespace rectified_fused", ""]
    return "\n".join(lines)
