"""fused.cuda: a traced program that is one adaptive ``adam_step_`` handed to torch's fused Adam
kernels, against the reference engine; every other program refused."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import rectified
from rectified.engines.fused import cuda, kernel
from rectified.engines.fused.plans import GroupPlan
from rectified.engines.fused.program import Program, Register, instructions, trace
from rectified.engines.reference import ReferenceEngine
from rectified.rules.adabound import BoundedStep
from rectified.rules.moments import ADAPTIVE, MOMENTUM, NO_STEP, AdamStep, bias_corrections
from tests.helpers import apply_, assert_close_relative, build, gradient_sequence, make_params, run
from tests.registry import CASES, case_id

SHAPES = ((4, 3), (5,), (0,), (2, 2, 2), (37,))  # 37: the kernels' vector loop and its tail
STEPS = 12
REFERENCE = ReferenceEngine()


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


def config(name: str, maximize: bool = False, **overrides) -> tuple:
    build, kwargs = CONFIGS[name]
    return optimizer_group(build, **{**kwargs, "maximize": maximize, **overrides})


def make_state(rule, group, dtype=torch.float64, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(shape, generator=generator, dtype=torch.float64).to(device, dtype)
              for shape in SHAPES]
    return params, [rule.init_state(p, group) for p in params]


def gradients_for(params, steps=STEPS, seed=1) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.device, p.dtype)
             for p in params] for _ in range(steps)]


def trace_step(rule, group, step: int) -> Program:
    keys = rule.state_keys(group)

    def body(ops, params, grads, *state):
        rule.update_(ops, params, grads, dict(zip(keys, state)), group, step)

    return trace(body, 2 + len(keys))


def slots_of(rule, group, params, grads, states) -> list[list[torch.Tensor]]:
    return [params, grads, *([s[k] for s in states] for k in rule.state_keys(group))]


def reference_step_(rule, group, params, grads, states, step: int) -> None:
    REFERENCE.run_rule(rule, group, rule.state_keys(group),
                       slots_of(rule, group, params, grads, states), [step] * len(params))


def lr_at(group, step: int) -> dict:
    """The group with an lr that changes every step, as under a scheduler."""
    return {**group, "lr": group["lr"] / (1 + 0.3 * step)}


def torch_step_(rule, group, params, grads, states, step: int) -> bool:
    """One step through torch's kernel where adam_call maps the program, else through the
    reference engine (as the fused engine would, with foreach); whether the kernel ran."""
    call = cuda.adam_call(trace_step(rule, group, step))
    if call is None:
        reference_step_(rule, group, params, grads, states, step)
        return False
    cuda.run_(call, slots_of(rule, group, params, grads, states))
    return True


def compare_trajectories(rule, group, dtype, rtol, device="cpu") -> tuple[list[int], list]:
    """STEPS steps with a changing lr, reference engine against torch's kernel, every slot
    compared after every step; returns the steps the kernel ran and the parameters."""
    reference_params, reference_states = make_state(rule, group, dtype, device)
    params, states = make_state(rule, group, dtype, device)
    kernel_steps = []
    for step, grads in enumerate(gradients_for(params), start=1):
        stepped = lr_at(group, step)
        grads_before = [g.clone() for g in grads]
        reference_step_(rule, stepped, reference_params, grads, reference_states, step)
        if torch_step_(rule, stepped, params, grads, states, step):
            kernel_steps.append(step)
        for ours, reference in zip(slots_of(rule, group, params, grads, states),
                                   slots_of(rule, group, reference_params, grads,
                                            reference_states)):
            assert_close_relative(ours, reference, rtol)
        assert all(torch.equal(g, before) for g, before in zip(grads, grads_before))
    return kernel_steps, params


def expected_kernel_steps(group) -> list[int]:
    """Every step; for RAdam those with ρ_t = ρ_∞ - 2 t β2^t / (1 - β2^t) above the threshold."""
    if "threshold" not in group:
        return list(range(1, STEPS + 1))
    beta2 = group["betas"][1]
    rho_infinity = 2 / (1 - beta2) - 1
    return [t for t in range(1, STEPS + 1)
            if rho_infinity - 2 * t * beta2**t / (1 - beta2**t) > group["threshold"]]


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_adaptive_steps_are_mapped_and_the_others_refused(name, maximize):
    """Every step is one adam_step_; RAdam's with ρ_t <= threshold (β2 = 0.999: steps 1-5 for
    threshold 5, ρ_5 = 4.996, and 1-4 for threshold 4) do not divide by √v and are refused."""
    rule, group = config(name, maximize)
    mapped = []
    for step in range(1, STEPS + 1):
        program = trace_step(rule, lr_at(group, step), step)
        (op, _, scalars), = instructions(program)
        assert op == "adam_step_"
        if cuda.adam_call(program) is not None:
            assert scalars[-1] == ADAPTIVE
            mapped.append(step)
        else:
            unadapted = MOMENTUM if group.get("degenerated_to_sgd", True) else NO_STEP
            assert scalars[-1] == unadapted
    assert mapped == expected_kernel_steps(group)
    assert mapped[0] == {None: 1, 5.0: 6, 4.0: 5}[group.get("threshold")]


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_torch_kernel_equals_reference(name, maximize, dtype, rtol, device):
    rule, group = config(name, maximize)
    kernel_steps, _ = compare_trajectories(rule, group, dtype, rtol, device)
    assert kernel_steps == expected_kernel_steps(group)


def run_from(rule, group, params, sequence, use_kernel: bool) -> list[torch.Tensor]:
    states = [rule.init_state(p, group) for p in params]
    kernel_steps = 0
    for step, grads in enumerate(sequence, start=1):
        stepped = lr_at(group, step)
        if use_kernel:
            kernel_steps += torch_step_(rule, stepped, params, grads, states, step)
        else:
            reference_step_(rule, stepped, params, grads, states, step)
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
    sequence = gradients_for(start)
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
    """γ = step size · denominator scale, ε scaled alike, decoupled decay c as λ = (1 - c) / γ."""
    rule, group = config("AdamW", maximize=True)
    step, lr, wd, eps = 3, group["lr"], group["weight_decay"], group["eps"]
    call = cuda.adam_call(trace_step(rule, group, step))
    bc = bias_corrections(step, 0.9, 0.999)
    assert call is not None
    assert (call.decoupled, call.maximize, call.amsgrad) == (True, True, False)
    assert call.slots == (0, 1, 2, 3)
    assert (call.beta1, call.beta2) == (0.9, 0.999)
    assert call.lr == pytest.approx(lr / bc.first * bc.second_sqrt, rel=1e-15)
    assert call.eps == pytest.approx(eps * bc.second_sqrt, rel=1e-15)
    assert call.weight_decay == pytest.approx(lr * wd / call.lr, rel=1e-12)
    assert 1.0 - call.lr * call.weight_decay == 1.0 - lr * wd  # the kernel's factor, exactly

    rule, group = config("Adam-amsgrad")
    call = cuda.adam_call(trace_step(rule, group, step))
    assert call is not None
    assert (call.decoupled, call.maximize, call.amsgrad) == (False, False, True)
    assert call.slots == (0, 1, 2, 3, 4) and call.weight_decay == group["weight_decay"]

    rule, group = config("RAdam")  # RAdam's adaptive step has no √bc2 division: s = 1
    call = cuda.adam_call(trace_step(rule, group, 6))
    bc = bias_corrections(6, 0.9, 0.999)
    rho = 1999.0 - 12 * 0.999**6 / bc.second  # ρ_6, with ρ_∞ = 2 / (1 - β2) - 1 = 1999
    r = math.sqrt((rho - 4) * (rho - 2) * 1999 / (1995 * 1997 * rho))
    assert call is not None and call.eps == group["eps"]
    assert call.lr == pytest.approx(group["lr"] * r * bc.second_sqrt / bc.first, rel=1e-14)


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
def test_zero_lr_with_decoupled_decay_is_a_plain_step(name):
    """lr = 0 traces a decay factor of exactly 1: no decay, no step, moments still move. (A
    decay other than 1 with a zero step size is refused: see the changed steps below.)"""
    rule, group = config(name, lr=0.0)
    call = cuda.adam_call(trace_step(rule, group, 7))
    assert call is not None
    assert (call.lr, call.weight_decay, call.decoupled) == (0.0, 0.0, False)
    kernel_steps, params = compare_trajectories(rule, group, torch.float64, rtol=1e-12)
    assert kernel_steps == expected_kernel_steps(group)
    assert all(torch.equal(p, start) for p, start in zip(params, make_state(rule, group)[0]))


OTHER_RULES = {
    "AdaBound": (rectified.AdaBound, dict(lr=1e-2, final_lr=0.1)),
    "AMSBound": (rectified.AdaBound, dict(lr=1e-2, final_lr=0.1, amsbound=True, weight_decay=0.01)),
    "SGD-nesterov": (rectified.SGD, dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "SGD": (rectified.SGD, dict(lr=1e-2)),
    "RMSprop": (rectified.RMSprop, dict(lr=1e-2)),
    "RMSprop-centered": (rectified.RMSprop, dict(lr=1e-2, momentum=0.9, centered=True)),
    "Adagrad": (rectified.Adagrad, dict(lr=1e-2)),
    "Adadelta": (rectified.Adadelta, dict(lr=1.0)),
}


@pytest.mark.parametrize("name", OTHER_RULES)
def test_other_rules_are_refused(name):
    build, kwargs = OTHER_RULES[name]
    rule, group = optimizer_group(build, **kwargs)
    for step in range(1, 7):
        program = trace_step(rule, group, step)
        assert instructions(program)  # something was traced
        assert cuda.adam_call(program) is None


# Changed programs: each is a mapped program, rebuilt instruction by instruction (which maps
# to the same call) with one thing changed.
def base_program(kind: str) -> Program:
    """COUPLED: Adam, AMSGrad, maximize, coupled decay (slots p g m v vmax); DECOUPLED: AdamW,
    maximize (slots p g m v)."""
    rule, group = config("Adam-amsgrad" if kind == "COUPLED" else "AdamW", maximize=True)
    return trace_step(rule, group, 3)


def rebuilt(program: Program, *emitted: tuple) -> Program:
    """A program of ``program``'s slots with the instructions (name, registers, scalars)."""
    out = Program(program.n_slots)
    for name, registers, scalars in emitted:
        out.emit(name, tuple(Register(r) for r in registers), scalars)
    return out


