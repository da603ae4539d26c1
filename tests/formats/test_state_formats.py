"""State formats on every Adam-family optimizer and engine: the format is load -> rule in
float32 -> store, so every engine must agree with the reference engine, and a step on decoded
state must be torch.optim's step on the same values, re-encoded."""

from __future__ import annotations

import copy

import pytest
import torch

import rectified
from rectified.formats import codes, load, rounding
from tests.helpers import roundtrip
from tests.registry import CASES, case_id

FORMAT_CASES = tuple(
    case for case in CASES
    if case.build in (rectified.Adam, rectified.AdamW, rectified.RAdam, rectified.AdaBound,
                      rectified.NAdam, rectified.Ranger)
)
ENGINES = {"reference": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
FORMATS = ("8bit", "bfloat16")
SHAPES = ((40, 17), (300,), (0,), (3, 5, 7), (1,))


def _params(dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator).to(dtype).requires_grad_()
            for shape in SHAPES]


def _grads(params, step):
    generator = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=generator).to(p.dtype) * (1 + step % 3)
            for p in params]


def _inner(optimizer):
    return optimizer.optimizer if isinstance(optimizer, rectified.Lookahead) else optimizer


def _run(case, params, optimizer, start, stop):
    for step in range(start, stop):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        optimizer.step()


def _train(case, steps=12, dtype=torch.float32, **kwargs):
    params = _params(dtype)
    optimizer = case.build(params, **{**case.kwargs, "min_8bit_size": 0, **kwargs})
    _run(case, params, optimizer, 0, steps)
    return params, optimizer


