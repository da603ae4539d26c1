"""Tensors whose memory does not mean what their values mean, tensors that share memory, and
parameters changed under the optimizer: every rectified optimizer on every engine.

* Metadata: a gradient or parameter with torch's lazy negation bit, a gradient with the lazy
  conjugate bit, non-contiguous views, a ``__torch_dispatch__`` wrapper subclass (torch's
  TwoTensor) and a ``__torch_function__`` subclass as parameters. Each run must equal the
  reference engine's run on plain tensors of the same values (and that, torch.optim's), with
  Lookahead's sync for the wrappers; no engine may read such a tensor's raw storage.
* Aliasing: parameters that are overlapping views of one buffer, or tied through ``.data``.
  The fused engine must give the reference engine's result bit for bit in float64 (a parallel
  pass over tied parameters loses updates); foreach, torch.optim's foreach result. A gradient
  that is memory the step writes (another parameter, a state tensor, its own parameter) while
  the fused engine keeps a plan: the engine's general path bit for bit, state formats too.
* A parameter reshaped (same number of elements) or resized between steps: every engine
  raises the same error before any parameter, state tensor or counter changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.testing._internal.two_tensor import TwoTensor

import rectified
from tests.registry import CASES, Case
from tests.reliability.support import (
    ENGINE_OPTIONS,
    RULE_CASES,
    assert_equal_tensors,
    case_engine_id,
    case_engine_params,
    engines_of,
    inner,
    max_relative_error,
    state_tensors,
)

SHAPES = ((4, 3), (5,), (2, 2, 2))
STEPS = 7  # past a Lookahead sync for every wrapper (k = 3 and Ranger's 6)


class FunctionSubclass(torch.Tensor):
    """A subclass that only overrides ``__torch_function__`` (its storage is plain)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def _values(dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    values = []
    for shape in SHAPES:
        value = torch.randn(shape, generator=generator, dtype=torch.float64)
        if dtype.is_complex:
            value = torch.complex(value, torch.randn(shape, generator=generator,
                                                     dtype=torch.float64))
        values.append(value)
    return values


def _gradients(values: list[torch.Tensor], steps: int = STEPS) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    sequence = []
    for _ in range(steps):
        grads = []
        for v in values:
            g = torch.randn(v.shape, generator=generator, dtype=torch.float64)
            if v.is_complex():
                g = torch.complex(g, torch.randn(v.shape, generator=generator,
                                                 dtype=torch.float64))
            grads.append(g)
        sequence.append(grads)
    return sequence


def negated(value: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor with the lazy negation bit (its storage holds -value)."""
    out = torch.complex(torch.zeros_like(value), -value).conj().imag
    assert out.is_neg() and torch.equal(out, value)
    return out


def conjugated(value: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor with the lazy conjugate bit (its storage holds conj(value))."""
    out = value.conj().resolve_conj().conj()
    assert out.is_conj() and torch.equal(out, value)
    return out


def strided(value: torch.Tensor) -> torch.Tensor:
    """``value`` as a non-contiguous view (every other element of a larger buffer)."""
    buffer = torch.zeros(value.numel() * 2, dtype=value.dtype)
    out = buffer[::2].view(value.shape) if value.dim() <= 1 else None
    if out is None:
        out = value.transpose(0, -1).contiguous().transpose(0, -1)
    else:
        out.copy_(value)
    assert not out.is_contiguous() and torch.equal(out, value)
    return out


def plain(value: torch.Tensor) -> torch.Tensor:
    return value.clone()


# name: (parameter maker, gradient maker, dtype of the values)
KINDS: dict[str, tuple[Callable, Callable, torch.dtype]] = {
    "negated-gradient": (plain, negated, torch.float64),
    "conjugated-gradient": (plain, conjugated, torch.complex128),
    "non-contiguous": (strided, strided, torch.float64),
    "TwoTensor": (lambda v: TwoTensor(v.clone(), v.clone()),
                  lambda g: TwoTensor(g.clone(), g.clone()), torch.float64),
    "torch_function-subclass": (lambda v: v.clone().as_subclass(FunctionSubclass),
                                lambda g: g.clone().as_subclass(FunctionSubclass),
                                torch.float64),
}


def _run(case: Case, engine: str, make_param: Callable, make_grad: Callable,
         dtype: torch.dtype) -> list[torch.Tensor]:
    values = _values(dtype)
    params = [make_param(v).requires_grad_() for v in values]
    optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    for grads in _gradients(values):
        for p, g in zip(params, grads):
            p.grad = make_grad(g)
        optimizer.step()
    return [p.detach() for p in params]


def _components(tensor: torch.Tensor) -> list[torch.Tensor]:
    """A TwoTensor's two tensors, or the tensor's plain values (complex ones as real pairs)."""
    if isinstance(tensor, TwoTensor):
        return [tensor.a, tensor.b]
    return [_real(tensor.resolve_neg().resolve_conj().as_subclass(torch.Tensor))]


def _real(tensor: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def _torch_run(case: Case, dtype: torch.dtype) -> list[torch.Tensor]:
    values = _values(dtype)
    params = [v.clone().requires_grad_() for v in values]
    optimizer = case.torch_twin(params, **case.kwargs, foreach=False)
    for grads in _gradients(values):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_odd_tensors_step_as_their_values(case, engine, kind, fused_kernel):
    make_param, make_grad, dtype = KINDS[kind]
    expected = _run(case, "reference", plain, plain, dtype)
    expected = [_real(e) for e in expected]
    if case.torch_twin is not None:
        torch_result = [_real(t) for t in _torch_run(case, dtype)]
        assert max_relative_error(torch_result, expected) < 1e-10
    result = _run(case, engine, make_param, make_grad, dtype)
    for got, want in zip(result, expected):
        for component in _components(got):
            assert max_relative_error([component], [want]) < 1e-12, kind


@pytest.mark.parametrize("kind", ["TwoTensor", "torch_function-subclass"])
def test_lookahead_around_torch_optimizer_takes_odd_parameters(kind):
    """Lookahead's sync over a torch.optim optimizer's odd parameters: no crash, and the
    values of a plain run."""
    case = next(case for case in CASES if case.name == "Lookahead(torch Adam)")
    make_param, make_grad, dtype = KINDS[kind]
    expected = _run(case, "foreach", plain, plain, dtype)
    result = _run(case, "foreach", make_param, make_grad, dtype)
    for got, want in zip(result, expected):
        for component in _components(got):
            assert max_relative_error([component], [want]) < 1e-12


@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_a_lazily_negated_parameter_is_refused_before_anything_moves(case, engine,
                                                                     fused_kernel):
    """torch's foreach ops cannot write a tensor with the negation bit: every engine refuses
    such a parameter with one message before the step changes anything."""
    values = _values()
    params = [plain(values[0]).requires_grad_(), negated(values[1]).requires_grad_()]
    optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match=r"parameter 1 is a lazily negated \(is_neg\(\)\) view"):
        optimizer.step()
    assert_equal_tensors([p.detach() for p in params], values[:2], what="parameter")
    assert not state_tensors(optimizer) or all(
        not t.any() for k, t in state_tensors(optimizer).items() if k.endswith("step"))


# --- aliasing ------------------------------------------------------------------------------

TIED = 40_000  # elements of each tied parameter: several chunks, so a parallel pass splits them


def _aliased_model(layout: str) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(3)
    if layout == "overlapping-views":
        buffer = torch.randn(30, generator=generator, dtype=torch.float64)
        params = [nn.Parameter(buffer[:20].view(4, 5)), nn.Parameter(buffer[10:])]
    else:  # "tied-data": two parameters, one storage, as weight tying through .data does
        first = nn.Parameter(torch.randn(TIED, generator=generator, dtype=torch.float64))
        second = nn.Parameter(torch.empty(0, dtype=torch.float64))
        second.data = first.data
        params = [first, second]
    params.append(nn.Parameter(torch.randn(5, generator=generator, dtype=torch.float64)))
    return params


def _aliased_run(case: Case, engine: str, layout: str,
                 torch_foreach: bool = False) -> tuple[list[torch.Tensor], dict]:
    params = _aliased_model(layout)
    if torch_foreach:
        optimizer = case.torch_twin(params, **case.kwargs, foreach=True)
    else:
        optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    generator = torch.Generator().manual_seed(4)
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        optimizer.step()
    return [p.detach().clone() for p in params], state_tensors(optimizer)


@pytest.mark.parametrize("layout", ["overlapping-views", "tied-data"])
@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_parameters_sharing_memory_step_one_at_a_time(case, engine, layout, fused_kernel):
    """The reference and fused engines: the reference engine's result bit for bit. The
    foreach engine runs each operation over the whole list, as torch.optim's foreach=True
    does (a parameter's weight decay then reads its tied twin before the twin's update):
    equal to torch.optim's foreach run, and the same in every run."""
    params, state = _aliased_run(case, engine, layout)
    if engine == "foreach":
        again, _ = _aliased_run(case, engine, layout)
        assert_equal_tensors(params, again, what="parameter of a second run")
        if case.torch_twin is not None:
            torch_params, _ = _aliased_run(case, engine, layout, torch_foreach=True)
            assert max_relative_error(params, torch_params) < 1e-12
        return
    expected_params, expected_state = _aliased_run(case, "reference", layout)
    shared = slice(0, 2)  # the parameters sharing memory: bit for bit
    assert_equal_tensors(params[shared], expected_params[shared], what="shared parameter")
    assert max_relative_error(params[2:], expected_params[2:]) < 1e-12
    assert state.keys() == expected_state.keys()
    for key in state:
        if key.startswith(("0/", "1/")):
            assert_equal_tensors([state[key]], [expected_state[key]], what=f"state {key}")


ALIAS_TARGETS = ("another parameter", "another parameter's state", "its own parameter")
ALIASED_FROM = 3  # the step from which a gradient shares memory: the fused engine keeps a plan


def _gradient_alias(optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                    target: str) -> torch.Tensor | None:
    """A gradient for ``params[0]`` that is memory the step writes (None: there is none)."""
    if target == "its own parameter":
        return params[0].detach()
    if target == "another parameter":
        return params[1].detach()
    entry = inner(optimizer).state[params[1]]
    tensors = [entry[key] for key in sorted(entry) if torch.is_tensor(entry[key])
               and entry[key].shape == params[1].shape and entry[key].dtype == params[1].dtype]
    return tensors[0] if tensors else None


def _gradient_alias_run(case: Case, engine: str, target: str,
                        **storage: Any) -> tuple[list[torch.Tensor], dict]:
    generator = torch.Generator().manual_seed(6)
    dtype = torch.float32 if storage else torch.float64
    params = [nn.Parameter(torch.randn(TIED, generator=generator, dtype=dtype))
              for _ in range(3)]
    optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine], **storage})
    for step in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=dtype)
        if step >= ALIASED_FROM:
            alias = _gradient_alias(optimizer, params, target)
            if alias is None:
                pytest.skip(f"{case.name} keeps no state tensor of a parameter's shape")
            params[0].grad = alias
        optimizer.step()
    return [p.detach().clone() for p in params], state_tensors(optimizer)


