"""The fused engine against the reference engine: every Adam-family rule and option, dtypes,
schedulers, param groups, checkpoints across engines, fallbacks and errors."""

from __future__ import annotations

import warnings

import pytest
import torch

import rectified
from rectified.engines import engine_for
from rectified.engines.foreach import FOREACH
from rectified.engines.fused import kernel
from rectified.engines.fused.program import instructions, trace
from rectified.rules.moments import ADAPTIVE, MOMENTUM
from tests.helpers import (
    apply_,
    assert_close_relative,
    build,
    gradient_sequence,
    make_params,
    roundtrip,
    run,
)
from tests.registry import CASES, case_id

FUSED_CASES = tuple(
    case for case in CASES
    if case.build in (rectified.Adam, rectified.AdamW, rectified.RAdam, rectified.AdaBound,
                      rectified.Ranger)
)
REFERENCE = {"foreach": False}
FUSED = {"fused": True}


pytestmark = pytest.mark.usefixtures("fused_kernel")


def test_every_adam_family_rule_is_covered():
    names = {case.name for case in FUSED_CASES}
    assert {"Adam", "Adam-amsgrad", "AdamW", "RAdam", "RAdam-decoupled", "RAdam-paper",
            "AdaBound", "AMSBound", "Ranger"} <= names


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_fused_equals_reference_in_float64(case, maximize):
    """12 steps, two groups, a frozen and a zero-size parameter; both RAdam branches."""
    reference = run(case, 12, maximize=maximize, **REFERENCE)
    result = run(case, 12, maximize=maximize, **FUSED)
    assert_close_relative(result, reference, rtol=1e-12)


@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_fused_equals_reference_in_float32(case):
    reference = run(case, 12, torch.float32, **REFERENCE)
    result = run(case, 12, torch.float32, **FUSED)
    assert_close_relative(result, reference, rtol=1e-6)


def _run_from(case, params, sequence, **engine):
    apply_(build(case, params, **engine), params, sequence)
    return [p.detach().double() for p in params]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_fused_low_precision_is_within_rounding(case, dtype):
    """Against a float64 run from the same (rounded) start and gradients, fused is as close as
    the reference engine, which rounds after every op (fused computes in float32 and rounds
    once), or within two units of the dtype's rounding."""
    sequence = gradient_sequence(make_params(dtype), 12)
    exact = _run_from(case, [p.detach().double().requires_grad_() for p in make_params(dtype)],
                      [[None if g is None else g.double() for g in grads] for grads in sequence],
                      **REFERENCE)
    reference = _run_from(case, make_params(dtype), sequence, **REFERENCE)
    result = _run_from(case, make_params(dtype), sequence, **FUSED)
    eps = torch.finfo(dtype).eps
    for fused_p, reference_p, exact_p in zip(result, reference, exact):
        if exact_p.numel():
            scale = exact_p.abs().max().item()
            reference_error = (reference_p - exact_p).abs().max().item()
            fused_error = (fused_p - exact_p).abs().max().item()
            assert fused_error <= max(2 * reference_error, 2 * eps * scale)


@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_fused_follows_a_scheduler_and_groups_with_own_hyperparameters(case):
    """lr changes every step; the second group has its own betas, eps and weight decay."""
    results = []
    for engine in (REFERENCE, FUSED):
        params = make_params(torch.float32)
        kwargs = {**case.kwargs, **engine}
        groups = [{"params": params[:2]},
                  {"params": params[2:], "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6,
                   "weight_decay": 0.05}]
        optimizer = case.build(groups, **kwargs)
        inner = optimizer.optimizer if isinstance(optimizer, rectified.Lookahead) else optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(inner, lambda step: 1.0 / (1 + step))
        for grads in gradient_sequence(params, 15):
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.clone()
            optimizer.step()
            schedule.step()
        results.append(params)
    assert_close_relative(results[1], results[0], rtol=1e-6)


@pytest.mark.parametrize("first, second", [(FUSED, {"foreach": True}), ({"foreach": True}, FUSED)])
@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_checkpoints_resume_across_engines(case, first, second):
    """7 steps with one engine, torch.save/torch.load, 6 more with the other."""
    sequence = gradient_sequence(make_params(), 13)
    straight_params = make_params()
    apply_(build(case, straight_params, **REFERENCE), straight_params, sequence)

    params = make_params()
    optimizer = build(case, params, **first)
    apply_(optimizer, params, sequence[:7])
    checkpoint = roundtrip({"params": [p.detach() for p in params],
                            "optimizer": optimizer.state_dict()})
    resumed_params = [p.clone().requires_grad_() for p in checkpoint["params"]]
    resumed = build(case, resumed_params, **second)
    resumed.load_state_dict(checkpoint["optimizer"])
    apply_(resumed, resumed_params, sequence[7:])
    assert_close_relative(resumed_params, straight_params, rtol=1e-12)


@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_complex_params_match_reference(case):
    reference = run(case, 8, torch.complex128, **REFERENCE)
    result = run(case, 8, torch.complex128, **FUSED)
    assert_close_relative(result, reference, rtol=1e-12)


