"""Inputs at the edges of a dtype or of a type: every optimizer with an ε on every engine with
float16 parameters and the default ε (1e-8 is 0 in float16), and hyperparameters that are not
numbers or are NaN, raised at construction as torch.optim does."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rectified.engines import state as engine_state
from tests.registry import CASES, TORCH_TWINS
from tests.reliability.support import ENGINE_OPTIONS, RULE_CASES, case_engine_id, case_engine_params

SHAPES = ((64,), (4, 3))
STEPS = 3


def _has(case, key: str) -> bool:
    probe = case.build([torch.zeros(1, requires_grad=True)], **case.kwargs)
    return key in probe.param_groups[0]


EPS_CASES = tuple(case for case in RULE_CASES if _has(case, "eps"))


def _float16_run(build, eps: float | None) -> list[torch.Tensor]:
    """Gradients mixing zeros, values whose squares underflow in float16 (1e-4) and ordinary
    ones, so that sqrt(v) is 0 for some elements and tiny for others."""
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(shape, generator=generator).half().requires_grad_() for shape in SHAPES]
    optimizer = build(params, **({} if eps is None else {"eps": eps}))
    for _ in range(STEPS):
        for p in params:
            g = torch.randn(p.shape, generator=generator)
            g[::4] = 0.0
            g[1::4] = 1e-4
            p.grad = g.half()
        optimizer.step()
    return [p.detach().float() for p in params]


def _assert_same_finiteness(result, expected) -> None:
    for got, want in zip(result, expected):
        assert torch.equal(got.isfinite(), want.isfinite())
        assert torch.equal(got.isnan(), want.isnan())
        # float16 rounds v, and the fused kernel computes a step in float32 before it stores:
        # where squares underflow, the steps differ by far more than a float16 ulp (about 0.1
        # after 3 Adam steps); values still within reach of each other, not garbage.
        finite = want.isfinite()
        assert torch.allclose(got[finite], want[finite], rtol=2e-2, atol=0.25)


@pytest.mark.filterwarnings("ignore:eps=.* is 0 in torch.float16")
@pytest.mark.parametrize("eps", [None, 1e-3])
@pytest.mark.parametrize(("case", "engine"), case_engine_params(EPS_CASES), ids=case_engine_id)
def test_float16_engines_agree_on_which_values_are_not_finite(case, engine, eps, fused_kernel,
                                                              monkeypatch):
    """With the default ε every engine (and torch.optim) turns the same values inf or NaN,
    and one warning names ε and the dtype wherever ε is 0 in float16; with ε = 1e-3 nothing
    is warned."""
    monkeypatch.setattr(engine_state, "_warned_underflow", set())
    reference = _float16_run(
        lambda params, **o: case.build(params, **{**case.kwargs, "foreach": False, **o}), eps)
    monkeypatch.setattr(engine_state, "_warned_underflow", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _float16_run(lambda params, **o: case.build(
            params, **{**case.kwargs, **ENGINE_OPTIONS[engine], **o}), eps)
    underflow = [w for w in caught if "is 0 in torch.float16" in str(w.message)]
    group_eps = case.build([torch.zeros(1, requires_grad=True)], **case.kwargs,
                           **({} if eps is None else {"eps": eps})).param_groups[0]["eps"]
    if torch.tensor(group_eps, dtype=torch.float16).item() == 0.0:
        assert len(underflow) == 1, [str(w.message) for w in caught]
        assert f"eps={group_eps} is 0 in torch.float16" in str(underflow[0].message)
        assert underflow[0].filename == __file__  # points at the caller's step()
    else:
        assert not underflow
    _assert_same_finiteness(result, reference)
    if case.torch_twin is not None:
        twin = _float16_run(
            lambda params, **o: case.torch_twin(params, **{**case.kwargs, "foreach": False, **o}),
            eps)
        _assert_same_finiteness(result, twin)


def test_an_eps_held_by_float16_warns_nothing_and_stays_finite(monkeypatch):
    monkeypatch.setattr(engine_state, "_warned_underflow", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for case in EPS_CASES:
            result = _float16_run(
                lambda params, case=case, **o: case.build(params, **{**case.kwargs, **o}), 1e-3)
            assert all(bool(r.isfinite().all()) for r in result), case.name


# --- hyperparameters of the wrong type ------------------------------------------------------

def _bad_values(case) -> list[tuple[str, dict, type[Exception]]]:
    bad = [("lr-string", {"lr": "0.1"}, TypeError), ("lr-nan", {"lr": math.nan}, ValueError)]
    if _has(case, "betas"):
        bad += [("beta1-string", {"betas": ("0.9", 0.999)}, TypeError),
                ("beta2-string", {"betas": (0.9, "0.999")}, TypeError),
                ("beta2-nan", {"betas": (0.9, math.nan)}, ValueError)]
    if _has(case, "eps"):
        bad += [("eps-string", {"eps": "1e-8"}, TypeError), ("eps-nan", {"eps": math.nan},
                                                               ValueError)]
    if _has(case, "threshold"):
        bad += [("threshold-nan", {"threshold": math.nan}, ValueError),
                ("threshold-string", {"threshold": "5"}, TypeError)]
    return bad


BAD = [pytest.param(case, kwargs, error, id=f"{case.name}-{name}")
       for case in CASES for name, kwargs, error in _bad_values(case)]


@pytest.mark.parametrize(("case", "kwargs", "error"), BAD)
def test_a_hyperparameter_that_is_not_a_number_raises_at_construction(case, kwargs, error):
    params = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(error):
        case.build(params, **{**case.kwargs, **kwargs})


@pytest.mark.parametrize(("case", "kwargs", "error"), [
    p for p in BAD if p.values[0] in TORCH_TWINS and p.values[2] is TypeError
    and "threshold" not in p.values[1]])
def test_torch_optim_raises_the_same_kind_of_error(case, kwargs, error):
    """Values that are not numbers (torch.optim accepts a NaN lr for SGD; rectified does not)."""
    params = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(error):
        case.torch_twin(params, **{**case.kwargs, **kwargs})
