"""Non-finite gradients: by default a step proceeds and NaN propagates (as in torch.optim); with
``skip_nonfinite=True`` a step with any NaN or inf gradient is skipped for every group and
counted, and nothing is half-applied. GradScaler's skipped steps leave everything untouched."""

from __future__ import annotations

import math

import pytest
import torch

import rectified
from tests.helpers import build, gradient_sequence, make_params
from tests.registry import CASES, TORCH_TWINS
from tests.reliability.support import (
    ENGINE_OPTIONS,
    RULE_CASES,
    TinyNet,
    assert_equal_tensors,
    assert_same_state,
    batch,
    build_for,
    case_engine_id,
    case_engine_params,
    inner,
    loss_of,
    snapshot,
    state_tensors,
)

BAD_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
STEPS, BAD_STEP = 8, 3


def _poisoned(sequence, step: int, param: int, value: float, index: int = 0):
    """A copy of ``sequence`` whose gradient of ``param`` at ``step`` holds ``value``."""
    sequence = [list(grads) for grads in sequence]
    grad = sequence[step][param].clone()
    grad.view(-1)[index] = value
    sequence[step][param] = grad
    return sequence


def _run(optimizer, params, sequence, after_each=None) -> None:
    for step, grads in enumerate(sequence):
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        optimizer.step()
        if after_each is not None:
            after_each(step)


@pytest.mark.parametrize(("case", "engine"), case_engine_params(TORCH_TWINS), ids=case_engine_id)
def test_default_policy_propagates_nan_and_inf_like_torch_optim(case, engine):
    """NaN at step 2 in one parameter and inf at step 4 in another: the same values (NaN
    included) as the torch.optim class after 8 steps."""
    params = make_params()
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    sequence = _poisoned(gradient_sequence(params, STEPS), 2, 0, math.nan)
    sequence = _poisoned(sequence, 4, 3, math.inf, index=3)
    ours = build(case, params, **ENGINE_OPTIONS[engine])
    lr = case.kwargs["lr"]
    theirs = case.torch_twin(
        [{"params": twin_params[:2]}, {"params": twin_params[2:], "lr": lr * 0.5}],
        **{**case.kwargs, "foreach": False},
    )
    _run(ours, params, sequence)
    _run(theirs, twin_params, sequence)
    assert params[0].isnan().any()
    for p, q in zip(params, twin_params):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=0.0, equal_nan=True)


@pytest.mark.parametrize(("case", "engine"), case_engine_params(CASES), ids=case_engine_id)
def test_default_policy_still_steps_every_parameter_with_finite_gradients(case, engine):
    """A NaN in one parameter's gradient does not stop, delay or alter the others' updates."""
    params, clean_params = make_params(), make_params()
    clean = gradient_sequence(params, STEPS)
    poisoned = _poisoned(clean, BAD_STEP, 0, math.nan)
    _run(build(case, params, **ENGINE_OPTIONS[engine]), params, poisoned)
    _run(build(case, clean_params, **ENGINE_OPTIONS[engine]), clean_params, clean)
    assert params[0].isnan().any()
    assert_equal_tensors(params[1:], clean_params[1:], what="parameter")


@pytest.mark.parametrize("bad", BAD_VALUES)
@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_skip_nonfinite_skips_the_whole_step_in_every_group(case, engine, bad):
    """The bad value is in group 1 only; group 0 must not move either. The run then equals a
    run that never saw the bad step, bit for bit, parameters and state."""
    params = make_params()
    clean = gradient_sequence(params, STEPS)
    poisoned = _poisoned(clean, BAD_STEP, 3, BAD_VALUES[bad], index=5)
    optimizer = build(case, params, skip_nonfinite=True, **ENGINE_OPTIONS[engine])
    before = {}

    def check(step: int) -> None:
        if step == BAD_STEP - 1:
            before["params"], before["state"] = snapshot(params), state_tensors(optimizer)
        if step == BAD_STEP:
            assert_equal_tensors(params, before["params"], what="parameter")
            assert_same_state(state_tensors(optimizer), before["state"])

    _run(optimizer, params, poisoned, after_each=check)
    assert [g["nonfinite_skips"] for g in optimizer.param_groups] == [1, 1]

    reference_params = make_params()
    reference = build(case, reference_params, skip_nonfinite=True, **ENGINE_OPTIONS[engine])
    _run(reference, reference_params, clean[:BAD_STEP] + clean[BAD_STEP + 1:])
    assert_equal_tensors(params, reference_params, what="parameter")
    assert_same_state(state_tensors(optimizer), state_tensors(reference))
    if isinstance(optimizer, rectified.Lookahead):
        counters = [g["lookahead_step"] for g in optimizer.param_groups]
        assert counters == [STEPS - 1] * 2


