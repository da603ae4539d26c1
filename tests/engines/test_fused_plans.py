"""Kept fused plans: reused while nothing changes, and never used once something has.

Each scenario changes something between steps (state replaced, gradients appearing or
vanishing, parameters added, a checkpoint loaded, a counter rewritten...) in the same way for a
fused optimizer, which keeps a plan from step to step, and a reference-engine one; both must end
equal. The plan must also really be used on the steps where nothing changed.
"""

from __future__ import annotations

import sys

import pytest
import torch

import rectified
from rectified.engines.fused.plans import GroupPlan
from tests.helpers import assert_close_relative, roundtrip

STEPS = 10
CHANGE_AT = 5


pytestmark = pytest.mark.usefixtures("fused_kernel")


@pytest.fixture
def plan_steps(monkeypatch):
    """How many group steps ran through a kept plan."""
    calls = []
    original = GroupPlan.step_

    def counted(self, rule, group):
        calls.append(group)
        return original(self, rule, group)

    monkeypatch.setattr(GroupPlan, "step_", counted)
    return calls


def _params(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    shapes = ((6, 5), (7,), (3, 4), (5,))
    return [torch.randn(s, generator=generator, dtype=torch.float64).to(dtype).requires_grad_()
            for s in shapes]


def _grads(params, step):
    generator = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)
            for p in params]


def _steps(opt, params, steps):
    """``opt``'s steps over ``params`` with the gradients of steps ``steps``."""
    for step in steps:
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()


def _replace_state_tensor(opt, params, step):
    opt.state[params[0]]["exp_avg"] = opt.state[params[0]]["exp_avg"].clone().mul_(0.5)


def _replace_state_entry(opt, params, step):
    opt.state[params[1]] = {k: v.clone() for k, v in opt.state[params[1]].items()}


def _rewrite_counter(opt, params, step):
    opt.state[params[2]]["step"].fill_(50.0)


def _change_hyperparameters(opt, params, step):
    opt.param_groups[0]["lr"] = 0.003
    opt.param_groups[0]["betas"] = (0.8, 0.95)
    opt.param_groups[0]["weight_decay"] = 0.1


def _toggle_amsgrad(opt, params, step):
    opt.param_groups[0]["amsgrad"] = True


def _replace_data(opt, params, step):
    params[3].data = params[3].data.flip(0).contiguous()


def _load_checkpoint(opt, params, step):
    opt.load_state_dict(roundtrip(opt.state_dict()))


def _add_param(opt, params, step):
    extra = torch.ones(4, dtype=params[0].dtype, requires_grad=True)
    params.append(extra)
    opt.param_groups[0]["params"].append(extra)


def _add_group(opt, params, step):
    extra = torch.ones(3, dtype=params[0].dtype, requires_grad=True)
    params.append(extra)
    opt.add_param_group({"params": [extra], "lr": 0.02})


SCENARIOS = {
    "nothing": None,
    "state tensor replaced": _replace_state_tensor,
    "state entry replaced": _replace_state_entry,
    "step counter rewritten": _rewrite_counter,
    "hyperparameters changed": _change_hyperparameters,
    "amsgrad switched on": _toggle_amsgrad,
    "parameter data replaced": _replace_data,
    "checkpoint loaded": _load_checkpoint,
    "parameter appended": _add_param,
    "group added": _add_group,
}


OPTIMIZERS = {
    "Adam": lambda params, **kw: rectified.Adam(params, lr=0.01, weight_decay=0.01, **kw),
    "AdamW-maximize": lambda params, **kw: rectified.AdamW(params, lr=0.01, maximize=True, **kw),
    "AdaBound": lambda params, **kw: rectified.AdaBound(params, lr=0.01, final_lr=0.1, **kw),
}


def _train(change, grad_pattern, dtype=torch.float64, optimizer="Adam", **engine):
    params = _params(dtype)
    opt = OPTIMIZERS[optimizer](params, **engine)
    for step in range(STEPS):
        if step == CHANGE_AT and change is not None:
            change(opt, params, step)
        for i, (p, g) in enumerate(zip(params, _grads(params, step))):
            p.grad = None if not grad_pattern(i, step) else g
        opt.step()
    return params