def _codes(optimizer, params):
    state = _inner(optimizer).state
    return [state[p][key] for p in params if state[p] for key in ("exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("case", FORMAT_CASES, ids=case_id)
def test_engines_agree_with_the_reference(case, state_format, fused_kernel):
    results = {}
    for name, engine in ENGINES.items():
        params, optimizer = _train(case, state_format=state_format, **engine)
        results[name] = (params, _codes(optimizer, params))
        state = _inner(optimizer).state[params[0]]
        if state_format == "8bit":
            assert state["exp_avg"].dtype == torch.uint8
            assert state["exp_avg_scales"].shape == (codes.scale_count(params[0].numel()),)
        else:
            assert state["exp_avg"].dtype == torch.bfloat16
    reference_params, reference_codes = results["reference"]
    for name in ("foreach", "fused"):
        params, stored = results[name]
        for a, b in zip(params, reference_params):
            # float32 in another order may put a value on the other side of a code boundary;
            # one code step of m moves a parameter by at most lr / 8 of its step.
            torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)
        same = sum(int((x == y).sum()) for x, y in zip(stored, reference_codes))
        total = sum(x.numel() for x in stored)
        assert same >= 0.98 * total, (name, same, total)


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("twin", ["Adam", "RAdam"])
def test_a_step_is_torchs_step_on_the_decoded_state(twin, engine, fused_kernel):
    """Independent reference: torch.optim's step on the decoded moments, encoded with the
    same random bits (the format's definition, with torch's rule)."""
    ours_class, torch_class = getattr(rectified, twin), getattr(torch.optim, twin)
    params = _params()
    optimizer = ours_class(params, lr=0.01, state_format="8bit", min_8bit_size=0,
                           **ENGINES[engine])
    _run(None, params, optimizer, 0, 5)
    start = [p.detach().clone() for p in params]
    moments = {p: {k: load(optimizer.state[p], k, torch.float32) for k in ("exp_avg",
                                                                            "exp_avg_sq")}
               for p in params if optimizer.state[p]}
    _run(None, params, optimizer, 5, 6)
    for index, (p, p0) in enumerate(zip(params, start)):
        if p.numel() == 0:
            continue
        twin_param = p0.clone().requires_grad_()
        reference = torch_class([twin_param], lr=0.01, foreach=False)
        reference.state[twin_param] = {"step": torch.tensor(5.0), **{
            k: v.clone() for k, v in moments[p].items()}}
        twin_param.grad = _grads(params, 5)[index]
        reference.step()
        torch.testing.assert_close(p.detach(), twin_param.detach(), rtol=1e-5, atol=1e-6)
        bits = rounding.element_bits(rounding.stream_key(0, 6, index), p.numel())
        for key, code_map, random16 in (
                ("exp_avg", codes.SIGNED, rounding.first_moment_bits(bits)),
                ("exp_avg_sq", codes.UNSIGNED, rounding.second_moment_bits(bits))):
            expected, scales = codes.encode(reference.state[twin_param][key], code_map, random16)
            same = (expected == optimizer.state[p][key]).float().mean().item()
            assert same >= 0.99, (key, same)
            torch.testing.assert_close(scales, optimizer.state[p][key + "_scales"], rtol=1e-6,
                                       atol=0)


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("case", FORMAT_CASES, ids=case_id)
def test_checkpoint_round_trips_and_resumes_bit_exactly(case, engine, state_format,
                                                        fused_kernel):
    kwargs = {"state_format": state_format, **ENGINES[engine]}
    whole, _ = _train(case, steps=10, **kwargs)
    half, optimizer = _train(case, steps=5, **kwargs)
    saved = roundtrip(optimizer.state_dict())
    params = _params()
    with torch.no_grad():
        for p, q in zip(params, half):
            p.copy_(q)
    resumed = case.build(params, **{**case.kwargs, "min_8bit_size": 0, **kwargs})
    resumed.load_state_dict(saved)
    again = resumed.state_dict()
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(again["state"][index][key], value), key
    _run(case, params, resumed, 5, 10)
    for p, q in zip(params, whole):
        assert torch.equal(p, q)


@pytest.mark.parametrize("case", FORMAT_CASES, ids=case_id)
def test_checkpoints_convert_between_formats(case):
    _, optimizer = _train(case, state_format="float32")
    exact = {i: dict(e) for i, e in optimizer.state_dict()["state"].items()}
    into_8bit = case.build(_params(), **{**case.kwargs, "min_8bit_size": 0,
                                         "state_format": "8bit"})
    into_8bit.load_state_dict(optimizer.state_dict())
    assert _inner(into_8bit).param_groups[0]["state_format"] == "8bit"
    back = case.build(_params(), **case.kwargs)
    back.load_state_dict(into_8bit.state_dict())
    for index, entry in back.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in entry:
                continue
            value, original = entry[key], exact[index][key]
            assert value.dtype == torch.float32 and key + "_scales" not in entry
            code_map = codes.SIGNED if key == "exp_avg" else codes.UNSIGNED
            assert torch.equal(value, codes.decode(*codes.encode(original, code_map), code_map))


def test_torch_checkpoints_load_into_8bit_and_float32_state_loads_into_torch():
    params = _params()
    torch_adam = torch.optim.Adam(params, lr=0.01)
    _run(None, params, torch_adam, 0, 3)
    ours = rectified.Adam(params, lr=0.01, state_format="8bit", min_8bit_size=0)
    ours.load_state_dict(torch_adam.state_dict())
    assert ours.state[params[0]]["exp_avg"].dtype == torch.uint8
    float32 = rectified.Adam(params, lr=0.01)
    float32.load_state_dict(ours.state_dict())
    torch_again = torch.optim.Adam(params, lr=0.01)
    torch_again.load_state_dict(float32.state_dict())
    assert torch_again.state[params[0]]["exp_avg"].dtype == torch.float32


def _scales_with(value: float):
    def change(entry):
        entry["exp_avg_sq_scales"] = entry["exp_avg_sq_scales"].clone()
        entry["exp_avg_sq_scales"][0] = value
    return change


@pytest.mark.parametrize("into", ["8bit", None])
@pytest.mark.parametrize("change", [
    lambda e: e.__setitem__("exp_avg_scales", e["exp_avg_scales"][:-1]),
    lambda e: e.__setitem__("exp_avg_scales", e["exp_avg_scales"].double()),
    lambda e: e.__setitem__("exp_avg", e["exp_avg"].float()),
    lambda e: e.__setitem__("exp_avg_scales", e["exp_avg_scales"].tolist()),
    _scales_with(float("nan")),
    _scales_with(float("inf")),
], ids=["short", "float64", "codes-float32", "list", "nan", "inf"])
def test_a_hand_edited_8bit_checkpoint_is_refused_before_anything_changes(change, into):
    """Refused by an 8-bit optimizer and by one with float32 state (which would convert the
    codes), before anything changes."""
    params = _params()
    optimizer = rectified.Adam(params, lr=0.01, state_format="8bit", min_8bit_size=0)
    _run(None, params, optimizer, 0, 2)
    saved = optimizer.state_dict()
    if into is None:
        target = rectified.Adam(params, lr=0.01)
        _run(None, params, target, 0, 2)
        optimizer, saved = target, copy.deepcopy(saved)
    before = roundtrip(optimizer.state_dict())
    saved["state"][0] = dict(saved["state"][0])  # the live entry stays as it was
    change(saved["state"][0])
    with pytest.raises(ValueError, match="exp_avg"):
        optimizer.load_state_dict(saved)
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, before["state"][index][key])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"state_format": "int8"}, "Invalid state_format: 'int8'"),
    ({"state_format": "bf16"}, "Invalid state_format: 'bf16'"),
    ({"state_format": "8bit", "state_dtype": torch.float32}, "both choose the state's dtype"),
    ({"param_rounding": "up"}, "Invalid param_rounding: 'up'"),
    ({"min_8bit_size": -1}, "Invalid min_8bit_size: -1"),
    ({"rounding_seed": -3}, "Invalid rounding_seed: -3"),
    ({"state_format": "8bit", "differentiable": True}, "rounding has no derivative"),
])
def test_bad_storage_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rectified.RAdam(_params(), **kwargs)
    optimizer = rectified.RAdam(_params())
    optimizer.param_groups[0].update(kwargs)
    with pytest.raises(ValueError, match=message):
        optimizer.step()


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_nonfinite_gradient_skipped_changes_nothing(engine, state_format, fused_kernel):
    params = _params()
    optimizer = rectified.RAdam(params, state_format=state_format, min_8bit_size=0,
                                skip_nonfinite=True, **ENGINES[engine])
    _run(None, params, optimizer, 0, 3)
    before = roundtrip({"state": optimizer.state_dict(), "params": params})
    for p, g in zip(params, _grads(params, 3)):
        p.grad = g
    params[0].grad[3, 4] = float("nan")
    optimizer.step()
    for p, q in zip(params, before["params"]):
        assert torch.equal(p, q)
    after = optimizer.state_dict()["state"]
    for index, entry in before["state"]["state"].items():
        for key, value in entry.items():
            assert torch.equal(after[index][key], value)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_nan_gradient_leaves_the_rest_of_its_block_finite(engine, fused_kernel):
    params = _params()
    optimizer = rectified.Adam(params, state_format="8bit", min_8bit_size=0, **ENGINES[engine])
    _run(None, params, optimizer, 0, 3)
    for p, g in zip(params, _grads(params, 3)):
        p.grad = g
    params[0].grad.view(-1)[7] = float("nan")
    optimizer.step()
    m = load(optimizer.state[params[0]], "exp_avg", torch.float32).view(-1)
    assert m[7].isnan() and m[:256].isnan().sum() == 1
    assert optimizer.state[params[0]]["exp_avg_scales"][0] < 0  # the block is marked
    assert params[0].view(-1)[:256].isnan().sum() == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_gradient_whose_square_overflows_freezes_its_element_as_float32_state_does(
        engine, fused_kernel):
    """A gradient of 1e22 makes v inf in float32 ((1 - β2) g² overflows): float32 state then
    steps that element by m / inf = 0 and keeps it finite; so must 8-bit state (v's top code is
    +inf), on every engine. Elements of other blocks step as with float32 state; those of its
    own block, whose m is coded against the huge m beside them, stay finite."""
    runs = {}
    for state_format in (None, "8bit"):
        param = torch.nn.Parameter(torch.linspace(-1, 1, 600))
        optimizer = rectified.Adam([param], lr=0.01, state_format=state_format,
                                   min_8bit_size=0, **ENGINES[engine])
        for step in range(4):
            grad = torch.linspace(1, 2, 600)
            if step == 1:
                grad[10] = 1e22
            param.grad = grad
            optimizer.step()
        runs[state_format] = param.detach().clone()
    assert runs[None].isfinite().all() and runs["8bit"].isfinite().all()
    assert runs["8bit"][10] == runs[None][10]  # moved in the first step only
    assert (runs["8bit"][256:] - runs[None][256:]).abs().max() < 4e-3  # of 0.04 moved


