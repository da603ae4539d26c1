"""Property-based tests: shapes (0-d and zero-size included), dtypes, hyperparameters at the
edges of their valid ranges and gradient sequences with zeros, denormals and large values.

* no exception is raised for any valid input, and the engines agree (NaN where NaN);
* finite input gives finite parameters and state wherever the math stays finite and in range
  (``eps > 0``, or ``eps = 0`` with gradients whose squares are normal numbers);
* ``lr = 0`` moves no parameter.

The default suite draws the same 150 examples per property every time (derandomized); setting
``RECTIFIED_PROPERTY_EXAMPLES=N`` draws N fresh random examples per property instead.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rectified
from tests.registry import CASES, Case
from tests.reliability.support import (
    ENGINE_OPTIONS,
    engines_of,
    inner,
    max_relative_error,
)

EXAMPLES = int(os.environ.get("RECTIFIED_PROPERTY_EXAMPLES", "150"))
EXPLORE = "RECTIFIED_PROPERTY_EXAMPLES" in os.environ  # a longer run draws fresh examples
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=not EXPLORE,
                    database=None, suppress_health_check=[HealthCheck.too_slow])

SHAPES = ((), (0,), (1,), (3,), (2, 3), (0, 4), (4, 1))
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
DENORMAL = {torch.float32: 1e-40, torch.bfloat16: 1e-40, torch.float64: 1e-310}
# Engine agreement, relative to each tensor's scale: one engine may round differently.
AGREEMENT = {torch.float64: 1e-9, torch.float32: 1e-3}


@functools.cache
def _group_keys(name: str) -> frozenset[str]:
    case = next(case for case in CASES if case.name == name)
    probe = case.build([torch.zeros(1, requires_grad=True)], **case.kwargs)
    return frozenset(probe.param_groups[0])


@dataclass
class Example:
    case: Case
    dtype: torch.dtype
    shapes: list[tuple[int, ...]]
    kwargs: dict[str, Any]
    magnitudes: list[list[float]]  # per step, the values its gradients are drawn from
    seed: int

    def params(self) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        return [torch.randn(shape, generator=generator, dtype=torch.float64)
                .to(self.dtype).requires_grad_() for shape in self.shapes]

    def gradients(self) -> list[list[torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed + 1)
        steps = []
        for palette in self.magnitudes:
            values = torch.tensor(palette, dtype=torch.float64)
            grads = []
            for shape in self.shapes:
                count = math.prod(shape)
                index = torch.randint(len(palette), (count,), generator=generator)
                sign = torch.randint(2, (count,), generator=generator) * 2.0 - 1.0
                grads.append((values[index] * sign).reshape(shape).to(self.dtype))
            steps.append(grads)
        return steps

    def run(self, engine: str, **overrides: Any) -> tuple[list[torch.Tensor], Any]:
        """Parameters after every step, and the optimizer."""
        params = self.params()
        optimizer = self.case.build(
            params, **{**self.case.kwargs, **self.kwargs, **ENGINE_OPTIONS[engine], **overrides}
        )
        history = []
        for grads in self.gradients():
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
            history.append([p.detach().clone() for p in params])
        return history, optimizer


def _magnitudes(dtype: torch.dtype, large: float, eps_zero: bool):
    if eps_zero:  # squares stay normal numbers: no 0/0 in the math
        values = st.sampled_from([1e-3, 1.0, 3.0, large])
    else:
        values = st.sampled_from([0.0, DENORMAL[dtype], 1e-30, 1e-3, 1.0, large])
    return st.lists(st.lists(values, min_size=1, max_size=3), min_size=1, max_size=5)


@st.composite
def examples(draw, cases=CASES, extreme: bool = False) -> Example:
    """An optimizer, dtype, parameter shapes, hyperparameters at their edges and gradients.

    ``extreme`` also draws values where overflow is the right answer (huge lr and gradients,
    eps = 0 with zero gradients); otherwise the math stays finite and within range.
    """
    case = draw(st.sampled_from(cases))
    dtype = draw(st.sampled_from(DTYPES))
    keys = _group_keys(case.name)
    kwargs: dict[str, Any] = {}
    kwargs["lr"] = draw(st.sampled_from(
        [0.0, 1e-30, 1e-3, 1.0, 1e3] + ([1e10] if extreme else [])))
    centered = case.kwargs.get("centered", False)
    eps_zero = False
    if "eps" in keys:
        choices = [1e-8, 1e-3, 1.0] + ([0.0, 1e-30] if extreme else [])
        if not extreme and not centered:
            choices.append(0.0)  # centered RMSprop's variance can be exactly 0
        kwargs["eps"] = draw(st.sampled_from(choices))
        eps_zero = kwargs["eps"] == 0.0 and not extreme
    if "weight_decay" in keys and (extreme or kwargs["lr"] <= 1.0):
        kwargs["weight_decay"] = draw(st.sampled_from([0.0, 1e-2]))
    if "betas" in keys:
        kwargs["betas"] = (draw(st.sampled_from([0.0, 0.5, 0.9])),
                           draw(st.sampled_from([0.0, 0.5, 0.999])))
    if "momentum" in keys:
        low = 0.5 if case.kwargs.get("nesterov") else 0.0
        kwargs["momentum"] = draw(st.sampled_from([low, 0.9]))
    alphas = [0.0, 0.5, 0.99]
    for name, values in (("alpha", alphas), ("rho", [0.0, 0.5, 0.9]),
                         ("lr_decay", [0.0, 0.5]), ("final_lr", [0.0, 0.1, 10.0]),
                         ("gamma", [0.0, 1e-3, 0.5]), ("maximize", [False, True])):
        if name in keys:
            kwargs[name] = draw(st.sampled_from(values))
    if "lookahead_k" in keys:
        kwargs["k"] = draw(st.sampled_from([1, 2]))
        kwargs["alpha"] = draw(st.sampled_from([0.0, 0.5, 1.0]))
    large = 1e30 if extreme and dtype == torch.float64 else (1e15 if extreme else 1e6)
    return Example(
        case=case,
        dtype=dtype,
        shapes=draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=3)),
        kwargs=kwargs,
        magnitudes=draw(_magnitudes(dtype, large, eps_zero)),
        seed=draw(st.integers(0, 2**16)),
    )


def _all_tensors(optimizer) -> list[torch.Tensor]:
    tensors = []
    for state in (*inner(optimizer).state.values(), *optimizer.state.values()):
        tensors += [v for v in state.values() if torch.is_tensor(v) and v.is_floating_point()]
    return tensors


def _agree(actual: list[torch.Tensor], expected: list[torch.Tensor], rtol: float) -> None:
    """Non-finite in the same places (where the float result is undefined, one engine may
    give NaN and another inf), and the finite values within ``rtol``."""
    for a, e in zip(actual, expected):
        assert torch.equal(a.isfinite(), e.isfinite()), "non-finite values in different places"
        finite = e.isfinite()
        assert max_relative_error([a[finite]], [e[finite]]) <= rtol


@PROPERTY
@given(example=examples(extreme=True))
def test_any_valid_input_steps_without_error_and_engines_agree(example):
    """Huge lr and gradients, eps = 0 with zero gradients: overflow and NaN may be the answer,
    but no step raises and every engine gives the same answer."""
    reference, _ = example.run("reference")
    for engine in engines_of(example.case):
        if engine == "reference" or example.dtype not in AGREEMENT:
            continue
        history, _ = example.run(engine)
        for actual, expected in zip(history, reference):
            _agree(actual, expected, AGREEMENT[example.dtype])


@PROPERTY
@given(example=examples())
def test_finite_input_gives_finite_parameters_and_state(example):
    for engine in engines_of(example.case):
        history, optimizer = example.run(engine)
        for params in history:
            assert all(p.isfinite().all() for p in params), f"{engine} produced a non-finite"
        assert all(t.isfinite().all() for t in _all_tensors(optimizer))


@PROPERTY
@given(example=examples())
def test_engines_agree_on_finite_input(example):
    if example.dtype not in AGREEMENT:
        return
    reference, _ = example.run("reference")
    for engine in engines_of(example.case):
        history, _ = example.run(engine)
        for actual, expected in zip(history, reference):
            assert max_relative_error(actual, expected) <= AGREEMENT[example.dtype]


@PROPERTY
@given(example=examples())
def test_zero_learning_rate_moves_no_parameter(example):
    """lr set to 0 on every group after construction with lr = 1e-3 (as
    torch.distributed.checkpoint and warmup schedules do): every parameter keeps its bits."""
    params = example.params()
    engine = engines_of(example.case)[-1]
    kwargs = {**example.case.kwargs, **example.kwargs, **ENGINE_OPTIONS[engine], "lr": 1e-3}
    optimizer = example.case.build(params, **kwargs)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    start = [p.detach().clone() for p in params]
    for grads in example.gradients():
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    for p, q in zip(params, start):
        assert torch.equal(p.detach(), q)


def test_adabound_built_with_zero_learning_rate_moves_no_parameter():
    param = torch.ones(3, requires_grad=True)
    optimizer = rectified.AdaBound([param], lr=0.0, final_lr=0.1)
    for _ in range(3):
        param.grad = torch.ones(3)
        optimizer.step()
    assert torch.equal(param.detach(), torch.ones(3))


@pytest.mark.parametrize("engine", ["reference", "foreach"])
def test_centered_rmsprop_with_alpha_zero_stays_finite(engine):
    grad = torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    param = torch.zeros(64, dtype=torch.float64, requires_grad=True)
    optimizer = rectified.RMSprop([param], lr=1e-3, alpha=0.0, centered=True,
                                  **ENGINE_OPTIONS[engine])
    param.grad = grad
    optimizer.step()
    assert param.isfinite().all()