def adam_step_of(scalars) -> AdamStep:
    return AdamStep(**dict(zip((f.name for f in dataclasses.fields(AdamStep)), scalars)))


def changed_step(kind: str, **changes) -> Program:
    program = base_program(kind)
    (name, registers, scalars), = instructions(program)
    step = dataclasses.replace(adam_step_of(scalars), **changes)
    return rebuilt(program, (name, registers, dataclasses.astuple(step)))


STEP_CHANGES = {
    "beta1 = 1": ("DECOUPLED", dict(beta1=1.0)),
    "beta1 < 0": ("DECOUPLED", dict(beta1=-0.5)),
    "beta2 = 1": ("COUPLED", dict(beta2=1.0)),
    "denominator scale 0": ("DECOUPLED", dict(denom_scale=0.0)),
    "negative denominator scale": ("DECOUPLED", dict(denom_scale=-0.5)),
    "infinite denominator scale": ("COUPLED", dict(denom_scale=math.inf)),
    "denominator scale NaN": ("COUPLED", dict(denom_scale=math.nan)),
    "step size NaN": ("DECOUPLED", dict(step_size=math.nan)),
    "step size overflows when rescaled": ("COUPLED", dict(step_size=1e308, denom_scale=10.0)),
    "step size vanishes when rescaled": ("COUPLED", dict(step_size=5e-324, denom_scale=0.25)),
    "infinite eps": ("DECOUPLED", dict(eps=math.inf)),
    "eps vanishes when rescaled": ("DECOUPLED", dict(eps=5e-324, denom_scale=0.25)),
    "coupled and decoupled decay together": ("DECOUPLED", dict(weight_decay=0.01)),
    "decoupled decay with a zero step size": ("DECOUPLED", dict(step_size=0.0)),
    "decoupled decay NaN": ("DECOUPLED", dict(decay=math.nan)),
    "decoupled decay overflows as a rate": ("DECOUPLED", dict(decay=-1e300, step_size=1e-10)),
    "coupled decay NaN": ("COUPLED", dict(weight_decay=math.nan)),
    "momentum step": ("COUPLED", dict(mode=MOMENTUM)),
    "no step": ("DECOUPLED", dict(mode=NO_STEP)),
}