def test_non_contiguous_params_fall_back_and_match():
    results = []
    for engine in (REFERENCE, FUSED):
        torch.manual_seed(0)
        params = [torch.randn(5, 4).t().requires_grad_(), torch.randn(7, requires_grad=True)]
        assert not params[0].is_contiguous()
        optimizer = rectified.RAdam(params, lr=0.01, weight_decay=0.1, **engine)
        for _ in range(8):
            for p in params:
                p.grad = torch.randn_like(p)
            optimizer.step()
        results.append(params)
    assert_close_relative(results[1], results[0], rtol=1e-6)


@pytest.mark.parametrize("name", ["Adam-amsgrad", "AMSBound", "RAdam"])
def test_non_finite_gradients_propagate_as_in_reference(name):
    case = next(case for case in FUSED_CASES if case.name == name)
    results = []
    for engine in (REFERENCE, FUSED):
        params = make_params(torch.float32)
        optimizer = build(case, params, **engine)
        sequence = gradient_sequence(params, 6)
        sequence[2][0][0, 0] = float("nan")
        sequence[3][3][1, 0, 0] = float("inf")
        apply_(optimizer, params, sequence)
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        assert torch.equal(a.isnan(), b.isnan())
        finite = b.isfinite()
        assert torch.allclose(a[finite], b[finite], rtol=1e-5, atol=1e-7)


def test_skip_nonfinite_skips_the_fused_step():
    params = make_params(torch.float32)
    before = [p.detach().clone() for p in params]
    optimizer = rectified.RAdam(params, fused=True, skip_nonfinite=True)
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    assert optimizer.param_groups[0]["nonfinite_skips"] == 1


def test_fused_and_foreach_together_is_an_error():
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        rectified.Adam(make_params(), fused=True, foreach=True)
    with pytest.raises(ValueError, match="Invalid fused value: 'yes'"):
        rectified.RAdam(make_params(), fused="yes")


def test_fused_true_off_the_cpu_fails_before_any_group_moves():
    cpu = make_params(torch.float32)
    before = [p.detach().clone() for p in cpu]
    meta = torch.zeros(3, device="meta", requires_grad=True)
    optimizer = rectified.RAdam([{"params": cpu}, {"params": [meta]}], fused=True)
    for p in cpu:
        p.grad = torch.ones_like(p)
    meta.grad = torch.ones_like(meta)
    message = (r"`fused=True` requires all the params to be floating point Tensors of supported "
               r"devices: \['cpu', 'cuda'\], got tensors on meta")
    with pytest.raises(RuntimeError, match=message):
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(cpu, before))
    assert not optimizer.state


def test_engine_choice():
    params = make_params()
    assert engine_for(rectified.RAdam(params).param_groups[0]) == "fused"  # kernel is built
    assert engine_for(rectified.RAdam(params, foreach=True).param_groups[0]) == "foreach"
    assert engine_for(rectified.RAdam(params, foreach=False).param_groups[0]) == "reference"
    assert engine_for(rectified.RAdam(params, fused=False).param_groups[0]) == "foreach"
    sgd = rectified.SGD(params, lr=0.1)
    assert engine_for(sgd.param_groups[0], sgd.rule.fused_by_default) == "foreach"
    assert engine_for(rectified.SGD(params, lr=0.1, fused=True).param_groups[0]) == "fused"