def test_skip_nonfinite_with_a_closure_returns_the_loss_and_moves_nothing():
    param = torch.tensor([1.0, 2.0], requires_grad=True)
    optimizer = rectified.RAdam([param], lr=0.1, skip_nonfinite=True)

    def closure():
        optimizer.zero_grad()
        loss = (param * torch.tensor([1.0, math.inf])).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == math.inf
    assert torch.equal(param.detach(), torch.tensor([1.0, 2.0]))
    assert optimizer.state[param] == {}
    assert optimizer.param_groups[0]["nonfinite_skips"] == 1


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_skip_count_is_saved_and_restored(case):
    params = make_params()
    optimizer = build(case, params, skip_nonfinite=True)
    _run(optimizer, params, _poisoned(gradient_sequence(params, 4), 1, 0, math.nan))
    other = build(case, [p.detach().clone().requires_grad_() for p in params],
                  skip_nonfinite=True)
    other.load_state_dict(optimizer.state_dict())
    assert [g["nonfinite_skips"] for g in other.param_groups] == [1, 1]


def _scaled_run(case, engine, overflow_steps, *, skip_nonfinite: bool):
    """float32 TinyNet trained with GradScaler (unscale_, clip, step, update); the loss of
    each step in ``overflow_steps`` is multiplied by inf."""
    model = TinyNet(torch.float32)
    kwargs = {"skip_nonfinite": True} if skip_nonfinite else {}
    optimizer = build_for(case, model, engine, **kwargs)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    scales = []
    for step in range(STEPS):
        x, y = batch(step, torch.float32)
        optimizer.zero_grad()
        loss = loss_of(model, x, y) * (math.inf if step in overflow_steps else 1.0)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        before = snapshot(model.parameters())
        state_before = state_tensors(optimizer)
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
        if step in overflow_steps:
            assert_equal_tensors(list(model.parameters()), before, what="parameter")
            assert_same_state(state_tensors(optimizer), state_before)
    return model, optimizer, scales


def _plain_run(case, engine, steps):
    model = TinyNet(torch.float32)
    optimizer = build_for(case, model, engine)
    for step in steps:
        x, y = batch(step, torch.float32)
        optimizer.zero_grad()
        loss_of(model, x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model, optimizer


@pytest.mark.parametrize("skip_nonfinite", [False, True], ids=["default", "skip_nonfinite"])
@pytest.mark.parametrize(("case", "engine"), case_engine_params(RULE_CASES), ids=case_engine_id)
def test_grad_scaler_skipped_steps_leave_no_trace(case, engine, skip_nonfinite):
    """Overflows at steps 2 and 5 are skipped by the scaler (found_inf), which backs off; the
    run equals unscaled training without those batches, bit for bit (power-of-two scales
    are exact), Lookahead's counter included."""
    model, optimizer, scales = _scaled_run(case, engine, {2, 5}, skip_nonfinite=skip_nonfinite)
    assert scales[2] == scales[1] / 2 and scales[5] < scales[4]
    kept = [step for step in range(STEPS) if step not in {2, 5}]
    reference_model, reference = _plain_run(case, engine, kept)
    assert_equal_tensors(list(model.parameters()), list(reference_model.parameters()),
                         what="parameter")
    assert_same_state(state_tensors(optimizer), state_tensors(reference))
    for group in optimizer.param_groups:
        assert group.get("nonfinite_skips", 0) == 0  # the scaler never called step()
        if "lookahead_step" in group:
            assert group["lookahead_step"] == len(kept)
    assert all(not torch.is_tensor(v) or v.isfinite().all()
               for s in inner(optimizer).state.values() for v in s.values())