def _always(i, step):
    return True


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_kept_plan_follows_every_change(name, optimizer, plan_steps):
    change = SCENARIOS[name]
    if name == "amsgrad switched on" and optimizer == "AdaBound":
        change = None
    expected = _train(change, _always, optimizer=optimizer, foreach=False)
    actual = _train(change, _always, optimizer=optimizer, fused=True)
    assert_close_relative(actual, expected, rtol=1e-12)
    # Planned from the second step on; a change costs the step it happens at, except where it
    # leaves the group's counters unequal (then every step buckets them on the general path).
    unequal_counters = name in ("step counter rewritten", "parameter appended")
    assert len(plan_steps) >= (CHANGE_AT - 1 if unequal_counters else STEPS - 2)


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(lambda i, step: not (i == 1 and step in (3, 4, 7)), id="grad vanishes"),
        pytest.param(lambda i, step: i != 2 or step >= 6, id="grad appears late"),
        pytest.param(lambda i, step: (i + step) % 3 != 0, id="grads alternate"),
    ],
)
def test_gradients_appearing_and_vanishing(pattern, plan_steps):
    expected = _train(None, pattern, foreach=False)
    actual = _train(None, pattern, fused=True)
    assert_close_relative(actual, expected, rtol=1e-12)


def test_unchanged_groups_run_planned(plan_steps):
    _train(None, _always, fused=True)
    assert len(plan_steps) == STEPS - 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_groups_run_planned(dtype, plan_steps):
    expected = _train(None, _always, dtype, foreach=False)
    actual = _train(None, _always, dtype, fused=True)
    assert len(plan_steps) == STEPS - 1
    tolerance = 1e-6 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps
    assert_close_relative([p.float() for p in actual], [p.float() for p in expected],
                          rtol=tolerance * 20)


def _planned_optimizer():
    params = _params()
    other = torch.randn(3, dtype=torch.float64, requires_grad=True)
    opt = rectified.RAdam([{"params": params}, {"params": [other]}], lr=0.01, fused=True)
    for step in range(3):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        other.grad = torch.ones_like(other)
        opt.step()
    return opt, params, other


def _sparse_gradient(opt, other):
    other.grad = torch.ones_like(other).to_sparse()


def _bad_learning_rate(opt, other):
    opt.param_groups[1]["lr"] = -1.0


@pytest.mark.parametrize(
    "spoil, error",
    [
        (_sparse_gradient, "RAdam does not support sparse gradients"),
        (_bad_learning_rate, "Invalid learning rate: -1.0"),
    ],
)
def test_a_bad_second_group_raises_before_the_planned_first_moves(spoil, error):
    opt, params, other = _planned_optimizer()
    spoil(opt, other)
    before = [p.detach().clone() for p in params]
    counts = [opt.state[p]["step"].item() for p in params]
    with pytest.raises((RuntimeError, ValueError), match=error):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert [opt.state[p]["step"].item() for p in params] == counts


def test_non_contiguous_gradient_leaves_the_plan_and_matches():
    results = []
    for engine in ({"foreach": False}, {"fused": True}):
        params = _params()
        opt = rectified.AdamW(params, lr=0.01, **engine)
        for step in range(6):
            for p, g in zip(params, _grads(params, step)):
                p.grad = g
            if step == 4:
                params[0].grad = params[0].grad.t().contiguous().t()
                assert not params[0].grad.is_contiguous()
            opt.step()
        results.append(params)
    assert_close_relative(results[1], results[0], rtol=1e-12)


@pytest.mark.parametrize("skipped", [False, True], ids=["after a step", "after a skipped step"])
def test_plans_do_not_keep_gradients_alive(skipped):
    params = _params()
    opt = rectified.Adam(params, lr=0.01, fused=True, skip_nonfinite=True)
    for step in range(4):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        if skipped and step == 3:
            params[2].grad[0, 0] = float("nan")
        opt.step()
    assert opt.param_groups[0].get("nonfinite_skips", 0) == int(skipped)
    probe = params[0].grad
    opt.zero_grad(set_to_none=True)
    assert sys.getrefcount(probe) == 2  # this name and getrefcount's argument


def _skipping_run(dtype, **options):
    """RAdam for STEPS steps, with an inf gradient at steps 4 and 5 (skipped), on the reference
    and the fused engine."""
    results = []
    for engine in ({"foreach": False}, {"fused": True}):
        params = _params(dtype)
        opt = rectified.RAdam(params, lr=0.01, skip_nonfinite=True, **options, **engine)
        for step in range(STEPS):
            for p, g in zip(params, _grads(params, step)):
                p.grad = g
            if step in (4, 5):
                params[1].grad[0] = float("inf")
            opt.step()
        results.append(params)
    return results


