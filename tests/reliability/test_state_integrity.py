"""State integrity: ``load_state_dict`` refuses a state that does not fit, naming the group and
parameter, before changing anything; a hyperparameter changed in one group is honoured by that
group only; ``add_param_group`` after steps works for every optimizer and wrapper; a wrapper's
state survives any number of save/load cycles."""

from __future__ import annotations

import copy
import re

import pytest
import torch

import rectified
from tests.helpers import apply_, build, gradient_sequence, make_params
from tests.registry import CASES, TORCH_TWINS, Case
from tests.reliability.support import (
    ENGINE_OPTIONS,
    RULE_CASES,
    assert_equal_tensors,
    assert_same_state,
    case_engine_id,
    case_engine_params,
    inner,
    roundtrip,
    state_tensors,
)

# Values a group's hyperparameters are changed to mid-run (only those the group has).
CHANGES = {
    "betas": (0.5, 0.9),
    "eps": 1e-3,
    "weight_decay": 0.05,
    "momentum": 0.3,
    "alpha": 0.7,
    "rho": 0.6,
    "lr_decay": 0.05,
    "final_lr": 0.05,
    "gamma": 0.02,
    "lookahead_alpha": 0.9,
    "lookahead_k": 4,
}
WRAPPERS = tuple(case for case in CASES if case.wrapper)
# Keys that are not hyperparameters: torch.optim adds ``differentiable`` on load.
NOT_HYPERPARAMETERS = ("params", "differentiable")


def _hyperparameters(group) -> dict:
    return {k: v for k, v in group.items() if k not in NOT_HYPERPARAMETERS}


def _trained(case: Case, steps: int = 5, **overrides):
    params = make_params()
    optimizer = build(case, params, **overrides)
    apply_(optimizer, params, gradient_sequence(params, steps))
    return params, optimizer


def _fingerprint(optimizer):
    """Everything a load could change: state tensors and every group's hyperparameters."""
    groups = [_hyperparameters(g) for g in optimizer.param_groups]
    return state_tensors(optimizer), copy.deepcopy(groups)


def _assert_unchanged(optimizer, fingerprint) -> None:
    state, groups = _fingerprint(optimizer)
    assert_same_state(state, fingerprint[0])
    assert groups == fingerprint[1]


def _refused(optimizer, state_dict, message: str) -> None:
    before = _fingerprint(optimizer)
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(state_dict)
    _assert_unchanged(optimizer, before)