def _assert_runs_equal(actual: tuple[list[torch.Tensor], dict],
                       expected: tuple[list[torch.Tensor], dict]) -> None:
    assert_equal_tensors(actual[0], expected[0], what="parameter")
    assert actual[1].keys() == expected[1].keys()
    for key in actual[1]:
        assert_equal_tensors([actual[1][key]], [expected[1][key]], what=f"state {key}")


@pytest.mark.parametrize("target", ALIAS_TARGETS)
@pytest.mark.parametrize(("case", "engine"), [
    (case, engine) for case, engine in case_engine_params(RULE_CASES)
    if engine not in ("reference", "foreach")], ids=case_engine_id)
def test_a_gradient_sharing_written_memory_is_read_as_before_the_step(case, engine, target,
                                                                      fused_kernel, monkeypatch):
    """A gradient that is memory the same step writes (another parameter, a state tensor of
    one, its own parameter), from a step on which the fused engine would run a kept plan: the
    engine's general path bit for bit (which steps such a parameter on its own, reading its
    gradient before anything else of the group moves), and the reference engine's result in
    float64."""
    from rectified.engines.fused.plans import GroupPlan

    planned = _gradient_alias_run(case, engine, target)
    expected = _gradient_alias_run(case, "reference", target)
    assert max_relative_error(planned[0], expected[0]) < 1e-12
    monkeypatch.setattr(GroupPlan, "make", lambda *args: None)
    _assert_runs_equal(planned, _gradient_alias_run(case, engine, target))


