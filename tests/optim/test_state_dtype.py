"""``state_dtype``: float32 moments for low-precision parameters, on every engine.

The defined result: each step is computed in the state's dtype from the parameter's value, and
the parameter is rounded once. For Adam and AdamW that is torch.optim in float32 on a float32
copy that is rounded back to the parameter's dtype after every step, an independent reference.
"""

from __future__ import annotations

import pytest
import torch

import rectified
from tests.helpers import gradient_sequence, make_params, roundtrip
from tests.registry import CASES, case_id

STATE_CASES = tuple(
    case for case in CASES
    if case.build in (rectified.Adam, rectified.AdamW, rectified.RAdam, rectified.AdaBound,
                      rectified.Ranger)
)
ENGINES = {"reference": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
LOW = (torch.bfloat16, torch.float16)




def _train(case, dtype, steps=12, **kwargs):
    params = make_params(dtype)
    optimizer = case.build(params, **{**case.kwargs, **kwargs})
    for grads in gradient_sequence(params, steps):
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
    return params, optimizer


def _inner(optimizer):
    return optimizer.optimizer if isinstance(optimizer, rectified.Lookahead) else optimizer


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("case", STATE_CASES, ids=case_id)
def test_engines_agree_with_float32_state(case, dtype, fused_kernel):
    results = {}
    for name, engine in ENGINES.items():
        params, optimizer = _train(case, dtype, state_dtype=torch.float32, **engine)
        for p in params:
            state = _inner(optimizer).state[p]
            assert {v.dtype for k, v in state.items() if k != "step"} == {torch.float32}
            assert p.dtype == dtype
        results[name] = params
    eps = torch.finfo(dtype).eps
    for name in ("foreach", "fused"):
        for a, b in zip(results[name], results["reference"]):
            # float32 arithmetic in another order may round to the neighbouring value.
            assert torch.allclose(a.double(), b.double(), rtol=2 * eps, atol=0), name


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("name, twin", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW)])
def test_float32_state_is_a_float32_step_rounded_once(name, twin, dtype, engine, fused_kernel):
    case = next(case for case in STATE_CASES if case.name == name)
    params = make_params(dtype)
    copies = [p.detach().float().requires_grad_() for p in params]
    ours = case.build(params, **case.kwargs, state_dtype=torch.float32, **ENGINES[engine])
    reference = twin(copies, **case.kwargs)
    for grads in gradient_sequence(params, 12):
        for p, c, g in zip(params, copies, grads):
            p.grad = g
            c.grad = None if g is None else g.float()
        ours.step()
        reference.step()
        with torch.no_grad():
            for c in copies:
                c.copy_(c.to(dtype))  # the parameter is stored in its own dtype
    for p, c in zip(params, copies):
        assert torch.allclose(p.double(), c.double(), rtol=2 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_checkpoints_keep_float32_state_and_resume_exactly(engine, fused_kernel):
    case = next(case for case in STATE_CASES if case.name == "RAdam")
    kwargs = {**case.kwargs, "state_dtype": torch.float32, **ENGINES[engine]}
    sequence = gradient_sequence(make_params(torch.bfloat16), 10)

    straight = make_params(torch.bfloat16)
    optimizer = case.build(straight, **kwargs)
    resumed_params = make_params(torch.bfloat16)
    first = case.build(resumed_params, **kwargs)
    for step, grads in enumerate(sequence):
        if step == 6:
            checkpoint = roundtrip(first.state_dict())
            resumed = case.build(resumed_params, **kwargs)
            resumed.load_state_dict(checkpoint)
            for index, p in enumerate(resumed_params):
                for key, value in resumed.state[p].items():
                    if key != "step":
                        assert value.dtype == torch.float32
                        assert torch.equal(value, checkpoint["state"][index][key])
            first = resumed
        for a, b, g in zip(straight, resumed_params, grads):
            a.grad = g
            b.grad = None if g is None else g.clone()
        optimizer.step()
        first.step()
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed_params))


def test_default_state_follows_the_parameter():
    params, optimizer = _train(STATE_CASES[0], torch.bfloat16, steps=2)
    assert all(v.dtype == torch.bfloat16
               for p in params for k, v in optimizer.state[p].items() if k != "step")


@pytest.mark.parametrize("bad", [torch.int32, torch.complex64, "float32"])
def test_invalid_state_dtype(bad):
    with pytest.raises(ValueError, match=f"Invalid state_dtype: {bad!r}"):
        rectified.RAdam(make_params(), state_dtype=bad)


@pytest.mark.parametrize("param_dtype, state_dtype", [
    (torch.float32, torch.bfloat16), (torch.float32, torch.float16),
    (torch.float64, torch.float32)])
@pytest.mark.parametrize("case", STATE_CASES, ids=case_id)
def test_narrower_state_rounds_only_the_state(case, param_dtype, state_dtype, fused_kernel):
    """State narrower than the parameter: the step is computed in the wider dtype and only the
    state is rounded, on every engine; the parameter keeps its precision (a parameter rounded
    to the state's dtype would be off by far more than the tolerance)."""
    results = {}
    for name, engine in ENGINES.items():
        params, optimizer = _train(case, param_dtype, state_dtype=state_dtype, **engine)
        for p in params:
            state = _inner(optimizer).state[p]
            assert {v.dtype for k, v in state.items() if k != "step"} == {state_dtype}
            assert p.dtype == param_dtype
        results[name] = params
    exact, _ = _train(case, torch.float64)
    for name, params in results.items():
        for p, e in zip(params, exact):
            if e.numel():
                # Rounded moments move each step by a fraction of the step size, nothing more.
                error = (p.double() - e).abs().max().item()
                assert error <= 1e-2 * case.kwargs.get("lr", 1e-3) * 12, name
