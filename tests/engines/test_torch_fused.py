"""torch_fused: traced Adam-family steps recognised and run by torch's fused Adam kernels,
against the reference engine; everything else (and every malformed program) refused."""

from __future__ import annotations

import math

import pytest
import torch

import rectified
import rectified.engines as engines
from rectified.engines import apply_rule, fused, torch_fused
from rectified.engines.fused import (
    ADD,
    ADD_SCALAR,
    ADDCDIV,
    ADDCMUL,
    DIV_SCALAR,
    LERP,
    MAXIMUM,
    MUL_SCALAR,
    NEG,
    SQRT,
)
from rectified.engines.plans import GroupPlan
from rectified.rules.moments import bias_corrections
from tests.helpers import (
    apply_,
    assert_close_relative,
    build,
    make_params,
    run,
)
from tests.registry import CASES, case_id

SHAPES = ((4, 3), (5,), (0,), (2, 2, 2), (37,))  # 37: the kernels' vector loop and its tail
STEPS = 12


def optimizer_group(build, **kwargs) -> tuple:
    """(rule, group) of a one-group optimizer: the group exactly as the optimizer fills it."""
    optimizer = build([torch.zeros(1)], **kwargs)
    inner = getattr(optimizer, "optimizer", optimizer)  # Ranger is Lookahead(RAdam)
    group = {k: v for k, v in inner.param_groups[0].items() if k != "params"}
    return inner.rule, group


CONFIGS = {
    "Adam": (rectified.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    "Adam-no-decay": (rectified.Adam, dict(lr=1e-2)),
    "AdamW": (rectified.AdamW, dict(lr=1e-2, weight_decay=0.1)),
    "Adam-amsgrad": (rectified.Adam, dict(lr=1e-2, weight_decay=1e-2, amsgrad=True)),
    "AdamW-amsgrad": (rectified.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    "RAdam": (rectified.RAdam, dict(lr=1e-2, weight_decay=1e-2)),
    "RAdam-decoupled": (rectified.RAdam,
                        dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    "RAdam-paper": (rectified.RAdam, dict(lr=1e-2, threshold=4.0, degenerated_to_sgd=False)),
    "Ranger": (rectified.Ranger, dict(lr=1e-2, weight_decay=1e-2)),
}
RADAM_CONFIGS = ("RAdam", "RAdam-decoupled", "RAdam-paper", "Ranger")


def config(name: str, maximize: bool = False, **overrides) -> tuple:
    build, kwargs = CONFIGS[name]
    return optimizer_group(build, **{**kwargs, "maximize": maximize, **overrides})


def make_state(rule, group, dtype=torch.float64, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype)
              for shape in SHAPES]
    states = [rule.init_state(p, group) for p in params]
    return params, states


def gradient_sequence(params, steps=STEPS, seed=1) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
             for p in params] for _ in range(steps)]


def trace_step(rule, group, step: int) -> fused.Program:
    keys = rule.state_keys(group)

    def body(ops, params, grads, *state):
        rule.update_(ops, params, grads, dict(zip(keys, state)), group, step)

    return fused.trace(body, 2 + len(keys))


def slots_of(rule, group, params, grads, states) -> list[list[torch.Tensor]]:
    return [params, grads, *([s[k] for s in states] for k in rule.state_keys(group))]


def lr_at(group, step: int) -> dict:
    """The group with an lr that changes every step, as under a scheduler."""
    return {**group, "lr": group["lr"] / (1 + 0.3 * step)}


def torch_step_(rule, group, params, grads, states, step: int) -> bool:
    """One step through torch's kernel where match() takes the program, else through the
    reference engine (as a dispatcher would); whether the kernel ran."""
    call = torch_fused.match(trace_step(rule, group, step))
    if call is None:
        apply_rule("reference", rule, group, params, grads, states, [step] * len(params))
        return False
    torch_fused.run_(call, slots_of(rule, group, params, grads, states))
    return True