def test_a_skipped_step_leaves_the_plan_in_step(plan_steps):
    """Steps skipped for non-finite gradients neither move nor count; planned steps go on."""
    reference, fused = _skipping_run(torch.float64)
    assert_close_relative(fused, reference, rtol=1e-12)
    assert len(plan_steps) == STEPS - 3

# -- kept plans of groups that store state in a format ------------------------------------------
@pytest.fixture
def formatted_plan_steps(monkeypatch):
    """How many group steps ran through a kept formatted plan."""
    from rectified.engines.fused.formatted import FormattedPlan

    calls = []
    original = FormattedPlan.step_

    def counted(self, rule, group):
        done = original(self, rule, group)
        calls.extend([group] if done else [])
        return done

    monkeypatch.setattr(FormattedPlan, "step_", counted)
    return calls


def _replace_moment(opt, params, step):
    opt.state[params[0]]["exp_avg"] = opt.state[params[0]]["exp_avg"].clone()


def _replace_moment_data(opt, params, step):
    opt.state[params[1]]["exp_avg_sq"].data = opt.state[params[1]]["exp_avg_sq"].data.clone()


def _replace_scales(opt, params, step):
    entry = opt.state[params[0]]
    if "exp_avg_scales" in entry:
        entry["exp_avg_scales"] = entry["exp_avg_scales"].clone()


def _switch_format(opt, params, step):
    group = opt.param_groups[0]
    group["state_format"] = "bfloat16" if group["state_format"] == "8bit" else "8bit"


def _reseed(opt, params, step):
    opt.param_groups[0]["rounding_seed"] = 7


FORMATTED_SCENARIOS = {
    **{name: change for name, change in SCENARIOS.items() if name != "state tensor replaced"},
    "moment replaced": _replace_moment,
    "moment data replaced": _replace_moment_data,
    "scales replaced": _replace_scales,
    "state format changed": _switch_format,
    "rounding seed changed": _reseed,
}


@pytest.mark.parametrize("state_format", ["8bit", "bfloat16"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", list(FORMATTED_SCENARIOS))
def test_a_kept_formatted_plan_follows_every_change(name, optimizer, state_format,
                                                    formatted_plan_steps):
    """As above with 8-bit and bfloat16 state (float32 parameters, every tensor in the format):
    the fused engine, planned, against the reference engine, within the formats' agreement
    between engines (codes may differ where float32 rounding puts a value on a code boundary)."""
    change = FORMATTED_SCENARIOS[name]
    if name == "amsgrad switched on" and optimizer == "AdaBound":
        change = None
    storage = {"state_format": state_format, "min_8bit_size": 0}
    expected = _train(change, _always, torch.float32, optimizer, foreach=False, **storage)
    actual = _train(change, _always, torch.float32, optimizer, fused=True, **storage)
    assert_close_relative(actual, expected, rtol=1e-3)
    if name == "nothing":
        assert len(formatted_plan_steps) == STEPS - 1
    else:
        assert len(formatted_plan_steps) >= CHANGE_AT - 1


@pytest.mark.parametrize("state_format", ["8bit", "bfloat16"])
def test_a_kept_formatted_plan_steps_as_the_general_path_bit_for_bit(state_format, monkeypatch):
    """The plan hands the kernel the same tensors, streams and scalars as the general path:
    parameters, codes and scales identical after every step."""
    from rectified.engines.fused import formatted

    runs = []
    for keep in (True, False):
        if not keep:
            monkeypatch.setattr(formatted.FormattedPlan, "make", lambda *args: None)
        params = _params(torch.float32)
        opt = rectified.RAdam(params, lr=0.01, fused=True, state_format=state_format,
                              min_8bit_size=0, param_rounding="stochastic")
        _steps(opt, params, range(STEPS))
        runs.append((params, opt))
    (planned, planned_opt), (general, general_opt) = runs
    for a, b in zip(planned, general):
        assert torch.equal(a, b)
        for key, value in planned_opt.state[a].items():
            assert torch.equal(value, general_opt.state[b][key]), key


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param(lambda i, step: not (i == 1 and step in (3, 4, 7)), id="grad vanishes"),
        pytest.param(lambda i, step: i != 2 or step >= 6, id="grad appears late"),
    ],
)
def test_formatted_plans_follow_gradients_appearing_and_vanishing(pattern,
                                                                  formatted_plan_steps):
    storage = {"state_format": "8bit", "min_8bit_size": 0}
    expected = _train(None, pattern, torch.float32, foreach=False, **storage)
    actual = _train(None, pattern, torch.float32, fused=True, **storage)
    assert_close_relative(actual, expected, rtol=1e-3)
    assert formatted_plan_steps