def test_small_tensors_keep_float32_state_and_8bit_is_2_bytes_a_parameter():
    big, small = torch.zeros(1_000_000, requires_grad=True), torch.zeros(4095, requires_grad=True)
    optimizer = rectified.RAdam([big, small], state_format="8bit")
    big.grad, small.grad = torch.randn_like(big), torch.randn_like(small)
    optimizer.step()
    assert {v.dtype for k, v in optimizer.state[small].items() if k != "step"} == {torch.float32}
    state_bytes = sum(v.numel() * v.element_size() for k, v in optimizer.state[big].items()
                      if k != "step")
    assert state_bytes / big.numel() <= 2.07
    bf16 = rectified.RAdam([big], state_format="bfloat16")
    bf16.step()
    assert sum(v.numel() * v.element_size() for k, v in bf16.state[big].items()
               if k != "step") / big.numel() == 4


def test_switching_a_groups_format_converts_its_state():
    params = _params()
    optimizer = rectified.Adam(params, state_format="8bit", min_8bit_size=0)
    _run(None, params, optimizer, 0, 3)
    decoded = load(optimizer.state[params[0]], "exp_avg", torch.float32)
    optimizer.param_groups[0]["state_format"] = None
    optimizer.param_groups[0]["lr"] = 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    state = optimizer.state[params[0]]
    assert state["exp_avg"].dtype == torch.float32 and "exp_avg_scales" not in state
    torch.testing.assert_close(state["exp_avg"], decoded * 0.9, rtol=1e-6, atol=0)


