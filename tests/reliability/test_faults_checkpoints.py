"""Checkpoints that must not load: another optimizer's state, a missing moment, tampered step
counters, moments of the wrong shape or dtype. Each is refused by ``load_state_dict`` with the
group, parameter and key named, before anything changes, for every rectified optimizer (the
wrappers included); torch.optim checkpoints of the same algorithm still load both ways."""

from __future__ import annotations

import copy
import re

import pytest
import torch

import rectified
from rectified.optim.checkpoints import check_state_dict
from tests.helpers import apply_, build, gradient_sequence, make_params
from tests.registry import TORCH_TWINS, Case
from tests.reliability.support import (
    RULE_CASES,
    assert_same_state,
    inner,
    max_relative_error,
    state_tensors,
)

BAD_STEPS = {
    "negative": -1.0,
    "nan": float("nan"),
    "fraction": 2.5,
    "string": "3",
    "tensor-of-two": torch.tensor([1.0, 2.0]),
    "negative-tensor": torch.tensor(-1.0),
    "nan-tensor": torch.tensor(float("nan")),
}


def _trained(case: Case, steps: int = 3, seed: int = 0):
    params = make_params(seed=seed)
    optimizer = build(case, params)
    apply_(optimizer, params, gradient_sequence(params, steps, seed=seed + 1))
    return params, optimizer


def _refused(optimizer, state_dict, message: str) -> None:
    """Refused with ``message``; the optimizer then steps exactly as an untouched copy."""
    before = state_tensors(optimizer), copy.deepcopy(
        [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups])
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(state_dict)
    assert_same_state(state_tensors(optimizer), before[0])
    assert [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups] \
        == before[1]


def _target(case: Case):
    """A trained optimizer to load into (its state must survive a refused load)."""
    return _trained(case, seed=5)[1]


def _entry(saved: dict) -> tuple[int, dict]:
    """Parameter 1 of group 1: its index in the saved state and its (inner) entry."""
    index = saved["param_groups"][1]["params"][1]
    return index, saved["state"][index]


WHERE = "parameter 1 in group 1"


@pytest.mark.parametrize("donor", [torch.optim.SGD, torch.optim.Adagrad])
@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_another_optimizers_checkpoint_is_refused(case, donor):
    """SGD's momentum_buffer or Adagrad's sum offered to every optimizer whose rule needs
    other state (an SGD case takes Adagrad's only; Adagrad's own case SGD's only)."""
    target = _target(case)
    needed = set(inner(target).rule.state_keys(inner(target).param_groups[0]))
    donor_key = "momentum_buffer" if donor is torch.optim.SGD else "sum"
    if not needed or donor_key in needed:
        pytest.skip(f"{case.name} keeps {donor_key!r} itself")
    params = make_params()
    other = donor([{"params": params[:2]}, {"params": params[2:]}], lr=0.1,
                  **({"momentum": 0.9} if donor is torch.optim.SGD else {}))
    apply_(other, params, gradient_sequence(params, 2))
    # (RMSprop with the SGD group's momentum keeps a momentum_buffer too: only its lack shows)
    message = rf"state of parameter 0 in group 0 (has '{donor_key}' and )?lacks '\w+'"
    if target is not inner(target):  # a wrapper refuses a plain optimizer's checkpoint first
        message = "not saved by a Lookahead"
    _refused(target, other.state_dict(), message)


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_a_checkpoint_missing_a_moment_is_refused(case):
    _, optimizer = _trained(case)
    target = _target(case)
    saved = optimizer.state_dict()
    index, entry = _entry(saved)
    keys = inner(optimizer).rule.state_keys(inner(optimizer).param_groups[1])
    for key in keys:
        broken = copy.deepcopy(saved)
        del broken["state"][index][key]
        _refused(target, broken, rf"state of {WHERE} lacks '{key}'")
    if not keys:
        assert set(entry) <= {"step", "slow_param"}


@pytest.mark.parametrize("bad", BAD_STEPS)
@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_a_tampered_step_is_refused(case, bad):
    _, optimizer = _trained(case)
    target = _target(case)
    broken = copy.deepcopy(optimizer.state_dict())
    index, _ = _entry(broken)
    broken["state"][index]["step"] = BAD_STEPS[bad]
    _refused(target, broken, rf"state 'step' of {WHERE} is .*; expected a whole number >= 0")


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_a_moment_of_another_shape_or_dtype_is_refused(case):
    _, optimizer = _trained(case)
    target = _target(case)
    saved = optimizer.state_dict()
    index, entry = _entry(saved)
    scalars = getattr(inner(optimizer), "scalar_state_keys", ())
    for key, value in entry.items():
        if key == "step" or key in scalars or not torch.is_tensor(value):
            continue
        for wrong, what in ((torch.zeros(3, 7, dtype=value.dtype), "shape"),
                            (torch.zeros(value.shape, dtype=torch.int64), "dtype")):
            broken = copy.deepcopy(saved)
            broken["state"][index][key] = wrong
            _refused(target, broken, rf"state '{key}' of {WHERE} has {what}")