@pytest.mark.parametrize("name", STEP_CHANGES)
def test_changed_steps_are_refused(name):
    kind, changes = STEP_CHANGES[name]
    assert cuda.adam_call(changed_step(kind)) == cuda.adam_call(base_program(kind)) is not None
    assert cuda.adam_call(changed_step(kind, **changes)) is None


def bounded(code):
    """The same registers in ``bounded_step_`` with bounds (0, inf): Adam's values, not its
    instruction."""
    (_, registers, scalars), = code
    step = adam_step_of(scalars)
    return [("bounded_step_", registers, dataclasses.astuple(BoundedStep(
        beta1=step.beta1, beta2=step.beta2, decay=step.decay, maximize=step.maximize,
        weight_decay=step.weight_decay, eps=step.eps * step.denom_scale,
        scale=step.step_size * step.denom_scale, lower=0.0, upper=math.inf)))]


PROGRAM_CHANGES = {
    "two steps": lambda code: [*code, *code],
    "a primitive after the step": lambda code: [*code, ("mul_scalar", (0, 0), (0.5,))],
    "a primitive before the step": lambda code: [("neg", (1, 1), ()), *code],
    "a primitive alone": lambda code: [("lerp", (2, 2, 1), (0.1,))],
    "a bounded step": bounded,
    "nothing": lambda code: [],
}


@pytest.mark.parametrize("kind", ["COUPLED", "DECOUPLED"])
@pytest.mark.parametrize("name", PROGRAM_CHANGES)
def test_changed_programs_are_refused(name, kind):
    program = base_program(kind)
    code = instructions(program)
    assert cuda.adam_call(rebuilt(program, *code)) == cuda.adam_call(program) is not None
    assert cuda.adam_call(rebuilt(program, *PROGRAM_CHANGES[name](code))) is None