def test_a_skipped_step_leaves_a_formatted_plan_in_step(formatted_plan_steps):
    reference, fused = _skipping_run(torch.float32, state_format="8bit", min_8bit_size=0)
    assert_close_relative(fused, reference, rtol=1e-3)
    assert len(formatted_plan_steps) == STEPS - 3


def test_a_rule_whose_step_is_not_one_operation_keeps_no_formatted_plan(monkeypatch):
    """NAdam's step is a composition of primitives: the one-pass kernel never takes it, so a
    plan kept for it would be made and dropped at every step."""
    from rectified.engines.fused.formatted import FormattedPlan

    made = []
    original = FormattedPlan.__init__
    monkeypatch.setattr(FormattedPlan, "__init__",
                        lambda self, *args: made.append(1) or original(self, *args))
    params = _params(torch.float32)
    opt = rectified.NAdam(params, lr=0.01, fused=True, state_format="8bit", min_8bit_size=0)
    _steps(opt, params, range(4))
    assert made == []


def test_a_moment_resized_in_place_under_a_formatted_plan_raises_before_anything_moves():
    """A moment resized in place keeps its object and its memory, which the plan checks; the
    kernel refuses it, and the general path's checks then raise before the step moves."""
    params = _params(torch.float32)
    opt = rectified.RAdam(params, lr=0.01, fused=True, state_format="8bit", min_8bit_size=0)
    _steps(opt, params, range(3))
    pointer = opt.state[params[0]]["exp_avg"].data_ptr()
    opt.state[params[0]]["exp_avg"].resize_(3)
    assert opt.state[params[0]]["exp_avg"].data_ptr() == pointer
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match="state 'exp_avg' of parameter 0 has shape"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert [opt.state[p]["step"].item() for p in params] == [3.0] * len(params)


# -- changes a kept plan must see however they are timed ----------------------------------------
def _paired_params(dtype=torch.float64):
    generator = torch.Generator().manual_seed(7)
    return [torch.randn(40_000, generator=generator, dtype=torch.float64).to(dtype)
            .requires_grad_() for _ in range(3)]


def _share_state_memory(opt, params):
    with torch.no_grad():  # the parameter now lives in its own exp_avg's memory
        params[1].data = opt.state[params[1]]["exp_avg"].data


def _share_parameter_memory(opt, params):
    params[1].data = params[0].data


def _share_counter(opt, params):
    opt.state[params[1]]["step"].set_(opt.state[params[0]]["step"])


def _list_in_two_groups(opt, params):
    opt.param_groups[0]["params"].append(params[2])


def _run_timed(change, at, dtype=torch.float64, **options):
    """Five steps of Adam over two groups (parameters 0-1 and 2); ``change`` after step ``at``
    (0: right after the step that made the plan, before its first check)."""
    params = _paired_params(dtype)
    opt = rectified.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=0.1, **options)
    for step in range(5):
        if step == at + 1:
            change(opt, params)
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    return [p.detach().clone() for p in params], [
        float(opt.state[p]["step"]) for p in params]


TIMED = {
    "parameter in its state's memory": _share_state_memory,
    "parameters sharing memory": _share_parameter_memory,
    "step counters sharing memory": _share_counter,
    "parameter listed in two groups": _list_in_two_groups,
}


@pytest.mark.parametrize("at", [0, 2])
@pytest.mark.parametrize("name", list(TIMED))
def test_a_change_right_after_the_plan_is_made_is_seen(name, at):
    """Memory made shared, counters made one, a parameter listed in a second group: whether
    right after the step that made the plan or later, the step is the reference engine's."""
    actual, actual_steps = _run_timed(TIMED[name], at, fused=True)
    expected, expected_steps = _run_timed(TIMED[name], at, foreach=False)
    assert actual_steps == expected_steps
    assert_close_relative(actual, expected, rtol=1e-12)