@pytest.mark.parametrize("case", TORCH_TWINS, ids=lambda c: c.name)
def test_torch_checkpoints_still_load_both_ways(case):
    """torch.optim -> rectified and back, then three more steps on each side: the same
    parameters as torch.optim's uninterrupted run (float64)."""
    params = make_params()
    reference = case.torch_twin([{"params": params[:2]}, {"params": params[2:]}], **case.kwargs)
    sequence = gradient_sequence(params, 9)
    apply_(reference, params, sequence[:3])
    mine_params = [p.detach().clone().requires_grad_() for p in params]
    mine = build(case, mine_params)
    mine.load_state_dict(reference.state_dict())
    mine.param_groups[1]["lr"] = reference.param_groups[1]["lr"]
    apply_(reference, params, sequence[3:6])
    apply_(mine, mine_params, sequence[3:6])
    assert max_relative_error(mine_params, params) < 1e-10
    back_params = [p.detach().clone().requires_grad_() for p in mine_params]
    back = case.torch_twin([{"params": back_params[:2]}, {"params": back_params[2:]}],
                           **case.kwargs)
    back.load_state_dict(mine.state_dict())
    apply_(reference, params, sequence[6:])
    apply_(back, back_params, sequence[6:])
    assert max_relative_error(back_params, params) < 1e-10


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_a_checkpoint_without_steps_is_refused_unless_the_rule_counts_from_its_state(case):
    """A state without its ``step`` beside its moments: refused (torch.optim raises a KeyError
    at the step; a count restarted at 1 would put RAdam back into its warm-up), except for SGD,
    whose count only says whether its momentum buffer exists (torch.optim.SGD saves none)."""
    _, optimizer = _trained(case)
    target = _target(case)
    saved = copy.deepcopy(optimizer.state_dict())
    for entry in saved["state"].values():
        entry.pop("step", None)
    if inner(target).rule.counts_from_state:
        check_state_dict(inner(target), {**saved, "state": {
            i: {k: v for k, v in e.items() if k != "slow_param"}
            for i, e in saved["state"].items()}})
    elif any(entry for entry in saved["state"].values()):
        _refused(target, saved, r"state of parameter 0 in group 0 has no 'step'")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float16])
@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_step_counters_of_another_dtype_load_and_count_on(case, dtype):
    """Integer or float16 counters (torch.optim keeps what it loads) count on in float: the
    run continues exactly as from the saved float counters."""
    params, optimizer = _trained(case)
    saved = copy.deepcopy(optimizer.state_dict())
    edited = copy.deepcopy(saved)
    for entry in edited["state"].values():
        if torch.is_tensor(entry.get("step")):
            entry["step"] = entry["step"].to(dtype)
    runs = []
    for state_dict in (saved, edited):
        copies = [p.detach().clone().requires_grad_() for p in params]
        resumed = build(case, copies)
        resumed.load_state_dict(state_dict)
        apply_(resumed, copies, gradient_sequence(copies, 3, seed=9))
        runs.append((copies, state_tensors(resumed)))
    assert max_relative_error(runs[1][0], runs[0][0]) == 0
    assert_same_state(runs[1][1], runs[0][1])


def test_a_refused_load_names_the_first_bad_key_exactly():
    """The message of a missing moment, in full."""
    case = next(case for case in RULE_CASES if case.name == "Adam")
    _, optimizer = _trained(case)
    saved = optimizer.state_dict()
    index, _ = _entry(saved)
    del saved["state"][index]["exp_avg_sq"]
    with pytest.raises(ValueError, match=re.escape(
            "state of parameter 1 in group 1 lacks 'exp_avg_sq', which Adam needs: a "
            "checkpoint of another optimizer, or an incomplete one")):
        _target(case).load_state_dict(saved)


def test_another_optimizers_extra_state_is_named_as_such():
    """A NAdam checkpoint offered to Adam: its ``mu_product`` is refused as no state of Adam."""
    params = make_params()
    nadam = rectified.NAdam(params)
    apply_(nadam, params, gradient_sequence(params, 2))
    with pytest.raises(ValueError, match="'mu_product' is no state of Adam: a checkpoint of "
                                         "another optimizer"):
        rectified.Adam(params).load_state_dict(nadam.state_dict())