# run_ checks every tensor before it writes any.
def adam_call_and_slots():
    rule, group = config("Adam-amsgrad", maximize=True)
    params, states = make_state(rule, group)
    grads = gradients_for(params, 1)[0]
    call = cuda.adam_call(trace_step(rule, group, 2))
    assert call is not None
    return call, slots_of(rule, group, params, grads, states)


def assert_refused_untouched(call, slots, message):
    before = [[x.clone() for x in xs] for xs in slots]
    with pytest.raises(ValueError, match=message):
        cuda.run_(call, slots)
    assert all(torch.equal(x, y) for xs, ys in zip(slots, before) for x, y in zip(xs, ys))


def test_run_refuses_mismatched_tensors_and_lists():
    call, slots = adam_call_and_slots()

    def changed(s, i, make):
        copy = [list(xs) for xs in slots]
        copy[s][i] = make(copy[s][i])
        return copy

    # The last parameter's v: the other parameters come first and must stay untouched too.
    assert_refused_untouched(call, changed(3, -1, torch.Tensor.float),
                             "list 3 holds a torch.float32")
    strided = [[*xs[:-1], torch.zeros(37, 2, dtype=torch.float64)[:, 0]] for xs in slots]
    assert_refused_untouched(call, strided, "contiguous: False")
    assert_refused_untouched(call, changed(2, -1, lambda x: x.neg()._neg_view()),
                             r"list 2 holds a torch.float64 \(37,\)")
    assert_refused_untouched(call, changed(4, 0, lambda x: x.reshape(3, 4)),
                             r"expected a plain contiguous torch.float64 \(4, 3\)")
    assert_refused_untouched(call, changed(3, 1, lambda x: torch.zeros(6, dtype=x.dtype)),
                             r"expected a plain contiguous torch.float64 \(5,\)")
    shorter = [list(xs) for xs in slots]
    shorter[2].pop()
    assert_refused_untouched(call, shorter, r"different lengths: \[4, 5\]")
    integers = [[x.long() for x in xs] for xs in slots]
    assert_refused_untouched(call, integers, "dtype torch.int64")


def test_run_refuses_too_few_lists():
    call, slots = adam_call_and_slots()
    assert_refused_untouched(call, slots[:-1], "5 tensor lists")


def test_run_takes_a_bucket_of_mixed_dtypes():
    rule, group = config("RAdam-decoupled", maximize=True)
    params, _ = make_state(rule, group)
    params = [p.float() if i % 2 else p for i, p in enumerate(params)]
    states = [rule.init_state(p, group) for p in params]
    reference_params = [p.clone() for p in params]
    reference_states = [rule.init_state(p, group) for p in params]
    kernel_steps = []
    for step, grads in enumerate(gradients_for(params), start=1):
        reference_step_(rule, group, reference_params, grads, reference_states, step)
        if torch_step_(rule, group, params, grads, states, step):
            kernel_steps.append(step)
    assert kernel_steps == expected_kernel_steps(group)
    for ours, reference in zip(params, reference_params):
        rtol = 1e-12 if ours.dtype == torch.float64 else 1e-6
        assert ours.dtype == reference.dtype
        assert_close_relative([ours], [reference], rtol)


ENGINE_CASES = [case for case in CASES if case.name in
                ("Adam", "Adam-amsgrad", "AdamW", "RAdam", "RAdam-decoupled", "AdaBound",
                 "Ranger")]


@pytest.mark.parametrize("case", ENGINE_CASES, ids=case_id)
def test_fused_engine_off_the_cpu_takes_torch_kernels_for_adam_steps(case, monkeypatch):
    """The CUDA path on the CPU: the kernel declines every tensor (as it does CUDA ones) and
    CPU tensors count as CUDA ones, so Adam steps run through torch's fused kernels and the
    rest (RAdam's first steps, AdaBound) through foreach; all must equal the reference."""
    calls = []
    original = cuda.run_

    def counted(call, slots):
        calls.append(len(slots[0]))
        return original(call, slots)

    monkeypatch.setattr(kernel, "run_program_",
                        lambda program, slots, read_only=(): (list(range(len(slots[0]))), []))
    monkeypatch.setattr(kernel, "load", lambda build_if_missing=False: True)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda tensor: True))
    monkeypatch.setattr(cuda, "run_", counted)
    monkeypatch.setattr(GroupPlan, "make", lambda *args: None)  # plans are CPU only
    reference = run(case, 12, foreach=False)
    result = run(case, 12, fused=True)
    assert_close_relative(result, reference, rtol=1e-12)
    expects_kernel = "AdaBound" not in case.name
    assert bool(calls) == expects_kernel


@CUDA
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