def compare_trajectories(rule, group, dtype, rtol, device="cpu") -> list[int]:
    """STEPS steps with a changing lr, reference engine against torch's kernel, every slot
    compared after every step; returns the steps the kernel ran."""
    reference_params, reference_states = make_state(rule, group, dtype, device)
    params, states = make_state(rule, group, dtype, device)
    kernel_steps = []
    for step, grads in enumerate(gradient_sequence(params), start=1):
        stepped = lr_at(group, step)
        grads_before = [g.clone() for g in grads]
        apply_rule("reference", rule, stepped, reference_params, grads, reference_states,
                   [step] * len(params))
        if torch_step_(rule, stepped, params, grads, states, step):
            kernel_steps.append(step)
        for ours, reference in zip(slots_of(rule, group, params, grads, states),
                                   slots_of(rule, group, reference_params, grads,
                                            reference_states)):
            assert_close_relative(ours, reference, rtol)
        assert all(torch.equal(g, before) for g, before in zip(grads, grads_before))
    return kernel_steps


def expected_kernel_steps(name: str) -> list[int]:
    if name in ("RAdam", "RAdam-decoupled", "Ranger"):  # threshold 5: ρ_t > 5 from step 6
        return list(range(6, STEPS + 1))
    if name == "RAdam-paper":  # threshold 4: ρ_5 = 4.996 > 4
        return list(range(5, STEPS + 1))
    return list(range(1, STEPS + 1))


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_adaptive_steps_are_matched_and_the_others_refused(name, maximize):
    rule, group = config(name, maximize)
    matched = [step for step in range(1, STEPS + 1)
               if torch_fused.match(trace_step(rule, lr_at(group, step), step)) is not None]
    assert matched == expected_kernel_steps(name)


def test_radam_first_five_steps_are_refused():
    rule, group = config("RAdam")
    for step in range(1, 6):
        assert torch_fused.match(trace_step(rule, group, step)) is None
    assert torch_fused.match(trace_step(rule, group, 6)) is not None


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_torch_kernel_equals_reference_in_float64(name, maximize):
    rule, group = config(name, maximize)
    kernel_steps = compare_trajectories(rule, group, torch.float64, rtol=1e-12)
    assert kernel_steps == expected_kernel_steps(name)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_torch_kernel_equals_reference_in_float32(name, maximize):
    rule, group = config(name, maximize)
    kernel_steps = compare_trajectories(rule, group, torch.float32, rtol=1e-6)
    assert kernel_steps == expected_kernel_steps(name)


def run_from(rule, group, params, sequence, use_kernel: bool) -> list[torch.Tensor]:
    states = [rule.init_state(p, group) for p in params]
    kernel_steps = 0
    for step, grads in enumerate(sequence, start=1):
        stepped = lr_at(group, step)
        if use_kernel:
            kernel_steps += torch_step_(rule, stepped, params, grads, states, step)
        else:
            apply_rule("reference", rule, stepped, params, grads, states, [step] * len(params))
    assert kernel_steps or not use_kernel
    return [p.double() for p in params]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["Adam", "AdamW-amsgrad", "RAdam-decoupled"])
def test_low_precision_is_within_rounding(name, dtype):
    """Against float64 from the same rounded start and gradients, the kernel (float32 inside,
    one rounding per store) is on average as close as the reference engine (rounding after
    every op), and at worst within one more unit of the dtype's rounding."""
    rule, group = config(name, maximize=True)
    start, _ = make_state(rule, group, dtype)
    sequence = gradient_sequence(start)
    exact = run_from(rule, group, [p.double() for p in start],
                     [[g.double() for g in grads] for grads in sequence], use_kernel=False)
    reference = run_from(rule, group, [p.clone() for p in start], sequence, use_kernel=False)
    result = run_from(rule, group, [p.clone() for p in start], sequence, use_kernel=True)

    def errors(run):
        return torch.cat([(x - truth).flatten() for x, truth in zip(run, exact)]).abs()

    ours, theirs = errors(result), errors(reference)
    unit = torch.finfo(dtype).eps * torch.cat([x.flatten() for x in exact]).abs().max()
    assert ours.mean() <= 1.25 * theirs.mean()
    assert ours.max() <= theirs.max() + unit


