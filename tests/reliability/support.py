"""What the reliability tests share: engines, a tiny model with awkward parameters, batches,
param groups that differ in their hyperparameters, and comparisons.

Engines come from ``rectified.engines.ENGINES``: an engine is one more entry of
``ENGINE_OPTIONS`` (the constructor keywords that select it), and every test that loops over
engines picks it up for the optimizers that accept it.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

import rectified
from rectified.engines import ENGINES, engine_for
from rectified.optim.base import RuleOptimizer
from tests.registry import CASES, Case

# Constructor keywords that select each engine.
ENGINE_OPTIONS: dict[str, dict[str, Any]] = {
    "reference": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}

# Group flags that switch a live group to each engine (e.g. after loading a checkpoint).
ENGINE_FLAGS: dict[str, dict[str, Any]] = {
    "reference": {"foreach": False, "fused": False},
    "foreach": {"foreach": True, "fused": False},
    "fused": {"foreach": False, "fused": True},
}

BATCH = 8
IN_FEATURES, HIDDEN, OUT_FEATURES = 4, 5, 3


def inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer that owns the per-parameter state (a wrapper's inner one)."""
    return optimizer.optimizer if isinstance(optimizer, rectified.Lookahead) else optimizer


def is_rule_based(case: Case) -> bool:
    """Whether the case's (inner) optimizer is one of rectified's own."""
    probe = torch.zeros(1, requires_grad=True)
    return isinstance(inner(case.build([probe], **case.kwargs)), RuleOptimizer)


@functools.cache
def _runs_on(name: str, engine: str) -> bool:
    """Whether the case's constructor takes the engine's keywords and its groups then run it
    (an engine that cannot be used on this machine falls back to another)."""
    case = next(case for case in CASES if case.name == name)
    probe = torch.zeros(1, requires_grad=True)
    try:
        optimizer = case.build([probe], **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    except TypeError:
        return False
    return engine_for(optimizer.param_groups[0]) == engine


RULE_CASES: tuple[Case, ...] = tuple(case for case in CASES if is_rule_based(case))


def engines_of(case: Case) -> tuple[str, ...]:
    """The engines a case runs: the registry's, plus, for rectified's own optimizers, every
    other engine of the library that its constructor takes and this machine can run."""
    extra = case in RULE_CASES
    return tuple(
        engine for engine in ENGINES
        if engine in case.engines
        or (extra and engine not in ("reference", "foreach") and _runs_on(case.name, engine))
    )


def case_engine_params(cases: Iterable[Case] = CASES) -> list[tuple[Case, str]]:
    return [(case, engine) for case in cases for engine in engines_of(case)]


def case_engine_id(value: Any) -> str | None:
    return value.name if isinstance(value, Case) else None


class TinyNet(nn.Module):
    """Two linear layers, a 0-d scale and a zero-size parameter (it never moves).

    FSDP2 refuses 0-d parameters and cannot reduce-scatter empty ones, so sharded runs use
    ``scale_shape=(1,)`` (one rank then holds an empty shard of it) or ``(3,)`` (every rank of
    two holds some of it), and ``empty=False``.
    """

    def __init__(self, dtype: torch.dtype = torch.float64, seed: int = 0,
                 scale_shape: tuple[int, ...] = (), empty: bool = True) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.first = nn.Linear(IN_FEATURES, HIDDEN, dtype=dtype)
            self.second = nn.Linear(HIDDEN, OUT_FEATURES, dtype=dtype)
        self.scale = nn.Parameter(torch.ones(scale_shape, dtype=dtype))
        self.empty = nn.Parameter(torch.zeros(0, dtype=dtype)) if empty else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.second(torch.tanh(self.first(x))) * self.scale
        return out if self.empty is None else out + self.empty.sum()


def batch(step: int, dtype: torch.dtype = torch.float64, size: int = BATCH):
    """The (inputs, targets) of training step ``step`` (the same in every process)."""
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(size, IN_FEATURES, generator=generator, dtype=torch.float64)
    y = torch.randn(size, OUT_FEATURES, generator=generator, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).square().mean()


def second_group_options(case: Case) -> dict[str, Any]:
    """Hyperparameters for a model's second param group that differ from the first group's
    wherever the optimizer has them, so a value leaking between groups shows."""
    lr = case.kwargs.get("lr", 1e-2)
    probe = case.build([torch.zeros(1, requires_grad=True)], **case.kwargs)
    group = probe.param_groups[0]
    options: dict[str, Any] = {"lr": lr * 0.5}
    if "betas" in group:
        options["betas"] = (0.8, 0.99)
    if "lookahead_alpha" in group:
        options["lookahead_alpha"] = 0.8
    if "lookahead_k" in group:
        options["lookahead_k"] = 2
    if "gamma" in group:
        options["gamma"] = 0.05
    return options


def model_groups(model: TinyNet, case: Case) -> list[dict[str, Any]]:
    return [
        {"params": [model.first.weight, model.first.bias, model.scale]},
        {"params": [model.second.weight, model.second.bias,
                    *([] if model.empty is None else [model.empty])],
         **second_group_options(case)},
    ]


def build_for(case: Case, model: TinyNet, engine: str, **overrides: Any):
    options = {**case.kwargs, **ENGINE_OPTIONS[engine], **overrides}
    return case.build(model_groups(model, case), **options)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> torch.Tensor:
    x, y = batch(step, next(model.parameters()).dtype)
    optimizer.zero_grad()
    loss = loss_of(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def switch_engine_(optimizer: torch.optim.Optimizer, engine: str) -> None:
    """Point every group of a rectified optimizer at ``engine``."""
    for group in optimizer.param_groups:
        for key, value in ENGINE_FLAGS[engine].items():
            if key in group or value:
                group[key] = value
        assert engine_for(group) == engine, f"group runs {engine_for(group)}, not {engine}"


def roundtrip(obj: Any) -> Any:
    """torch.save then torch.load(weights_only=True), as a checkpoint on disk would be."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def snapshot(values: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [v.detach().clone() for v in values]


def assert_equal_tensors(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
                         what: str = "tensor") -> None:
    """Bit for bit (NaN equal to NaN)."""
    assert len(actual) == len(expected)
    for index, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"{what} {index}"
        same = torch.equal(a, e) or bool(((a == e) | (a.isnan() & e.isnan())).all())
        assert same, f"{what} {index} differs by {(a - e).abs().nan_to_num().max().item():.3e}"


def max_relative_error(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    """max |a - e| / max(max |e|, 1) over all pairs (float64)."""
    worst = 0.0
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        if e.numel() == 0:
            continue
        a, e = a.detach().double(), e.detach().double()
        scale = max(e.abs().max().item(), 1.0)
        worst = max(worst, (a - e).abs().max().item() / scale)
    return worst


def state_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Every tensor of ``state_dict()['state']``, keyed 'param/key', cloned."""
    flat = {}
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                flat[f"{index}/{key}"] = value.detach().clone()
    return flat


def assert_same_state(actual: Mapping[str, torch.Tensor],
                      expected: Mapping[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for key in expected:
        assert_equal_tensors([actual[key]], [expected[key]], what=f"state {key}")
