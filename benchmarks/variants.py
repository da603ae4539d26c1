"""What the step benchmark measures: every optimizer variant, built over shared parameters.

A variant is a label and a factory ``params -> step function``. All variants of a layout step
the same parameters and gradients (values drift a little; the time of a step does not depend on
them), each with its own state, so memory stays at parameters + gradients + the states.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

import rectified
from benchmarks.timing import STEP_BYTES_PER_PARAM

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


@dataclass(frozen=True)
class Variant:
    library: str  # rectified, torch.optim, torch-optimizer, pytorch-optimizer
    rule: str  # RAdam, Adam, AdamW, AdaBound, Ranger
    engine: str  # reference/for-loop, foreach, fused, compiled
    build: Factory
    compiled: bool = False
    state: str = ""  # a state format other than float32 ("bfloat16", "8bit")
    bytes_moved: float = STEP_BYTES_PER_PARAM  # per parameter and step

    @property
    def label(self) -> str:
        state = f" {self.state} state" if self.state else ""
        return f"{self.library} {self.rule} {self.engine}{state}"


RECTIFIED_RULES: dict[str, Factory] = {
    "RAdam": lambda params, **kw: rectified.RAdam(params, lr=1e-3, **kw),
    "Adam": lambda params, **kw: rectified.Adam(params, lr=1e-3, **kw),
    "AdamW": lambda params, **kw: rectified.AdamW(params, lr=1e-3, **kw),
    "AdaBound": lambda params, **kw: rectified.AdaBound(params, lr=1e-3, **kw),
    "Ranger": lambda params, **kw: rectified.Ranger(params, lr=1e-3, **kw),
}
RECTIFIED_ENGINES = {
    "reference": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}
TORCH_RULES = {"RAdam": torch.optim.RAdam, "Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
TORCH_ENGINES = {"for-loop": {"foreach": False}, "foreach": {"foreach": True},
                 "fused": {"fused": True}}


def _rectified(rule: str, engine: str) -> Variant:
    make = RECTIFIED_RULES[rule]
    return Variant("rectified", rule, engine, lambda ps: make(ps, **RECTIFIED_ENGINES[engine]))


def _torch(rule: str, engine: str, compiled: bool = False) -> Variant:
    cls, kwargs = TORCH_RULES[rule], TORCH_ENGINES.get(engine, {"foreach": True})
    return Variant("torch.optim", rule, engine, lambda ps: cls(ps, lr=1e-3, **kwargs), compiled)


# Bytes a step moves per parameter: p read and written and g read (12), plus the moments read
# and written: 2 x 2 x 4 in float32, 2 x 2 x 2 in bfloat16, 2 x 2 x (1 + 4/256) in 8 bits.
FORMAT_BYTES = {"bfloat16": 20.0, "8bit": 12 + 4 * (1 + 4 / 256)}


def _formatted(engine: str, state_format: str) -> Variant:
    def build(ps: list[torch.Tensor]) -> torch.optim.Optimizer:
        return rectified.RAdam(ps, lr=1e-3, state_format=state_format,
                               **RECTIFIED_ENGINES[engine])

    return Variant("rectified", "RAdam", engine, build, state=state_format,
                   bytes_moved=FORMAT_BYTES[state_format])


def _eight_bit_peers() -> list[Variant]:
    """torchao's AdamW8bit and bitsandbytes' Adam8bit, where installed (never required)."""
    found = []
    if importlib.util.find_spec("torchao") is not None:
        from torchao.optim import AdamW8bit

        found.append(Variant("torchao", "AdamW", "compiled", lambda ps: AdamW8bit(
            ps, lr=1e-3, weight_decay=0.0), state="8bit", bytes_moved=FORMAT_BYTES["8bit"]))
    if importlib.util.find_spec("bitsandbytes") is not None:
        import bitsandbytes

        found.append(Variant("bitsandbytes", "Adam", "cpu", lambda ps: bitsandbytes.optim.Adam8bit(
            ps, lr=1e-3), state="8bit", bytes_moved=FORMAT_BYTES["8bit"]))
    return found


def _third_party() -> list[Variant]:
    found = []
    if importlib.util.find_spec("torch_optimizer") is not None:
        import torch_optimizer

        found.append(Variant("torch-optimizer", "RAdam", "for-loop",
                             lambda ps: torch_optimizer.RAdam(ps, lr=1e-3)))
    if importlib.util.find_spec("pytorch_optimizer") is not None:
        import pytorch_optimizer

        found.append(Variant("pytorch-optimizer", "RAdam", "for-loop",
                             lambda ps: pytorch_optimizer.RAdam(ps, lr=1e-3)))
    return found


def all_variants(compile_torch: bool) -> list[Variant]:
    """Every variant (the fused engine runs its own kernel on the CPU and torch's fused Adam
    kernels on CUDA), torch.compile'd ones only if ``compile_torch``."""
    variants = [_rectified(rule, engine) for rule in RECTIFIED_RULES
                for engine in RECTIFIED_ENGINES]
    for rule in TORCH_RULES:
        for engine in TORCH_ENGINES:
            if engine == "fused" and rule == "RAdam":
                continue  # torch.optim has no fused RAdam
            variants.append(_torch(rule, engine))
        if compile_torch:
            variants.append(_torch(rule, "compiled", compiled=True))
    variants += [_formatted(engine, state_format) for state_format in FORMAT_BYTES
                 for engine in ("foreach", "fused")]
    return variants + _third_party() + _eight_bit_peers()


def headline_variants() -> list[Variant]:
    """The smaller set for the largest layout: every fused rule and its closest competitors."""
    keep = {("rectified", "fused"), ("rectified", "foreach"), ("torch.optim", "fused"),
            ("torch.optim", "foreach")}
    return [v for v in all_variants(compile_torch=False)
            if (v.library, v.engine) in keep and not v.state
            and (v.engine != "foreach" or v.rule == "RAdam")]