FORMATTED_RULES = tuple(case for case in RULE_CASES if case.name in ("Adam", "RAdam", "AdaBound"))


@pytest.mark.parametrize("state_format", ["8bit", "bfloat16"])
@pytest.mark.parametrize("target", ALIAS_TARGETS[::2])
@pytest.mark.parametrize("case", FORMATTED_RULES, ids=case_engine_id)
def test_a_gradient_sharing_written_memory_under_a_state_format(case, target, state_format,
                                                               fused_kernel, monkeypatch):
    """As above with state stored in a format, where the fused engine keeps its one-pass
    step: the same parameters, codes and scales as its general path."""
    from rectified.engines.fused import formatted

    storage = {"state_format": state_format, "min_8bit_size": 0}
    planned = _gradient_alias_run(case, "fused", target, **storage)
    monkeypatch.setattr(formatted.FormattedPlan, "make", lambda *args: None)
    _assert_runs_equal(planned, _gradient_alias_run(case, "fused", target, **storage))


# --- parameters changed between steps ------------------------------------------------------

def _changed_data(layout: str) -> torch.Tensor:
    if layout == "reshaped":  # the same number of elements, another shape
        return torch.ones(2, 3, 2, dtype=torch.float64)
    return torch.ones(5, 3, dtype=torch.float64)  # resized


