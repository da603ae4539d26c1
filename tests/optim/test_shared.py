"""Tests every optimizer of the registry must pass: engines, torch parity, checkpoints, inputs."""

from __future__ import annotations

import re

import pytest
import torch

import rectified
from rectified.optim.base import RuleOptimizer
from tests.helpers import (
    apply_,
    assert_close_relative,
    build,
    engine_kwargs,
    gradient_sequence,
    make_params,
    roundtrip,
    run,
)
from tests.registry import CASES, TORCH_TWINS, WITH_INVALID, case_id

ENGINES = ("reference", "foreach")


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return optimizer.optimizer if isinstance(optimizer, rectified.Lookahead) else optimizer


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_foreach_engine_equals_reference(case):
    """12 steps in float64, with a frozen parameter mid-way and a zero-size one."""
    reference = run(case, 12, **engine_kwargs("reference"))
    foreach = run(case, 12, **engine_kwargs("foreach"))
    assert_close_relative(foreach, reference, rtol=1e-13)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", TORCH_TWINS, ids=case_id)
def test_matches_torch_optim(case, engine, maximize):
    """50 steps in float64 against the torch.optim class, two groups, decay, maximize."""
    steps = 50
    params = make_params()
    torch_params = [p.detach().clone().requires_grad_() for p in params]
    ours = build(case, params, maximize=maximize, **engine_kwargs(engine))
    kwargs = {**case.kwargs, "maximize": maximize, "foreach": False}
    lr = kwargs["lr"]
    theirs = case.torch_twin(
        [{"params": torch_params[:2]}, {"params": torch_params[2:], "lr": lr * 0.5}], **kwargs
    )
    sequence = gradient_sequence(params, steps)
    apply_(ours, params, sequence)
    apply_(theirs, torch_params, sequence)
    assert_close_relative(params, torch_params, rtol=1e-12)
    for p, q in zip(params, torch_params):
        for key, value in theirs.state[q].items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert_close_relative([ours.state[p][key]], [value], rtol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_resume_is_bit_exact(case, engine):
    """Train 7 steps, checkpoint through torch.save/torch.load(weights_only=True), continue 6:
    identical bits to 13 uninterrupted steps (7 is not a multiple of Lookahead's k)."""
    sequence = gradient_sequence(make_params(), 13)
    params = make_params()
    straight = build(case, params, **engine_kwargs(engine))
    apply_(straight, params, sequence)

    first = make_params()
    optimizer = build(case, first, **engine_kwargs(engine))
    apply_(optimizer, first, sequence[:7])
    checkpoint = roundtrip({"params": [p.detach() for p in first],
                            "optimizer": optimizer.state_dict()})
    resumed_params = [p.clone().requires_grad_() for p in checkpoint["params"]]
    resumed = build(case, resumed_params, **engine_kwargs(engine))
    resumed.load_state_dict(checkpoint["optimizer"])
    apply_(resumed, resumed_params, sequence[7:])
    for a, b in zip(resumed_params, params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_loaded_state_does_not_share_storage(case):
    params = make_params()
    optimizer = build(case, params)
    apply_(optimizer, params, gradient_sequence(params, 3))
    saved = optimizer.state_dict()
    other = build(case, [p.detach().clone().requires_grad_() for p in params])
    other.load_state_dict(saved)
    saved_pointers = {
        v.data_ptr() for s in saved["state"].values() for v in s.values()
        if torch.is_tensor(v) and v.numel() > 0
    }
    loaded = [v for s in other.state.values() for v in s.values() if torch.is_tensor(v)]
    loaded += [v for s in _inner(other).state.values() for v in s.values() if torch.is_tensor(v)]
    assert loaded
    assert all(v.data_ptr() not in saved_pointers for v in loaded if v.numel() > 0)


@pytest.mark.parametrize(
    ("case", "bad", "message"),
    [(case, bad, message) for case in WITH_INVALID for bad, message in case.invalid],
    ids=lambda x: case_id(x) if hasattr(x, "build") else None,
)
def test_invalid_hyperparameter_raises(case, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(case, make_params(), **bad)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_tensor_lr(case):
    if not isinstance(_inner(build(case, make_params())), RuleOptimizer):
        pytest.skip("inner optimizer is torch.optim's")
    as_float = run(case, 6)
    as_tensor = run(case, 6, lr=torch.tensor(case.kwargs["lr"], dtype=torch.float64))
    assert_close_relative(as_tensor, as_float, rtol=1e-15)
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        build(case, make_params(), lr=torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_group_value_never_half_applies_a_step(case):
    params = make_params()
    optimizer = build(case, params)
    if not isinstance(_inner(optimizer), RuleOptimizer):
        pytest.skip("inner optimizer is torch.optim's")
    apply_(optimizer, params, gradient_sequence(params, 2))
    before = [p.detach().clone() for p in params]
    state_before = roundtrip(optimizer.state_dict())
    optimizer.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=re.escape("Invalid learning rate: -1.0")):
        apply_(optimizer, params, gradient_sequence(params, 1, seed=5))
    assert all(torch.equal(a, b) for a, b in zip(params, before))
    state_after = optimizer.state_dict()
    for index, entry in state_before["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(state_after["state"][index][key]),
                               torch.as_tensor(value))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bad_param_group_is_not_added(case):
    params = make_params()
    optimizer = build(case, params)
    count = len(optimizer.param_groups)
    extra = torch.zeros(3, requires_grad=True)
    if isinstance(_inner(optimizer), RuleOptimizer):
        with pytest.raises(ValueError, match=re.escape("Invalid learning rate: -2.0")):
            optimizer.add_param_group({"params": [extra], "lr": -2.0})
        assert len(optimizer.param_groups) == count
    optimizer.add_param_group({"params": [extra], "lr": 0.01})
    assert len(optimizer.param_groups) == count + 1
    for _ in range(8):  # RAdam without the SGD fallback moves only once rho_t > threshold
        extra.grad = torch.ones(3)
        optimizer.step()
    assert not torch.equal(extra.detach(), torch.zeros(3))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sparse_gradient_steps_as_dense_or_is_refused_before_anything_moves(case):
    """A sparse gradient beside dense ones: a rule with a sparse update (SGD, Adagrad, without
    weight decay) takes the step the same gradient dense would give; every other case raises
    before any parameter moves."""
    params = make_params(torch.float32)
    twins = [p.detach().clone().requires_grad_() for p in params]
    optimizer = build(case, params)
    if not isinstance(_inner(optimizer), RuleOptimizer):
        pytest.skip("inner optimizer is torch.optim's")
    # Weight decay would make the gradient dense: rules with a sparse update refuse it, so they
    # are also run without it.
    decay = {"weight_decay": 0.0} if _inner(optimizer).rule.supports_sparse else {}
    optimizer = build(case, params, **decay)
    before = [p.detach().clone() for p in params]
    for step in range(2):
        for p, q in zip(params, twins):
            p.grad = torch.full_like(p, step + 1.0)
            q.grad = p.grad.clone()
        params[-1].grad = params[-1].grad.to_sparse()
        inner = _inner(optimizer)
        steps_sparse = inner.rule.supports_sparse and all(
            group["weight_decay"] == 0 for group in inner.param_groups)
        if not steps_sparse:
            with pytest.raises(RuntimeError, match="sparse gradients"):
                optimizer.step()
            assert all(torch.equal(a, b) for a, b in zip(params, before))
            return
        optimizer.step()
    dense = build(case, twins, **decay)
    for step in range(2):
        for q in twins:
            q.grad = torch.full_like(q, step + 1.0)
        dense.step()
    assert_close_relative(params, twins, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_named_parameters_give_the_same_run(case):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    plain = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).double()
    plain.load_state_dict(model.state_dict())
    named = case.build(model.named_parameters(), **case.kwargs)
    unnamed = case.build(plain.parameters(), **case.kwargs)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(4):
        for net, optimizer in ((model, named), (plain, unnamed)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    names = named.state_dict()["param_groups"][0]["param_names"]
    assert names == [name for name, _ in model.named_parameters()]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_closure_hooks_and_zero_grad(case):
    params = make_params()
    optimizer = build(case, params)
    calls = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))

    def closure():
        optimizer.zero_grad()
        loss = sum(p.square().sum() for p in params)
        loss.backward()
        calls.append("closure")
        return loss

    loss = optimizer.step(closure)
    assert calls == ["pre", "closure", "post"]
    assert torch.is_tensor(loss) and loss.item() > 0
    optimizer.zero_grad()
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_parameter_without_grad_is_untouched(case):
    params = make_params()
    optimizer = build(case, params)
    before = params[0].detach().clone()
    for p in params[1:]:
        p.grad = torch.ones_like(p)
    optimizer.step()
    assert torch.equal(params[0], before)
    state = _inner(optimizer).state.get(params[0], {})
    assert "exp_avg" not in state
    # No counter, or (Adagrad makes its state at construction, as torch) one never advanced
    assert float(state.get("step", 0)) == 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_complex_params_follow_their_real_view(case, engine):
    """A complex parameter steps like the real tensor of its (re, im) pairs."""
    complex_params = make_params(torch.complex128)
    real_params = [torch.view_as_real(p.detach()).clone().requires_grad_()
                   for p in complex_params]
    sequence = gradient_sequence(complex_params, 8)
    real_sequence = [[None if g is None else torch.view_as_real(g) for g in grads]
                     for grads in sequence]
    apply_(build(case, complex_params, **engine_kwargs(engine)), complex_params, sequence)
    apply_(build(case, real_params, **engine_kwargs(engine)), real_params, real_sequence)
    as_real = [torch.view_as_real(p.detach()) for p in complex_params]
    assert_close_relative(as_real, real_params, rtol=1e-14)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float32, 1e-4), (torch.bfloat16, 6e-2)])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_low_precision_params_track_float64(case, dtype, rtol):
    exact = run(case, 5)
    params = make_params(dtype)
    optimizer = build(case, params)
    apply_(optimizer, params, gradient_sequence(params, 5))
    for p in params:
        assert p.dtype == dtype
        for value in _inner(optimizer).state.get(p, {}).values():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.dtype == dtype
    assert_close_relative([p.detach().double() for p in params], exact, rtol=rtol)