# -- bfloat16 parameters with stochastic rounding ----------------------------------------------
def _bf16_run(engine, param_rounding, seed=0, steps=200, lr=1e-4):
    p = torch.ones(4096, dtype=torch.bfloat16, requires_grad=True)
    optimizer = rectified.Adam([p], lr=lr, param_rounding=param_rounding, rounding_seed=seed,
                               state_dtype=torch.float32, **ENGINES[engine])
    for _ in range(steps):
        p.grad = torch.ones_like(p)
        optimizer.step()
    return p


@pytest.mark.parametrize("engine", list(ENGINES))
def test_stochastic_rounding_moves_bfloat16_weights_by_updates_below_half_an_ulp(engine,
                                                                                  fused_kernel):
    # Each step moves p by lr = 1e-4, under half the bfloat16 ulp at 1 (2^-8 / 2 = 2e-3).
    nearest = _bf16_run(engine, "nearest")
    assert torch.equal(nearest, torch.ones_like(nearest))  # every update lost
    stochastic = _bf16_run(engine, "stochastic")
    exact = 1 - 200 * 1e-4  # Adam's step with a constant gradient is lr each time
    mean = stochastic.float().mean().item()
    assert abs(mean - exact) < 1e-3, mean
    assert torch.equal(stochastic, _bf16_run(engine, "stochastic"))  # reproducible
    assert not torch.equal(stochastic, _bf16_run(engine, "stochastic", seed=1))
    if engine != "reference":
        assert torch.equal(stochastic, _bf16_run("reference", "stochastic"))


# -- the fused engine's one-pass kernel ---------------------------------------------------------
def _fused_run(monkeypatch, one_pass, case, dtype, stochastic, state_format):
    from rectified.engines.fused import formatted

    taken = []  # parameters the kernel stepped in one pass, per step (general or kept plan)
    if one_pass:
        original, planned = formatted.run_, formatted.FormattedPlan.step_

        def spy(*args):
            left = original(*args)
            taken.append(len(args[3][0]) - len(left))
            return left

        def planned_spy(plan, rule, group):
            done = planned(plan, rule, group)
            taken.append(len(plan.params) if done else 0)
            return done

        monkeypatch.setattr(formatted, "run_", spy)
        monkeypatch.setattr(formatted.FormattedPlan, "step_", planned_spy)
    else:
        monkeypatch.setattr(formatted, "run_", lambda *args: list(range(len(args[3][0]))))
        monkeypatch.setattr(formatted.FormattedPlan, "make", lambda *args: None)
    params = [torch.randn(shape, generator=torch.Generator().manual_seed(i)).to(dtype)
              .requires_grad_() for i, shape in enumerate(((40, 17), (300,), (1000,), (1,)))]
    optimizer = case.build(params, **{**case.kwargs, "fused": True, "min_8bit_size": 0,
                                      "param_rounding": "stochastic" if stochastic else "nearest",
                                      "state_format": state_format})
    _run(case, params, optimizer, 0, 6)
    return params, _inner(optimizer), taken


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize(("dtype", "stochastic"), [(torch.float32, False),
                                                   (torch.bfloat16, False),
                                                   (torch.bfloat16, True)])