def test_call_holds_the_rescaled_adam_arguments():
    rule, group = config("AdamW", maximize=True)
    step, lr, wd, eps = 3, group["lr"], group["weight_decay"], group["eps"]
    call = torch_fused.match(trace_step(rule, group, step))
    bc = bias_corrections(step, 0.9, 0.999)
    assert call is not None
    assert (call.decoupled, call.maximize, call.amsgrad) == (True, True, False)
    assert call.slots == (0, 1, 2, 3) and call.n_slots == 4
    assert (call.beta1, call.beta2) == (0.9, 0.999)
    assert call.lr == pytest.approx(lr / bc.first * bc.second_sqrt, rel=1e-15)
    assert call.eps == pytest.approx(eps * bc.second_sqrt, rel=1e-15)
    assert 1.0 - call.lr * call.weight_decay == 1.0 - lr * wd  # the kernel's factor, exactly

    rule, group = config("Adam-amsgrad")
    call = torch_fused.match(trace_step(rule, group, step))
    assert call is not None
    assert (call.decoupled, call.maximize, call.amsgrad) == (False, False, True)
    assert call.slots == (0, 1, 2, 3, 4) and call.weight_decay == group["weight_decay"]

    rule, group = config("RAdam")  # RAdam's adaptive step has no √bc2 division: s = 1
    call = torch_fused.match(trace_step(rule, group, 6))
    assert call is not None and call.eps == group["eps"]


