"""Constructors: rectified's drop-ins take what torch.optim takes, and refuse what it refuses,
with the error type and message torch's own error database asks for."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from torch.testing._internal.common_optimizers import OptimizerErrorEnum

from tests.torch_suite.cases import (
    INFOS,
    NAMES,
    assert_same_error,
    make_params,
    ours_class,
    outcome,
    torch_class,
)


def _parameters(cls) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls.__init__).parameters)


@pytest.mark.parametrize("name", NAMES)
def test_takes_every_torch_argument_with_its_default(name):
    """Every constructor argument of torch's class exists in ours with the same default, so
    code written for torch.optim (keyword arguments, checkpoints' group keys) runs unchanged."""
    ours, theirs = _parameters(ours_class(name)), _parameters(torch_class(name))
    missing = [key for key in theirs if key not in ours]
    assert not missing, f"{name} lacks torch's arguments {missing}"
    for key, parameter in theirs.items():
        if parameter.default is not inspect.Parameter.empty:
            assert ours[key].default == parameter.default, (
                f"{name}({key}=...) defaults to {ours[key].default!r}, torch to "
                f"{parameter.default!r}"
            )


@pytest.mark.parametrize("name", NAMES)
def test_positional_arguments_in_torch_order(name):
    """torch's positional arguments come first in ours, in the same order: a positional call
    written for torch (``RMSprop(params, lr, alpha, eps, wd, momentum, centered, capturable)``)
    means the same thing."""

    def positional(cls):
        return [key for key, p in _parameters(cls).items()
                if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]

    theirs = positional(torch_class(name))
    assert positional(ours_class(name))[: len(theirs)] == theirs


def _error_cases():
    cases = []
    for name in NAMES:
        inputs = INFOS[name].optim_error_inputs_func
        for index, _ in enumerate(inputs(device="cpu", dtype=torch.float32)):
            cases.append(pytest.param(name, index, id=f"{name}-{index}"))
    return cases


@pytest.mark.parametrize(("name", "index"), _error_cases())
def test_error_inputs_raise_as_torch(name, index):
    """Each entry of torch's error database for this optimizer raises (or warns) the listed
    type with a message matching the listed pattern, at construction or at the first step."""
    error = INFOS[name].optim_error_inputs_func(device="cpu", dtype=torch.float32)[index]
    given = error.optimizer_error_input
    cls = ours_class(name)

    def act():
        optimizer = cls(given.params, **given.kwargs)
        if error.error_on == OptimizerErrorEnum.STEP_ERROR:
            optimizer.step()

    if issubclass(error.error_type, Warning):
        with pytest.warns(error.error_type, match=error.error_regex):
            act()
    else:
        with pytest.raises(error.error_type, match=error.error_regex):
            act()


CAPTURABLE = [name for name in NAMES if "capturable" in _parameters(torch_class(name))]


@pytest.mark.parametrize("name", CAPTURABLE)
def test_capturable_on_cpu_behaves_as_torch(name):
    """``capturable=True`` is a CUDA-graph option: torch accepts it and refuses to step CPU
    parameters with it; rectified must do the same, before moving anything."""
    params = make_params()
    before = [p.detach().clone() for p in params]
    for cls in (torch_class(name), ours_class(name)):
        optimizer = cls(params, capturable=True)  # accepted at construction, as torch does
        for p in params:
            p.grad = torch.ones_like(p)
        kind, error = outcome(optimizer.step)
        assert kind == "raised", f"{cls.__module__}.{name}(capturable=True) stepped CPU params"
        assert "capturable" in str(error), f"the error does not name capturable: {error}"
        for p, b in zip(params, before):
            assert torch.equal(p.detach(), b)


FUSED = [name for name in NAMES if "cpu" in INFOS[name].supports_fused_on]


@pytest.mark.parametrize("name", FUSED)
def test_fused_refuses_meta_parameters_as_torch(name):
    """fused=True on tensors the kernel cannot run raises torch's error at the step; after the
    model is materialised on the CPU the same optimizer steps."""
    results = []
    for cls in (torch_class(name), ours_class(name)):
        with torch.device("meta"):
            model = torch.nn.Linear(2, 3)
        optimizer = cls(model.parameters(), fused=True)
        for p in model.parameters():
            p.grad = torch.rand_like(p)
        results.append(outcome(optimizer.step))
        optimizer.zero_grad(set_to_none=True)
        model.to_empty(device="cpu")
        for p in model.parameters():
            p.grad = torch.rand_like(p)
        optimizer.step()
    (kind_t, theirs), (kind_o, ours) = results
    assert kind_t == "raised" and kind_o == "raised"
    assert_same_error(ours, theirs)
    assert "`fused=True` requires all the params to be floating point Tensors" in str(ours)


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_torch_default_flags(name):
    """Building with torch's global flags at their defaults (differentiable=False, and
    foreach/fused where torch has them) works and leaves a printable optimizer."""
    flags = {"differentiable": False, "foreach": None}
    if "fused" in _parameters(torch_class(name)):
        flags["fused"] = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = ours_class(name)(make_params(), **flags)
    assert "differentiable: False" in repr(optimizer)


@pytest.mark.parametrize("name", FUSED)
def test_fused_refuses_differentiable_as_torch(name):
    for cls in (torch_class(name), ours_class(name)):
        with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
            cls(make_params(), fused=True, differentiable=True)


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_refuses_hyperparameters_that_require_grad(name):
    """Derivatives flow to the parameters, gradients and state, not to a Tensor lr: one that
    requires grad is refused with a message naming it, instead of silently getting none."""
    lr = torch.tensor(0.01, requires_grad=True)
    with pytest.raises(ValueError, match="Invalid lr: a tensor that requires grad"):
        ours_class(name)(make_params(), lr=lr, differentiable=True)
    ours_class(name)(make_params(), lr=lr.detach(), differentiable=True)