@pytest.mark.parametrize("layout", ["reshaped", "resized"])
@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_a_parameter_changed_under_its_state_raises_before_anything_moves(case, engine, layout,
                                                                          fused_kernel):
    generator = torch.Generator().manual_seed(5)
    params = [torch.randn(shape, generator=generator, dtype=torch.float64).requires_grad_()
              for shape in ((5,), (4, 3))]
    optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    for _ in range(2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        optimizer.step()
    params[1].data = _changed_data(layout)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
    before = [p.detach().clone() for p in params], state_tensors(optimizer)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    shape = tuple(params[1].shape)
    message = rf"state '\w+' of parameter 1 has shape \(4, 3\), the parameter has shape " \
              rf"{re.escape(str(shape))}"
    errors: tuple[type[Exception], ...] = (RuntimeError,)
    if hasattr(optimizer, "optimizer"):
        # Under Lookahead the slow weights may notice first (e.g. around SGD, which keeps none)
        errors = (RuntimeError, ValueError)
        message = rf"({message}|Lookahead: parameter 1 of group 0 has shape)"
    with pytest.raises(errors, match=message):
        optimizer.step()
    assert_equal_tensors([p.detach() for p in params], before[0], what="parameter")
    after = state_tensors(optimizer)
    assert after.keys() == before[1].keys()
    for key in after:
        assert_equal_tensors([after[key]], [before[1][key]], what=f"state {key}")
    assert [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups] \
        == groups


def test_every_engine_is_covered(fused_kernel):
    """The tables above run each rectified optimizer on all three engines."""
    for case in RULE_CASES:
        assert set(engines_of(case)) == {"reference", "foreach", "fused"}, case.name


# --- gradients of another dtype than their parameter -----------------------------------------

def _other_dtype_run(case: Case, engine: str, cast_first: bool) -> tuple[list[torch.Tensor], dict]:
    generator = torch.Generator().manual_seed(8)
    params = [nn.Parameter(torch.randn(shape, generator=generator, dtype=torch.float64))
              for shape in SHAPES]
    for p in params:
        p.grad_dtype = None  # torch then takes a gradient of any dtype
    optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    for _ in range(STEPS):
        for p in params:
            grad = torch.randn(p.shape, generator=generator).to(torch.float32)
            p.grad = grad.double() if cast_first else grad
        optimizer.step()
    return [p.detach().clone() for p in params], state_tensors(optimizer)


@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_a_gradient_of_another_dtype_steps_as_its_value_in_the_parameters_dtype(case, engine,
                                                                              fused_kernel):
    """float64 parameters with float32 gradients (``Tensor.grad_dtype = None``): every engine
    steps as with the same gradients in float64, instead of failing halfway through a step."""
    params, state = _other_dtype_run(case, engine, cast_first=False)
    expected, expected_state = _other_dtype_run(case, engine, cast_first=True)
    assert max_relative_error(params, expected) < 1e-12
    assert state.keys() == expected_state.keys()


def _tied_other_dtype_run(case: Case, engine: str, cast_first: bool) -> list[torch.Tensor]:
    params = [nn.Parameter(p.detach().float()) for p in _aliased_model("tied-data")]
    params[1].data = params[0].data
    for p in params:
        p.grad_dtype = None
    optimizer = case.build(params, **{**case.kwargs, **ENGINE_OPTIONS[engine]})
    generator = torch.Generator().manual_seed(9)
    for _ in range(STEPS):
        for p in params:
            grad = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.grad = grad.float() if cast_first else grad
        optimizer.step()
    return [p.detach().double() for p in params]


@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_tied_parameters_with_gradients_of_another_dtype_keep_both_updates(case, engine,
                                                                           fused_kernel):
    """float32 parameters tied through ``.data`` with float64 gradients, which makes the step
    compute on float64 copies of them: each copy starts from the values before the step, so
    copying both back kept only the last one's update (0.30 off after three Adam steps of lr
    0.1). Every engine runs them one at a time, as the reference engine runs tied parameters
    with gradients of their dtype (to float32 rounding: the step computes in float64)."""
    params = _tied_other_dtype_run(case, engine, cast_first=False)
    expected = _tied_other_dtype_run(case, "reference", cast_first=True)
    assert max_relative_error(params, expected) < 1e-5


@pytest.mark.parametrize("engine", ["reference", "foreach", "fused"])
def test_tied_parameters_with_a_state_dtype_keep_both_updates(engine, fused_kernel):
    """The same with ``state_dtype``: bfloat16 parameters tied through ``.data`` with float32
    moments step as the reference engine steps them one after the other."""
    def run(engine: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(10)
        first = nn.Parameter(torch.randn(TIED, generator=generator).bfloat16())
        second = nn.Parameter(torch.empty(0, dtype=torch.bfloat16))
        second.data = first.data
        optimizer = rectified.Adam([first, second], lr=0.1, state_dtype=torch.float32,
                                   **ENGINE_OPTIONS[engine])
        for _ in range(3):
            for p in (first, second):
                p.grad = torch.randn(TIED, generator=generator).bfloat16()
            optimizer.step()
        return first.detach().float()

    def one_after_the_other() -> torch.Tensor:  # an optimizer per parameter, in turn
        generator = torch.Generator().manual_seed(10)
        first = nn.Parameter(torch.randn(TIED, generator=generator).bfloat16())
        second = nn.Parameter(torch.empty(0, dtype=torch.bfloat16))
        second.data = first.data
        optimizers = [rectified.Adam([p], lr=0.1, state_dtype=torch.float32, foreach=False)
                      for p in (first, second)]
        for _ in range(3):
            for p in (first, second):
                p.grad = torch.randn(TIED, generator=generator).bfloat16()
            for optimizer in optimizers:
                optimizer.step()
        return first.detach().float()

    expected = one_after_the_other()
    reference = run("reference")
    assert torch.equal(reference, expected)
    # other engines compute in float32 with other operations: a bfloat16 rounding apart
    torch.testing.assert_close(run(engine), expected, rtol=2 ** -6, atol=1e-6)