@pytest.mark.parametrize("case", [c for c in FORMAT_CASES if c.name in (
    "Adam-amsgrad", "AdamW", "RAdam", "RAdam-paper", "Ranger", "AdaBound", "AMSBound")],
    ids=case_id)
def test_the_one_pass_kernel_is_the_general_path(monkeypatch, case, dtype, stochastic,
                                                 state_format, fused_kernel):
    """The kernel decodes, steps and encodes as the general path (load, the kernel's loop,
    store) does: the same codes, and parameters within float32 rounding (the two loops may
    contract a multiply-add differently: AMSBound's parameters differ in the last place in
    about 1% of elements; the Adam family's are identical), except where such a difference
    puts a value on the other side of a code boundary."""
    fast, fast_optimizer, taken = _fused_run(monkeypatch, True, case, dtype, stochastic,
                                             state_format)
    general, general_optimizer, _ = _fused_run(monkeypatch, False, case, dtype, stochastic,
                                               state_format)
    assert sum(taken) >= 5 * 4  # every parameter, every step after the first
    differ = total = 0
    for a, b in zip(fast, general):
        ulp = torch.finfo(a.dtype).eps  # a contracted step: an ulp of the tensor's scale
        torch.testing.assert_close(a, b, rtol=4 * ulp, atol=4 * ulp * float(b.detach().abs().max()))
        for key, value in fast_optimizer.state[a].items():
            other = general_optimizer.state[b][key]
            differ += int((value != other).sum())
            total += value.numel()
    assert differ <= 0.002 * total, (differ, total)


# -- what else a tensor can be, with a state format ----------------------------------------------
def _negated(value):
    out = torch.complex(torch.zeros_like(value), -value).conj().imag
    assert out.is_neg()
    return out


def _noncontiguous(value):
    """``value`` in every other element of a buffer twice its size."""
    out = torch.zeros(2 * value.numel(), dtype=value.dtype)[::2].view(value.shape).copy_(value)
    assert not out.is_contiguous()
    return out