def test_an_infinite_step_turns_torch_bias_corrections_off():
    """The mapping rests on this: step = +inf gives bc1 = bc2 = 1 in torch's kernel."""
    generator = torch.Generator().manual_seed(3)
    p, g, m = (torch.randn(37, generator=generator, dtype=torch.float64) for _ in range(3))
    v = torch.rand(37, generator=generator, dtype=torch.float64)
    lr, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8
    new_m = m.lerp(g, 1 - beta1)
    new_v = v * beta2 + (1 - beta2) * g * g
    expected = p - lr * new_m / (new_v.sqrt() + eps)
    torch._fused_adam_([p], [g], [m], [v], [], [torch.tensor(math.inf)], lr=lr, beta1=beta1,
                       beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
    assert_close_relative([p, m, v], [expected, new_m, new_v], rtol=1e-15)


@pytest.mark.parametrize("name", ["AdamW", "RAdam-decoupled", "Ranger"])
def test_zero_lr_with_decoupled_decay(name):
    """lr = 0 traces a decay factor of exactly 1: no decay, no step, moments still move."""
    rule, group = config(name, lr=0.0)
    step = 7
    call = torch_fused.match(trace_step(rule, group, step))
    assert call is not None
    assert (call.lr, call.weight_decay, call.decoupled) == (0.0, 0.0, False)
    params, states = make_state(rule, group)
    reference_params, reference_states = make_state(rule, group)
    start = [p.clone() for p in params]
    grads = gradient_sequence(params, 1)[0]
    torch_fused.run_(call, slots_of(rule, group, params, grads, states))
    apply_rule("reference", rule, group, reference_params, grads, reference_states,
               [step] * len(params))
    assert all(torch.equal(p, p0) for p, p0 in zip(params, start))
    for ours, reference in zip(slots_of(rule, group, params, grads, states),
                               slots_of(rule, group, reference_params, grads, reference_states)):
        assert_close_relative(ours, reference, rtol=1e-12)


@pytest.mark.parametrize("build, kwargs", [
    (rectified.AdaBound, dict(lr=1e-2, final_lr=0.1)),
    (rectified.AdaBound, dict(lr=1e-2, final_lr=0.1, amsbound=True, weight_decay=1e-2)),
    (rectified.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    (rectified.SGD, dict(lr=1e-2)),
    (rectified.RMSprop, dict(lr=1e-2)),
    (rectified.RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
    (rectified.Adagrad, dict(lr=1e-2)),
    (rectified.Adadelta, dict(lr=1.0)),
], ids=["AdaBound", "AMSBound", "SGD-nesterov", "SGD", "RMSprop", "RMSprop-centered", "Adagrad",
        "Adadelta"])
def test_other_rules_are_refused(build, kwargs):
    rule, group = optimizer_group(build, **kwargs)
    for step in range(1, 7):
        assert torch_fused.match(trace_step(rule, group, step)) is None


def test_an_empty_program_is_refused():
    assert torch_fused.match(fused.Program(4)) is None


# Malformed programs: each is a matched program with one thing changed.
def rows_of(program: fused.Program) -> list[list]:
    return [[*program.code[5 * i:5 * i + 5], *program.scalars[2 * i:2 * i + 2]]
            for i in range(len(program.code) // 5)]


def program_of(rows: list[list], n_slots: int, n_registers: int) -> fused.Program:
    program = fused.Program(n_slots)
    program.n_registers = n_registers
    for row in rows:
        program.code += [int(x) for x in row[:5]]
        program.scalars += [float(row[5]), float(row[6])]
    return program


def at(rows, op) -> list:
    return next(row for row in rows if row[0] == op)


def setting(op, field, *values):
    """A mutation: the first instruction ``op`` gets ``values`` from ``field`` on (1 dst, 2 a,
    3 b, 4 c, 5 s0, 6 s1)."""
    def mutate(rows):
        at(rows, op)[field:field + len(values)] = values
    return mutate


def dropping(op):
    def mutate(rows):
        rows.remove(at(rows, op))
    return mutate


def inserting(index, *row):
    def mutate(rows):
        rows.insert(index, list(row))
    return mutate


def combined(*mutations):
    def mutate(rows):
        for mutation in mutations:
            mutation(rows)
    return mutate


def negating_after_coupled_decay(rows):
    """u1 = g + λ p; u0 = -u1; the moments read u0 (torch negates first)."""
    negate, add = at(rows, NEG), at(rows, ADD)
    negate[2], add[2] = add[1], 1
    rows.remove(negate)
    rows.insert(rows.index(add) + 1, negate)
    setting(LERP, 3, negate[1])(rows)
    setting(ADDCMUL, 3, negate[1], negate[1])(rows)


# COUPLED: Adam, AMSGrad, maximize, coupled decay: slots p0 g1 m2 v3 vmax4, temporaries 5..7.
# DECOUPLED: AdamW, maximize: slots p0 g1 m2 v3, temporaries 4..5.
MUTATIONS = {
    "extra instruction after the step": ("DECOUPLED",
                                         inserting(99, ADD_SCALAR, 0, 0, 0, 0, 1.0, 0.0)),
    "eps add dropped": ("DECOUPLED", dropping(ADD_SCALAR)),
    "eps added to another temporary": ("DECOUPLED", setting(ADD_SCALAR, 1, 4, 4)),
    "denominator scale applied to another temporary": ("DECOUPLED",
                                                       setting(DIV_SCALAR, 1, 4, 4)),
    "sqrt dropped": ("DECOUPLED", dropping(SQRT)),
    "first moment reads the raw gradient": ("COUPLED", setting(LERP, 3, 1)),
    "first moment lerps from another register": ("COUPLED", setting(LERP, 2, 3)),
    "second moment squares another register": ("COUPLED", setting(ADDCMUL, 4, 1)),
    "second moment weight is not 1 - beta2": ("COUPLED", setting(ADDCMUL, 5, 2e-3)),
    "second moment scaled from another register": ("COUPLED", setting(MUL_SCALAR, 2, 2)),
    "sqrt reads v, not the running max": ("COUPLED", setting(SQRT, 2, 3)),
    "running max against another register": ("COUPLED", setting(MAXIMUM, 3, 2)),
    "sqrt written into the gradient slot": ("DECOUPLED", combined(
        setting(SQRT, 1, 1), setting(DIV_SCALAR, 1, 1, 1), setting(ADD_SCALAR, 1, 1, 1),
        setting(ADDCDIV, 4, 1))),
    "step divides by v itself": ("COUPLED", setting(ADDCDIV, 4, 3)),
    "step updates the gradient slot": ("COUPLED", setting(ADDCDIV, 1, 1, 1)),
    "step updates a moment": ("DECOUPLED", setting(ADDCDIV, 1, 3, 3)),
    "decay scales a moment, not the param": ("DECOUPLED", setting(MUL_SCALAR, 1, 2, 2)),
    "decay scales the gradient into the param": ("DECOUPLED", setting(MUL_SCALAR, 2, 1)),
    "coupled decay adds a moment": ("COUPLED", setting(ADD, 3, 2)),
    "coupled and decoupled decay together": ("DECOUPLED", combined(
        inserting(2, ADD, 6, 4, 0, 4, 0.01, 0.0), setting(LERP, 3, 6),
        setting(ADDCMUL, 3, 6, 6))),
    "two coupled decays": ("COUPLED", inserting(2, ADD, 6, 6, 0, 6, 0.02, 0.0)),
    "coupled decay written into the gradient slot": ("COUPLED", combined(
        setting(ADD, 1, 1), setting(LERP, 3, 1), setting(ADDCMUL, 3, 1, 1))),
    "gradient temporary never written": ("DECOUPLED", dropping(NEG)),
    "negation after coupled decay": ("COUPLED", negating_after_coupled_decay),
    "two negations": ("DECOUPLED", inserting(2, NEG, 4, 4, 4, 4, 0.0, 0.0)),
    "coupled decay overwritten by a negation": ("COUPLED",
                                                inserting(2, NEG, 6, 1, 1, 1, 0.0, 0.0)),
    "negation in place in the gradient slot": ("DECOUPLED", combined(
        setting(NEG, 1, 1), setting(LERP, 3, 1), setting(ADDCMUL, 3, 1, 1))),
    "first and second moment in one slot": ("DECOUPLED", combined(
        setting(LERP, 1, 3, 3), setting(ADDCDIV, 3, 3))),
    "first moment kept in the gradient slot": ("DECOUPLED", combined(
        setting(LERP, 1, 1, 1), setting(ADDCDIV, 3, 1))),
    "beta1 = 1 (lerp weight 0)": ("DECOUPLED", setting(LERP, 5, 0.0)),
    "beta1 < 0 (lerp weight 1.5)": ("DECOUPLED", setting(LERP, 5, 1.5)),
    "lerp weight that 1 - beta1 does not give back": ("DECOUPLED", setting(LERP, 5, 0.1)),
    "beta2 = 1": ("COUPLED", combined(setting(MUL_SCALAR, 5, 1.0), setting(ADDCMUL, 5, 0.0))),
    "negative denominator scale": ("DECOUPLED", setting(DIV_SCALAR, 5, -0.5)),
    "step size NaN": ("DECOUPLED", setting(ADDCDIV, 5, math.nan)),
    "eps vanishes when rescaled": ("DECOUPLED", combined(
        setting(ADD_SCALAR, 5, 5e-324), setting(DIV_SCALAR, 5, 0.25))),
    "step size vanishes when rescaled": ("COUPLED", combined(
        setting(ADDCDIV, 5, -5e-324), setting(DIV_SCALAR, 5, 0.25))),
    "coupled decay of zero": ("COUPLED", setting(ADD, 5, 0.0)),
    "decoupled decay with a zero step size": ("DECOUPLED", setting(ADDCDIV, 5, 0.0)),
    "register out of range": ("COUPLED", setting(ADDCDIV, 4, 99)),
}


def base_program(kind: str) -> fused.Program:
    name = "Adam-amsgrad" if kind == "COUPLED" else "AdamW"
    rule, group = config(name, maximize=True)
    return trace_step(rule, group, 3)


@pytest.mark.parametrize("kind", ["COUPLED", "DECOUPLED"])
def test_unchanged_base_programs_are_matched(kind):
    program = base_program(kind)
    rows = rows_of(program)
    assert [row[0] for row in rows] == (
        [NEG, ADD, LERP, MUL_SCALAR, ADDCMUL, MAXIMUM, SQRT, DIV_SCALAR, ADD_SCALAR, ADDCDIV]
        if kind == "COUPLED" else
        [MUL_SCALAR, NEG, LERP, MUL_SCALAR, ADDCMUL, SQRT, DIV_SCALAR, ADD_SCALAR, ADDCDIV])
    rebuilt = program_of(rows, program.n_slots, program.n_registers + 2)
    assert torch_fused.match(rebuilt) == torch_fused.match(program) is not None


@pytest.mark.parametrize("name", MUTATIONS)
def test_malformed_programs_are_refused(name):
    kind, mutate = MUTATIONS[name]
    program = base_program(kind)
    rows = rows_of(program)
    mutate(rows)
    assert rows != rows_of(program)
    assert torch_fused.match(program_of(rows, program.n_slots, program.n_registers + 2)) is None


def test_truncated_code_is_refused():
    program = base_program("DECOUPLED")
    program.code = program.code[:-1]
    assert torch_fused.match(program) is None


# run_ checks every tensor before it writes any.
def adam_call_and_slots(dtype=torch.float64):
    rule, group = config("Adam-amsgrad", maximize=True)
    params, states = make_state(rule, group, dtype)
    grads = gradient_sequence(params, 1)[0]
    call = torch_fused.match(trace_step(rule, group, 2))
    assert call is not None
    return call, slots_of(rule, group, params, grads, states)


def assert_refused_untouched(call, slots, message):
    before = [[x.clone() for x in xs] for xs in slots]
    with pytest.raises(ValueError, match=message):
        torch_fused.run_(call, slots)
    assert all(torch.equal(x, y) for xs, ys in zip(slots, before) for x, y in zip(xs, ys))


def test_run_refuses_a_state_of_another_dtype():
    call, slots = adam_call_and_slots()
    slots[3][-1] = slots[3][-1].float()  # the last parameter's v: the others come first
    assert_refused_untouched(call, slots, "list 3 holds a torch.float32")


def test_run_refuses_non_contiguous_tensors():
    call, slots = adam_call_and_slots()
    for xs in slots:
        xs[-1] = torch.zeros(37, 2, dtype=torch.float64)[:, 0]
    assert_refused_untouched(call, slots, "contiguous: False")


def test_run_refuses_other_dtypes_shapes_and_lists():
    call, slots = adam_call_and_slots()
    assert_refused_untouched(call, slots[:-1], "expected 5 tensor lists")
    shorter = [list(xs) for xs in slots]
    shorter[2] = shorter[2][:-1]
    assert_refused_untouched(call, shorter, "different lengths")
    reshaped = [list(xs) for xs in slots]
    reshaped[4][0] = reshaped[4][0].reshape(3, 4)
    assert_refused_untouched(call, reshaped, r"expected a contiguous torch.float64 \(4, 3\)")
    longer = [list(xs) for xs in slots]
    longer[3][1] = torch.zeros(6, dtype=torch.float64)
    assert_refused_untouched(call, longer, r"expected a contiguous torch.float64 \(5,\)")
    integers = [[x.long() for x in xs] for xs in slots]
    assert_refused_untouched(call, integers, "dtype torch.int64")


def test_run_takes_a_bucket_of_mixed_dtypes():
    rule, group = config("RAdam-decoupled", maximize=True)
    params, states = make_state(rule, group)
    params = [p.float() if i % 2 else p for i, p in enumerate(params)]
    states = [rule.init_state(p, group) for p in params]
    reference_params = [p.clone() for p in params]
    reference_states = [rule.init_state(p, group) for p in params]
    for step, grads in enumerate(gradient_sequence(params), start=1):
        apply_rule("reference", rule, group, reference_params, grads, reference_states,
                   [step] * len(params))
        torch_step_(rule, group, params, grads, states, step)
    for ours, reference in zip(params, reference_params):
        rtol = 1e-12 if ours.dtype == torch.float64 else 1e-6
        assert ours.dtype == reference.dtype
        assert_close_relative([ours], [reference], rtol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_torch_kernel_equals_reference_on_cuda(name, maximize, dtype, rtol):
    rule, group = config(name, maximize)
    kernel_steps = compare_trajectories(rule, group, dtype, rtol, device="cuda")
    assert kernel_steps == expected_kernel_steps(name)


# -- The fused engine's CUDA path, wired through apply_rule ------------------------------------


ENGINE_CASES = [case for case in CASES if case.name in
                ("Adam", "Adam-amsgrad", "AdamW", "RAdam", "RAdam-decoupled", "AdaBound",
                 "Ranger")]


@pytest.mark.parametrize("case", ENGINE_CASES, ids=case_id)
def test_fused_engine_off_the_cpu_takes_torch_kernels_for_adam_steps(case, monkeypatch):
    """The CUDA path on the CPU: the kernel declines every tensor (as it does CUDA ones) and
    CPU tensors count as accelerated, so Adam steps run through torch's fused kernels and the
    rest (RAdam's first steps, AdaBound) through foreach; all must equal the reference."""
    calls = []
    original = torch_fused.run_

    def counted(call, slots):
        calls.append(len(slots[0]))
        return original(call, slots)

    monkeypatch.setattr(engines.fused, "run", lambda program, slots: list(range(len(slots[0]))))
    monkeypatch.setattr(engines, "on_accelerator", lambda tensor: True)
    monkeypatch.setattr(torch_fused, "run_", counted)
    monkeypatch.setattr(GroupPlan, "make", lambda *args: None)  # plans are CPU only
    reference = run(case, 12, foreach=False)
    result = run(case, 12, fused=True)
    assert_close_relative(result, reference, rtol=1e-12)
    expects_kernel = "AdaBound" not in case.name
    assert bool(calls) == expects_kernel


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", ENGINE_CASES, ids=case_id)
def test_fused_engine_on_cuda_equals_reference(case):
    results = []
    for engine in ({"foreach": False}, {"fused": True}):
        params = [p.detach().cuda().requires_grad_() for p in make_params()]
        sequence = [[None if g is None else g.cuda() for g in grads]
                    for grads in gradient_sequence(params, 12)]
        apply_(build(case, params, **engine), params, sequence)
        results.append([p.detach().cpu() for p in params])
    assert_close_relative(results[1], results[0], rtol=1e-12)