@pytest.mark.parametrize("cls", [rectified.Adam, rectified.AdamW, rectified.RAdam,
                                 rectified.AdaBound, rectified.Ranger])
def test_tensor_betas(cls):
    """1-element tensor betas behave as their floats; larger tensors are refused."""
    def trajectory(betas):
        params = make_params()
        optimizer = cls(params, lr=0.01, betas=betas)
        apply_(optimizer, params, gradient_sequence(params, 6))
        return params

    as_float = trajectory((0.8, 0.99))
    as_tensor = trajectory((torch.tensor(0.8, dtype=torch.float64),
                            torch.tensor(0.99, dtype=torch.float64)))
    assert all(torch.equal(a, b) for a, b in zip(as_tensor, as_float))
    with pytest.raises(ValueError, match=re.escape("Tensor betas[0] must be 1-element")):
        cls(make_params(), betas=(torch.tensor([0.9, 0.8]), 0.999))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_unchanged_by_loading_it(case):
    """Loading a state_dict adds no key to the groups (torch.optim's loader adds
    ``differentiable`` to the defaults of every optimizer; a class without that argument must not
    pass it on) and changes no value."""
    params = make_params()
    optimizer = build(case, params)
    apply_(optimizer, params, gradient_sequence(params, 3))
    before = optimizer.state_dict()
    optimizer.load_state_dict(roundtrip(before))
    after = optimizer.state_dict()
    for saved, loaded in zip(before["param_groups"], after["param_groups"]):
        assert sorted(loaded) == sorted(saved)
        for key, value in saved.items():
            if torch.is_tensor(value):
                assert torch.equal(loaded[key], value), key
            else:
                assert loaded[key] == value, key