class _FunctionSubclass(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


ODD = {  # name: (parameter maker, gradient maker)
    "negated-gradient": (lambda v: v.clone(), _negated),
    "non-contiguous-gradient": (lambda v: v.clone(), _noncontiguous),
    "non-contiguous-parameter": (_noncontiguous, lambda g: g.clone()),
    "torch_function-subclass": (lambda v: v.clone().as_subclass(_FunctionSubclass),
                                lambda g: g.clone().as_subclass(_FunctionSubclass)),
}
ODD_CASES = [c for c in FORMAT_CASES if c.name in ("Adam-amsgrad", "RAdam", "Ranger", "AMSBound")]


def _odd_run(case, engine, state_format, make_param, make_grad):
    generator = torch.Generator().manual_seed(5)
    values = [torch.randn(shape, generator=generator) for shape in ((40, 17), (300,), (3, 5, 7))]
    params = [make_param(v).requires_grad_() for v in values]
    optimizer = case.build(params, **{**case.kwargs, "min_8bit_size": 0,
                                      "state_format": state_format, **ENGINES[engine]})
    for step in range(6):
        grads = _grads(params, step)
        for p, g in zip(params, grads):
            p.grad = make_grad(g)
        optimizer.step()
    return [p.detach().as_subclass(torch.Tensor).clone() for p in params]


@pytest.mark.filterwarnings("ignore:state_format=.*keep float32 state:RuntimeWarning")
@pytest.mark.parametrize("kind", list(ODD))
@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("engine", ["foreach", "fused"])
@pytest.mark.parametrize("case", ODD_CASES, ids=case_id)
def test_odd_tensors_with_a_format_step_as_the_reference(case, engine, state_format, kind,
                                                        fused_kernel):
    make_param, make_grad = ODD[kind]
    expected = _odd_run(case, "reference", state_format, make_param, make_grad)
    got = _odd_run(case, engine, state_format, make_param, make_grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)
    if kind != "torch_function-subclass":  # a plain tensor's values, whatever its layout
        plain = _odd_run(case, "reference", state_format, lambda v: v.clone(),
                         lambda g: g.clone())
        for a, b in zip(got, plain):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_parameters_tied_through_data_with_a_format_step_one_at_a_time(engine, state_format,
                                                                       fused_kernel):
    def run(engine):
        generator = torch.Generator().manual_seed(3)
        first = torch.nn.Parameter(torch.randn(40_000, generator=generator))
        second = torch.nn.Parameter(torch.empty(0))
        second.data = first.data
        params = [first, second, torch.nn.Parameter(torch.randn(300, generator=generator))]
        optimizer = rectified.Adam(params, lr=0.01, state_format=state_format, min_8bit_size=0,
                                   **ENGINES[engine])
        for _ in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator)
            optimizer.step()
        return [p.detach().clone() for p in params]

    got, expected = run(engine), run("reference")
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("engine", list(ENGINES))
def test_bfloat16_weights_with_stochastic_rounding_resume_bit_exactly(engine, state_format,
                                                                      fused_kernel):
    def build(params):
        return rectified.RAdam(params, lr=0.01, state_format=state_format, min_8bit_size=0,
                               param_rounding="stochastic", rounding_seed=7, **ENGINES[engine])

    whole = _params(torch.bfloat16)
    optimizer = build(whole)
    _run(None, whole, optimizer, 0, 8)
    half = _params(torch.bfloat16)
    optimizer = build(half)
    _run(None, half, optimizer, 0, 4)
    saved = roundtrip({"params": [p.detach() for p in half], "optimizer": optimizer.state_dict()})
    resumed_params = [p.clone().requires_grad_() for p in saved["params"]]
    resumed = build(resumed_params)
    resumed.load_state_dict(saved["optimizer"])
    _run(None, resumed_params, resumed, 4, 8)
    for p, q in zip(resumed_params, whole):
        assert p.dtype == torch.bfloat16 and torch.equal(p, q)


@pytest.mark.parametrize("state_format", FORMATS)
@pytest.mark.parametrize("case", [c for c in FORMAT_CASES if c.name.startswith("NAdam")],
                         ids=case_id)
def test_the_kernel_codec_is_the_definition_on_the_general_path(monkeypatch, case, state_format,
                                                               fused_kernel):
    """NAdam's step is a traced program between a load and a store: with the kernel's codec
    and with the torch definition it gives the same codes and parameters, bit for bit."""
    from rectified.engines.fused import engine as fused_engine
    from rectified.engines.stored import TORCH_OPS

    fast_params, fast = _train(case, steps=6, dtype=torch.bfloat16, state_format=state_format,
                               param_rounding="stochastic", fused=True)
    monkeypatch.setattr(fused_engine.FusedEngine, "codec", lambda self: TORCH_OPS)
    slow_params, slow = _train(case, steps=6, dtype=torch.bfloat16, state_format=state_format,
                               param_rounding="stochastic", fused=True)
    for a, b in zip(fast_params, slow_params):
        assert torch.equal(a, b)
        for key, value in fast.state[a].items():
            assert torch.equal(value, slow.state[b][key]), key


@pytest.mark.parametrize(("state_format", "stored"), [("8bit", torch.uint8),
                                                      ("bfloat16", torch.bfloat16)])
def test_fresh_state_is_made_in_its_format(monkeypatch, state_format, stored):
    """The memory a format saves is never spent first: the rule builds fresh moments like a
    tensor of the format's dtype (zero codes, zero scales), not in float32."""
    optimizer = rectified.RAdam(_params(), state_format=state_format, min_8bit_size=300)
    rule_class = type(optimizer.rule)
    original = rule_class.init_state
    templates = []

    def recording(self, param, group):
        templates.append((param.numel(), param.dtype))
        return original(self, param, group)

    monkeypatch.setattr(rule_class, "init_state", recording)
    params = optimizer.param_groups[0]["params"]
    for step in range(2):
        for p, g in zip(params, _grads(params, step)):
            p.grad = g
        optimizer.step()
    expected = {(p.numel(), stored if state_format == "bfloat16" or p.numel() >= 300
                 else torch.float32) for p in params}
    assert set(templates) == expected and len(templates) == len(params)
    big = optimizer.state[params[0]]
    assert big["exp_avg"].dtype == stored