def test_missing_compiler_warns_once_and_runs_foreach(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel, "_loaded", None)
    monkeypatch.setattr(kernel, "_warned", False)
    monkeypatch.setenv("RECTIFIED_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    group = rectified.RAdam(make_params(), fused=True).param_groups[0]
    with pytest.warns(UserWarning, match="fused engine unavailable, using foreach"):
        assert engine_for(group) == "foreach"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert engine_for(group) == "foreach"
    assert not list(tmp_path.iterdir())


def run_traced(body, lists):
    """Trace ``body(ops, *lists)`` and run it with the kernel; return the skipped indices
    (those it cannot read, and those sharing memory)."""
    skipped, aliased = kernel.run_program_(trace(body, len(lists)), lists)
    return skipped + aliased


OPS = [
    ("neg", 1, {}), ("clone", 1, {}), ("sqrt", 1, {}), ("add", 2, {"alpha": -0.3}),
    ("add_", 2, {"alpha": 0.7}), ("add_scalar_", 1, {"value": 0.25}), ("mul_", 1, {"value": 3.0}),
    ("mul_tensors_", 2, {}), ("div_", 1, {"value": 4.0}), ("div_tensors_", 2, {}),
    ("reciprocal_", 1, {}), ("lerp_", 2, {"weight": 0.2}), ("lerp_", 2, {"weight": 0.9}),
    ("addcmul_", 3, {"value": -0.5}), ("addcdiv_", 3, {"value": 0.5}), ("maximum_", 2, {}),
    ("clamp_", 1, {"low": 0.8, "high": 1.2}), ("copy_", 2, {}),
]


@pytest.mark.parametrize("name, arity, kwargs", OPS, ids=[f"{o[0]}{o[2]}" for o in OPS])
def test_every_list_operation_matches_foreach(name, arity, kwargs):
    """Each traced operation, run by the kernel, equals its torch._foreach_* twin."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(3000,), (7, 5), (1,)]
    lists = [[torch.rand(s, generator=generator, dtype=torch.float64) + 0.5 for s in shapes]
             for _ in range(arity)]
    lists[0][1][0, 0] = float("nan")
    expected = [[x.clone() for x in xs] for xs in lists]
    out = getattr(FOREACH, name)(*expected, **kwargs)

    def body(ops, *registers):
        result = getattr(ops, name)(*registers, **kwargs)
        if result is not None:
            ops.copy_(registers[0], result)

    assert run_traced(body, lists) == []
    want = out if out is not None else expected[0]
    for a, b in zip(lists[0], want):
        assert torch.allclose(a, b, rtol=1e-15, atol=0, equal_nan=True)


def test_kernel_takes_low_precision_params_with_float32_state():
    """Each tensor keeps its own dtype: bf16 params and grads with float32 moments."""
    generator = torch.Generator().manual_seed(0)
    p32 = torch.randn(5000, generator=generator)
    g32 = torch.randn(5000, generator=generator)
    m32, v32 = torch.zeros(5000), torch.zeros(5000)
    p, g = p32.bfloat16(), g32.bfloat16()
    m, v = m32.clone(), v32.clone()
    expected = [p.float()]

    def body(ops, params, grads, exp_avgs, exp_avg_sqs):
        ops.lerp_(exp_avgs, grads, 0.1)
        ops.addcmul_(exp_avg_sqs, grads, grads, 0.001)
        ops.addcdiv_(params, exp_avgs, ops.sqrt(exp_avg_sqs), -1e-3)

    assert run_traced(body, [[p], [g], [m], [v]]) == []
    body(FOREACH, expected, [g.float()], [m32], [v32])
    assert m.dtype == v.dtype == torch.float32 and p.dtype == torch.bfloat16
    assert torch.allclose(m, m32, rtol=1e-6) and torch.allclose(v, v32, rtol=1e-6)
    assert torch.equal(p, expected[0].bfloat16())


def _trace_case(case, step, **overrides):
    params = make_params()
    optimizer = build(case, params, **{**case.kwargs, **overrides})
    inner = optimizer.optimizer if isinstance(optimizer, rectified.Lookahead) else optimizer
    group = inner.param_groups[0]
    keys = inner.rule.state_keys(group)

    def body(ops, params, grads, *state):
        inner.rule.update_(ops, params, grads, dict(zip(keys, state)), group, step)

    return trace(body, 2 + len(keys))


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_every_adam_family_step_is_one_named_instruction(case, maximize):
    """Prologue (decay, maximize), moments and step: one instruction, which the kernel runs as
    one loop, for every rule and option (RAdam from its first rectified step on)."""
    code = instructions(_trace_case(case, 40, maximize=maximize))
    expected = "bounded_step_" if case.build is rectified.AdaBound else "adam_step_"
    assert [name for name, *_ in code] == [expected]
    if expected == "adam_step_":
        assert code[0][2][-1] == ADAPTIVE


def test_radam_unadapted_steps_are_one_momentum_step():
    case = next(case for case in FUSED_CASES if case.name == "RAdam")
    (name, _, scalars), = instructions(_trace_case(case, 2))
    assert name == "adam_step_" and scalars[-1] == MOMENTUM


def test_fallbacks_from_several_buckets_keep_their_own_step_counts():
    """Every tensor falls back (non-contiguous) from two buckets of different step counts:
    each must run foreach at its own count."""
    results = []
    for engine in (REFERENCE, FUSED):
        torch.manual_seed(0)
        params = [torch.randn(4, 3).t().requires_grad_() for _ in range(4)]
        optimizer = rectified.Adam(params, lr=0.1, **engine)
        for step in range(6):
            for i, p in enumerate(params):
                frozen = i % 2 == 1 and step < 2
                p.grad = None if frozen else torch.randn(4, 3).t()
            optimizer.step()
        results.append(params)
    assert_close_relative(results[1], results[0], rtol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("case", FUSED_CASES, ids=case_id)
def test_long_chunks_and_many_parameters_match_reference(case, dtype, rtol):
    """Sizes around the kernel's chunk lengths (1,024 and 16,384) and enough parameters for the
    kept plan's check to run in parallel; one parameter loses its gradient for two steps."""
    sizes = [40_001, 16_385, 16_384, 1_025, 3] + [17] * 140
    results = []
    for engine in (REFERENCE, FUSED):
        generator = torch.Generator().manual_seed(0)
        params = [torch.randn(n, generator=generator, dtype=dtype).requires_grad_()
                  for n in sizes]
        optimizer = case.build(params, **{**case.kwargs, **engine})
        for step in range(8):
            for i, p in enumerate(params):
                grad = torch.randn(p.shape, generator=generator, dtype=dtype)
                p.grad = None if (i == 100 and step in (3, 4)) else grad
            optimizer.step()
        results.append(params)
    assert_close_relative(results[1], results[0], rtol=rtol)
