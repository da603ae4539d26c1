"""Trajectories: for every configuration torch tests its own class with, rectified's class is
accepted and follows torch's trajectory (float64, CPU, 5 steps, a parameter without gradient at
one step, a non-contiguous and a 0-dim parameter) on every engine; where torch raises, rectified
raises an error of the same type."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from tests.torch_suite.cases import (
    ENGINES,
    NAMES,
    all_configurations,
    assert_close,
    assert_same_outcome,
    case_id,
    clone_params,
    configurations,
    engine_flags,
    fresh,
    gradients,
    make_params,
    ours_class,
    step_through,
    torch_class,
)

CASES = all_configurations()
# differentiable=True steps non-leaf tensors; torch's step reads their .grad, which warns.
NON_LEAF_GRAD = pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not")


def _params_for(base: list[torch.Tensor], flags) -> list[torch.Tensor]:
    if flags.get("differentiable"):  # steps non-leaf tensors, building a graph
        return [b.detach().clone().requires_grad_().clone() for b in base]
    return clone_params(base)


def _run(cls, base, kwargs, flags):
    params = _params_for(base, flags)
    optimizer = cls(params, **fresh(kwargs), **flags)
    step_through(optimizer, params, gradients(params))
    return optimizer, params


@NON_LEAF_GRAD
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch(case, engine, request):
    name, index = case
    if engine == "fused":
        request.getfixturevalue("fused_kernel")
    kwargs = configurations(name)[index]
    ours_flags, torch_flags = engine_flags(name, engine)
    base = make_params()
    assert_same_outcome(lambda: _run(ours_class(name), base, kwargs, ours_flags),
                        lambda: _run(torch_class(name), base, kwargs, torch_flags))


# Not inputs of the derivative: step counters, and NAdam's mu_product, a number per parameter
# that rectified's rule takes as a plain number of the step (documented in docs/optimizers.md).
NOT_DIFFERENTIATED = ("step", "mu_product")


def _given_first_state(name: str, kwargs) -> bool:
    """Whether the state entering the first step is given as an input too. torch's SGD makes its
    first momentum buffer a detached copy of the gradient, so its derivatives through a first
    momentum step lack the buffer's path (d p_1 / d g_1 = 0); its later steps are exact. Such
    cases start from a given buffer here, and the first step is held to its closed form by
    test_differentiable_first_momentum_step."""
    return name == "SGD" and kwargs.get("momentum", 0) != 0


def _gradients_through_steps(cls, kwargs, state_keys=None, first_state=False):
    """Two steps with ``differentiable=True``; the state between them is replaced by fresh
    inputs (as torch's own gradcheck of the step does: a second in-place update of state the
    first step's graph saved cannot be differentiated, in torch either). Returns the state keys
    used and d(sum_i w_i . p_i) / d(initial parameters, [the state entering step 1,] the state
    entering step 2, both steps' gradients).

    Runs with float64 as the default dtype, so that torch keeps its step counters in float64:
    with float32 ones its differentiable Adam computes 1 - β2^t in float32, 3e-5 off in relative
    terms at t = 2, which is torch's rounding, not the derivative under test."""
    with default_dtype(torch.float64):
        leaves = make_params()
        params = [p.clone() for p in leaves]
        grads = [[g.requires_grad_() if g is not None else None for g in step]
                 for step in gradients(params, 2)]
        optimizer = cls(params, **fresh(kwargs), differentiable=True)
        inputs = list(leaves)
        if first_state:
            for p, buffer in zip(params, gradients(params, 1, seed=11)[0]):
                inputs.append(buffer.requires_grad_())
                optimizer.state[p].update(momentum_buffer=buffer.clone(), step=torch.tensor(1.0))
        for number, step in enumerate(grads):
            for p, g in zip(params, step):
                p.grad = g
            if number == 1:
                for p in params:
                    state = optimizer.state[p]
                    keys = state_keys if state_keys is not None else sorted(
                        k for k, v in state.items()
                        if k not in NOT_DIFFERENTIATED and torch.is_tensor(v)
                        and v.is_floating_point())
                    for key in keys:
                        leaf = state[key].detach().clone().requires_grad_()
                        inputs.append(leaf)
                        state[key] = leaf.clone()
                state_keys = keys
            optimizer.step()
        loss = sum((p * w).sum() for p, w in zip(params, _loss_weights(params)))
        inputs += [g for step in grads for g in step if g is not None]
        return state_keys, torch.autograd.grad(loss, inputs, allow_unused=True)


def _loss_weights(params):
    return gradients(params, 1, seed=7)[0]


@contextmanager
def default_dtype(dtype: torch.dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@NON_LEAF_GRAD
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_differentiable_step_gradients_match_torch(case):
    """``differentiable=True`` makes the step differentiable with respect to the parameters, the
    gradients and the state it was given: the derivatives agree with torch's (which torch checks
    with gradcheck). Inputs: the 4 initial parameters, then the state entering step 2, then the
    gradients of both steps."""
    name, index = case
    kwargs = configurations(name)[index]
    first = _given_first_state(name, kwargs)
    keys, expected = _gradients_through_steps(torch_class(name), kwargs, first_state=first)
    _, actual = _gradients_through_steps(ours_class(name), kwargs, keys, first_state=first)
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None or not a.any(), f"input {i}: torch has no gradient"
            continue
        assert a is not None, f"input {i}: no gradient flows through rectified's step"
        assert_close(a, e, f"gradient of input {i}", rtol=1e-10)


@NON_LEAF_GRAD
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_differentiable_first_momentum_step(nesterov, maximize):
    """SGD's first momentum step, b_1 = d_1 = ±g_1 + λ θ_0 (Nesterov: d_1 = (1 + μ) b_1), is
    θ_1 = θ_0 - γ d_1, so for L = Σ w·θ_1: dL/dg_1 = ∓γ(1 + μ[Nesterov]) w and dL/dθ_0 =
    (1 - γ λ (1 + μ[Nesterov])) w, exactly."""
    lr, momentum, weight_decay = 0.1, 0.9, 0.3
    leaves = make_params()
    params = [p.clone() for p in leaves]
    grads = [g.requires_grad_() for g in gradients(params, 1)[0]]
    optimizer = ours_class("SGD")(params, lr=lr, momentum=momentum, nesterov=nesterov,
                                  weight_decay=weight_decay, maximize=maximize,
                                  differentiable=True)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    weights = _loss_weights(params)
    loss = sum((p * w).sum() for p, w in zip(params, weights))
    actual = torch.autograd.grad(loss, [*leaves, *grads])
    scale = 1 + momentum if nesterov else 1.0
    sign = 1.0 if maximize else -1.0
    expected = [(1 - lr * weight_decay * scale) * w for w in weights]
    expected += [sign * lr * scale * w for w in weights]
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, f"gradient of input {i}", rtol=1e-14)


@pytest.mark.parametrize("num_dim", [0, 1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_tensor_lr_of_any_shape_matches_torch(name, num_dim):
    """A one-element Tensor lr of shape (), (1,) or (1, 1) steps as torch's class does."""
    base = make_params()
    lr = 1e-2 if name != "Adadelta" else 0.5
    kwargs = {"lr": torch.tensor(lr, dtype=torch.float64).reshape([1] * num_dim)}
    theirs = _run(torch_class(name), base, kwargs, {"foreach": False})
    ours = _run(ours_class(name), base, kwargs, {"foreach": False})
    for i, (p, q) in enumerate(zip(ours[1], theirs[1])):
        assert_close(p, q, f"parameter {i}")