@pytest.mark.parametrize("engine", list(ENGINES))
def test_the_general_path_loads_a_few_parameters_at_a_time(monkeypatch, engine, fused_kernel):
    """Working copies are bounded: cutting the group into pieces changes no bit."""
    from rectified.engines import engine as engines

    nadam = next(case for case in FORMAT_CASES if case.name == "NAdam")
    whole, whole_optimizer = _train(nadam, state_format="8bit", **ENGINES[engine])
    monkeypatch.setattr(engines, "WORKING_ELEMENTS", 100)
    pieces, pieces_optimizer = _train(nadam, state_format="8bit", **ENGINES[engine])
    for a, b in zip(whole, pieces):
        assert torch.equal(a, b)
        for key, value in whole_optimizer.state[a].items():
            assert torch.equal(value, pieces_optimizer.state[b][key]), key


def test_parameters_a_format_cannot_take_keep_float32_state_and_say_so(monkeypatch):
    from torch.testing._internal.two_tensor import TwoTensor

    from rectified import formats

    monkeypatch.setattr(formats, "_warned", set())
    param = torch.nn.Parameter(TwoTensor(torch.randn(300), torch.randn(300)))
    plain = torch.randn(300, requires_grad=True)
    optimizer = rectified.Adam([param, plain], state_format="8bit", min_8bit_size=0,
                               foreach=True)
    with pytest.warns(RuntimeWarning, match="TwoTensor parameters keep float32 state"):
        for _ in range(2):
            param.grad = TwoTensor(torch.randn(300), torch.randn(300))
            plain.grad = torch.randn(300)
            optimizer.step()
    assert optimizer.state[param]["exp_avg"].dtype == torch.float32
    assert optimizer.state[plain]["exp_avg"].dtype == torch.uint8


def test_an_optimizer_keeps_its_own_state_dtype_when_it_loads_a_checkpoint():
    params = _params(torch.bfloat16)
    wide = rectified.Adam(params, state_dtype=torch.float32)
    _run(None, params, wide, 0, 2)
    narrow = rectified.Adam(params)
    narrow.load_state_dict(wide.state_dict())
    assert narrow.param_groups[0]["state_dtype"] is None
    assert narrow.state[params[0]]["exp_avg"].dtype == torch.bfloat16
    wide_again = rectified.Adam(params, state_dtype=torch.float32)
    wide_again.load_state_dict(narrow.state_dict())
    assert wide_again.state[params[0]]["exp_avg"].dtype == torch.float32
    assert torch.equal(wide_again.state[params[0]]["exp_avg"],
                       narrow.state[params[0]]["exp_avg"].float())


def test_a_fused_8bit_step_in_flush_denormal_mode_is_the_reference_engines(fused_kernel):
    """Moments whose codes are subnormal (small elements beside a large one in their block):
    flush-denormal mode must not turn them, or v's smallest nonzero code, into 0."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        results = []
        for engine in ({"fused": True}, {"foreach": False}):
            param = torch.nn.Parameter(torch.zeros(4096))
            optimizer = rectified.Adam([param], lr=1e-3, state_format="8bit", **engine)
            for _ in range(3):
                grad = torch.full((4096,), 1e-3)
                grad[::256] = 1e3
                param.grad = grad
                optimizer.step()
            results.append(param.detach().clone())
    finally:
        torch.set_flush_denormal(False)
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=0)


def test_without_the_formats_kernel_fused_steps_run_through_torch_operations(monkeypatch,
                                                                            fused_kernel):
    """The formats' library unavailable (a failed build) while the main kernel is loaded:
    every step falls back to torch operations, none keeps a plan that needs the library."""
    from rectified.engines.fused import kernel

    monkeypatch.setattr(kernel, "_formats_loaded", False)
    results = []
    for engine in ({"fused": True}, {"foreach": False}):
        param = torch.nn.Parameter(torch.linspace(-1, 1, 5000))
        optimizer = rectified.RAdam([param], state_format="8bit", **engine)
        for step in range(4):
            param.grad = torch.cos(torch.arange(5000.0) * (step + 1))
            optimizer.step()
        results.append(param.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-7)