@pytest.mark.parametrize("state_format", ["8bit", "bfloat16"])
@pytest.mark.parametrize("name", ["parameters sharing memory", "step counters sharing memory"])
def test_a_change_right_after_a_formatted_plan_is_made_is_seen(name, state_format,
                                                               monkeypatch):
    """As above with state in a format: the planned step is the general path's, bit for bit."""
    from rectified.engines.fused import formatted

    storage = {"state_format": state_format, "min_8bit_size": 0}
    planned = _run_timed(TIMED[name], 0, torch.float32, fused=True, **storage)
    monkeypatch.setattr(formatted.FormattedPlan, "make", lambda *args: None)
    general = _run_timed(TIMED[name], 0, torch.float32, fused=True, **storage)
    assert planned[1] == general[1]
    for a, b in zip(planned[0], general[0]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("spoil", ["skipped", "raised"])
def test_a_state_entry_replaced_before_a_step_that_does_not_run_is_used_after_it(spoil):
    """``optimizer.state[p]`` replaced, then a step skipped (a non-finite gradient under
    ``skip_nonfinite``) or refused (a sparse gradient): the next steps use the new entry."""
    def run(**engine):
        params = _paired_params()
        opt = rectified.Adam(params, lr=0.1, skip_nonfinite=True, **engine)
        for step in range(6):
            for p, g in zip(params, _grads(params, step)):
                p.grad = g
            if step == 1:  # before the first check of the plan made at step 0
                opt.state[params[1]] = {k: v.clone() for k, v in opt.state[params[1]].items()}
                if spoil == "skipped":
                    params[0].grad[0] = float("inf")
                else:
                    params[0].grad = params[0].grad.to_sparse()
            try:
                opt.step()
            except RuntimeError:
                assert spoil == "raised"
        return [p.detach().clone() for p in params], float(opt.state[params[1]]["step"])

    (actual, actual_step), (expected, expected_step) = run(fused=True), run(foreach=False)
    assert actual_step == expected_step
    assert_close_relative(actual, expected, rtol=1e-12)


def test_codes_reshaped_in_place_under_a_formatted_plan_raise_before_any_group_moves():
    """8-bit codes given another shape in place (same memory): refused in the checks before
    any group moves, as on the reference engine, at every attempt."""
    params = [torch.randn(200, 250).requires_grad_(), torch.randn(50_000).requires_grad_()]
    opt = rectified.Adam([{"params": [params[0]]},
                          {"params": [params[1]], "state_format": "8bit"}], lr=0.1, fused=True)
    for step in range(3):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        opt.step()
    opt.state[params[1]]["exp_avg"].as_strided_((250, 200), (1, 250))
    for _ in range(2):
        before = [p.detach().clone() for p in params]
        with pytest.raises(RuntimeError, match="state 'exp_avg' of parameter 0 has shape"):
            opt.step()
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
        assert [float(opt.state[p]["step"]) for p in params] == [3.0, 3.0]


@pytest.mark.parametrize("state_format", [None, "bfloat16", "8bit"])
def test_a_parameter_reshaped_in_place_under_a_plan_is_refused_as_on_every_path(state_format):
    """``p.data = p.data.view(...)`` (same memory, another shape): a formatted plan's codes kept
    the old shape and stepped the parameter with them, where every other path (and torch.optim)
    refuses the shapes; the plan now notices the parameter's shape, at every attempt."""
    params = [torch.randn(200, 250).requires_grad_(), torch.randn(50_000).requires_grad_()]
    opt = rectified.Adam(params, lr=0.1, fused=True, state_format=state_format,
                         min_8bit_size=0)
    _steps(opt, params, range(3))
    params[0].data = params[0].data.view(250, 200)
    for step in range(3, 5):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        before = [p.detach().clone() for p in params]
        with pytest.raises(RuntimeError, match="state 'exp_avg' of parameter 0 has shape"):
            opt.step()
        assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))
        assert [float(opt.state[p]["step"]) for p in params] == [3.0, 3.0]


def test_gradients_of_another_dtype_keep_no_plan(plan_steps, monkeypatch):
    """float32 parameters with bfloat16 gradients run the general path (which converts them)
    without making a plan at every step that the kernel's checks would then drop."""
    made = []
    original = GroupPlan.make.__func__

    def counted(cls, *args):
        plan = original(cls, *args)
        made.append(plan)
        return plan

    monkeypatch.setattr(GroupPlan, "make", classmethod(counted))
    params = _params(torch.float32)
    for p in params:
        p.grad_dtype = None
    opt = rectified.Adam(params, lr=0.01, fused=True)
    for step in range(4):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g.bfloat16()
        opt.step()
    assert plan_steps == [] and not any(made)