def _other(case: Case, params, **overrides):
    """A trained optimizer of the same case over copies of ``params`` (state to protect)."""
    copies = [p.detach().clone().requires_grad_() for p in params]
    optimizer = build(case, copies, **overrides)
    apply_(optimizer, copies, gradient_sequence(copies, 2, seed=7))
    return optimizer


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_load_refuses_another_number_of_groups(case):
    params, optimizer = _trained(case)
    single = case.build([p.detach().clone().requires_grad_() for p in params], **case.kwargs)
    _refused(single, optimizer.state_dict(),
             re.escape("loaded state dict has 2 parameter groups, the optimizer has 1"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_load_refuses_another_number_of_parameters_in_a_group(case):
    params, optimizer = _trained(case)
    saved = optimizer.state_dict()
    copies = [p.detach().clone().requires_grad_() for p in params]
    lr = case.kwargs["lr"]
    target = case.build([{"params": copies[:2]}, {"params": copies[2:3], "lr": lr}],
                        **case.kwargs)
    _refused(target, saved, re.escape("parameter group 1 has 2 parameters, the optimizer's has 1"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_load_refuses_a_state_tensor_of_another_shape_naming_group_parameter_and_key(case):
    """Every state tensor of parameter 1 of group 1 in turn (slow weights included)."""
    params, optimizer = _trained(case)
    target = _other(case, params)
    saved = optimizer.state_dict()
    index = saved["param_groups"][1]["params"][1]
    keys = [k for k, v in saved["state"][index].items() if torch.is_tensor(v) and v.dim() > 0]
    assert keys
    for key in keys:
        broken = copy.deepcopy(saved)
        broken["state"][index][key] = torch.zeros(3, 7, dtype=torch.float64)
        message = f"state '{key}' of parameter 1 in group 1 has shape (3, 7)"
        _refused(target, broken, re.escape(message))


@pytest.mark.parametrize("kind", [torch.complex128, torch.int64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_load_refuses_a_state_tensor_of_another_dtype_kind(case, kind):
    params, optimizer = _trained(case)
    target = _other(case, params)
    saved = optimizer.state_dict()
    index = saved["param_groups"][0]["params"][0]
    for key, value in saved["state"][index].items():
        if not torch.is_tensor(value) or value.dim() == 0:
            continue
        broken = copy.deepcopy(saved)
        broken["state"][index][key] = value.to(kind)
        message = f"state '{key}' of parameter 0 in group 0 has dtype {kind}"
        _refused(target, broken, re.escape(message))


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_load_casts_float_state_of_another_width_to_the_parameter_dtype(case):
    """The documented exception to the dtype check: float64 state into float32 parameters is
    cast on load (as torch.optim does), so no step mixes widths."""
    _, optimizer = _trained(case)
    params32 = make_params(torch.float32)
    target = build(case, params32)
    target.load_state_dict(optimizer.state_dict())
    for p in params32:
        for key, value in inner(target).state.get(p, {}).items():
            if torch.is_tensor(value) and value.dim() > 0:
                assert value.dtype == torch.float32, key
    apply_(target, params32, gradient_sequence(params32, 2))
    assert all(p.dtype == torch.float32 and p.isfinite().all() for p in params32)


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.name)
def test_load_refuses_zero_dim_state_for_a_parameter_with_dimensions(case):
    scalar = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = case.build([scalar], **case.kwargs)
    for _ in range(2):
        scalar.grad = torch.tensor(0.5, dtype=torch.float64)
        optimizer.step()
    vector = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    target = case.build([vector], **case.kwargs)
    with pytest.raises(ValueError, match=re.escape("of parameter 0 in group 0 has shape ()")):
        target.load_state_dict(optimizer.state_dict())


def _present_changes(group) -> dict:
    return {
        key: value for key, value in CHANGES.items()
        if key in group and not (key == "momentum" and group[key] == 0)
    }


def _change(optimizer, group_index: int, changes: dict) -> None:
    optimizer.param_groups[group_index].update(changes)


@pytest.mark.parametrize(("case", "engine"), case_engine_params(CASES), ids=case_engine_id)
def test_hyperparameters_changed_in_one_group_apply_to_that_group_only(case, engine):
    """Two groups with different betas (a step-size cache shared between groups shows here);
    after 4 steps group 1 changes every hyperparameter it has. Each group must follow its own
    optimizer run alone, bit for bit."""
    steps, change_at = 10, 4
    params = make_params()
    sequence = gradient_sequence(params, steps)
    options = {**ENGINE_OPTIONS[engine]}
    optimizer = build(case, params, **options)
    if "betas" in optimizer.param_groups[1]:
        optimizer.param_groups[1]["betas"] = (0.7, 0.95)
    changes = _present_changes(optimizer.param_groups[1])
    assert changes

    alone = [make_params()[:2], make_params()[2:]]
    lr = case.kwargs["lr"]
    singles = [case.build(alone[0], **{**case.kwargs, **options}),
               case.build(alone[1], **{**case.kwargs, **options, "lr": lr * 0.5})]
    if "betas" in singles[1].param_groups[0]:
        singles[1].param_groups[0]["betas"] = (0.7, 0.95)
    for step, grads in enumerate(sequence):
        if step == change_at:
            _change(optimizer, 1, changes)
            _change(singles[1], 0, changes)
        apply_(optimizer, params, [grads])
        apply_(singles[0], alone[0], [grads[:2]])
        apply_(singles[1], alone[1], [grads[2:]])
    assert_equal_tensors(params, alone[0] + alone[1], what="parameter")


@pytest.mark.parametrize(("case", "engine"), case_engine_params(TORCH_TWINS), ids=case_engine_id)
def test_hyperparameters_changed_mid_run_match_torch_optim(case, engine):
    steps, change_at = 10, 4
    params = make_params()
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    sequence = gradient_sequence(params, steps)
    ours = build(case, params, **ENGINE_OPTIONS[engine])
    lr = case.kwargs["lr"]
    theirs = case.torch_twin(
        [{"params": twin_params[:2]}, {"params": twin_params[2:], "lr": lr * 0.5}],
        **{**case.kwargs, "foreach": False},
    )
    changes = _present_changes(theirs.param_groups[1])
    for step, grads in enumerate(sequence):
        if step == change_at:
            _change(ours, 1, changes)
            _change(theirs, 1, changes)
        apply_(ours, params, [grads])
        apply_(theirs, twin_params, [grads])
    for p, q in zip(params, twin_params):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize(("case", "engine"), case_engine_params(CASES), ids=case_engine_id)
def test_add_param_group_after_steps_starts_a_fresh_independent_group(case, engine):
    """A group added after 4 steps moves exactly like a new optimizer over its parameters,
    and the old group as if nothing had been added; the result also checkpoints and resumes
    bit for bit."""
    steps, add_at = 12, 4
    params = make_params()
    sequence = gradient_sequence(params, steps, frozen=())
    kwargs = {**case.kwargs, **ENGINE_OPTIONS[engine]}
    added = {"params": params[2:], "lr": 0.02}
    optimizer = case.build(params[:2], **kwargs)
    first, second = make_params()[:2], make_params()[2:]
    reference_first = case.build(first, **kwargs)
    reference_second = None
    for step, grads in enumerate(sequence):
        if step == add_at:
            optimizer.add_param_group(added)
            reference_second = case.build([{"params": second, "lr": 0.02}], **kwargs)
        if step == 8:
            saved = roundtrip(optimizer.state_dict())
            resumed = [p.detach().clone().requires_grad_() for p in params]
            optimizer = case.build(resumed[:2], **kwargs)
            optimizer.add_param_group({"params": resumed[2:], "lr": 0.02})
            optimizer.load_state_dict(saved)
            params = resumed
        grads_now = grads if step >= add_at else [*grads[:2], None, None]
        apply_(optimizer, params, [grads_now])
        apply_(reference_first, first, [grads[:2]])
        if reference_second is not None:
            apply_(reference_second, second, [grads[2:]])
    assert_equal_tensors(params, first + second, what="parameter")


@pytest.mark.parametrize(("case", "engine"), case_engine_params(TORCH_TWINS), ids=case_engine_id)
def test_add_param_group_takes_the_defaults_like_torch_optim(case, engine):
    """The added group sets only params and lr: weight decay, betas, momentum... come from the
    constructor's defaults, as in torch.optim."""
    params = make_params()
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    sequence = gradient_sequence(params, 10, frozen=())
    ours = case.build(params[:2], **case.kwargs, **ENGINE_OPTIONS[engine])
    theirs = case.torch_twin(twin_params[:2], **{**case.kwargs, "foreach": False})
    for step, grads in enumerate(sequence):
        if step == 3:
            ours.add_param_group({"params": params[2:], "lr": 0.02})
            theirs.add_param_group({"params": twin_params[2:], "lr": 0.02})
        grads_now = grads if step >= 3 else [*grads[:2], None, None]
        apply_(ours, params, [grads_now])
        apply_(theirs, twin_params, [grads_now])
    for p, q in zip(params, twin_params):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("case", WRAPPERS, ids=lambda c: c.name)
def test_wrapper_state_survives_repeated_save_and_load(case):
    """Save, load into fresh objects, save again (no step between): the same dict; three such
    cycles, then training continues exactly as without them."""
    steps = 11
    sequence = gradient_sequence(make_params(), steps)
    params = make_params()
    straight = build(case, params)
    apply_(straight, params, sequence)

    current = make_params()
    optimizer = build(case, current)
    apply_(optimizer, current, sequence[:5])
    saved = roundtrip(optimizer.state_dict())
    for _ in range(3):
        current = [p.detach().clone().requires_grad_() for p in current]
        optimizer = build(case, current)
        optimizer.load_state_dict(saved)
        again = roundtrip(optimizer.state_dict())
        assert [_hyperparameters(g) for g in again["param_groups"]] == [
            _hyperparameters(g) for g in saved["param_groups"]
        ]
        assert again["state"].keys() == saved["state"].keys() == set(range(len(current)))
        for index, entry in saved["state"].items():
            assert again["state"][index].keys() == entry.keys()
            assert "slow_param" in entry
            for key, value in entry.items():
                assert_equal_tensors([again["state"][index][key]], [value], what=key)
        saved = again
    apply_(optimizer, current, sequence[5:])
    assert_equal_tensors(current, params, what="parameter")


@pytest.mark.parametrize("case", [c for c in RULE_CASES if c.build is rectified.AdaBound]
                         + [c for c in CASES if c.name == "Ranger"], ids=lambda c: c.name)
def test_added_group_keeps_its_own_adabound_base_lr_or_lookahead_keys(case):
    params = make_params()
    optimizer = case.build(params[:2], **case.kwargs)
    optimizer.add_param_group({"params": params[2:], "lr": 0.5, "lookahead_k": 2})
    group = optimizer.param_groups[1]
    if "base_lr" in group:
        assert group["base_lr"] == 0.5
    if isinstance(optimizer, rectified.Lookahead):
        assert (group["lookahead_k"], group["lookahead_step"]) == (2, 0)
    other = case.build([p.detach().clone().requires_grad_() for p in params[:2]], **case.kwargs)
    other.add_param_group({"params": [p.detach().clone().requires_grad_() for p in params[2:]]})
    other.load_state_dict(roundtrip(optimizer.state_dict()))
    assert _hyperparameters(other.param_groups[1]) == _hyperparameters(group)
