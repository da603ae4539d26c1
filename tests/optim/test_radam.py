"""RAdam against a hand-written Algorithm 2 of the paper, its pinned decisions, and checkpoint
interchange with torch.optim."""

from __future__ import annotations

import math

import pytest
import torch

import rectified
from rectified.rules.radam import radam_coefficients
from tests.helpers import assert_close_relative, gradient_sequence, make_params, roundtrip


def paper_algorithm_2(theta, grads, lr, beta1, beta2, threshold, sgd_fallback):
    """Liu et al., Algorithm 2, written out per scalar element in plain Python floats."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    rho_inf = 2 / (1 - beta2) - 1
    for t, g in enumerate(grads, start=1):
        rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        for i, gi in enumerate(g):
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
            m[i] = beta1 * m[i] + (1 - beta1) * gi
            m_hat = m[i] / (1 - beta1**t)
            if rho > threshold:
                adaptive = math.sqrt((1 - beta2**t) / v[i])
                r = math.sqrt((rho - 4) * (rho - 2) * rho_inf
                              / ((rho_inf - 4) * (rho_inf - 2) * rho))
                theta[i] -= lr * r * m_hat * adaptive
            elif sgd_fallback:
                theta[i] -= lr * m_hat
    return theta


@pytest.mark.parametrize("engine", [False, True])
@pytest.mark.parametrize(("threshold", "fallback"), [(4.0, True), (4.0, False), (5.0, True)])
def test_matches_paper_algorithm_2(threshold, fallback, engine):
    generator = torch.Generator().manual_seed(3)
    start = torch.randn(6, dtype=torch.float64, generator=generator)
    grads = [torch.randn(6, dtype=torch.float64, generator=generator) for _ in range(40)]
    expected = paper_algorithm_2(start.tolist(), [g.tolist() for g in grads], 0.05, 0.9, 0.99,
                                 threshold, fallback)
    theta = start.clone().requires_grad_()
    optimizer = rectified.RAdam([theta], lr=0.05, betas=(0.9, 0.99), eps=0.0,
                                threshold=threshold, degenerated_to_sgd=fallback, foreach=engine)
    for g in grads:
        theta.grad = g.clone()
        optimizer.step()
    assert_close_relative([theta.detach()], [torch.tensor(expected, dtype=torch.float64)], 1e-12)


@pytest.mark.parametrize(("threshold", "first_adaptive_step"), [(4.0, 5), (5.0, 6)])
def test_threshold_decides_the_first_rectified_step(threshold, first_adaptive_step):
    """With beta2 = 0.999, rho_t first exceeds 4 at t = 5 and 5 at t = 6."""
    rho = [rectified.rho_t(t, 0.999) for t in range(1, 8)]
    assert [r > threshold for r in rho].index(True) + 1 == first_adaptive_step
    modes = [radam_coefficients(t, 1e-3, 0.9, 0.999, threshold).adaptive for t in range(1, 8)]
    assert modes.index(True) + 1 == first_adaptive_step
    assert not any(modes[: first_adaptive_step - 1])


def test_default_threshold_is_five_and_falls_back_to_sgd():
    optimizer = rectified.RAdam([torch.zeros(1, requires_grad=True)])
    assert optimizer.defaults["threshold"] == 5.0
    assert optimizer.defaults["degenerated_to_sgd"] is True


def test_skipped_step_keeps_parameter_but_accumulates_moments():
    p = torch.ones(3, requires_grad=True)
    optimizer = rectified.RAdam([p], lr=0.1, weight_decay=0.5, decoupled_weight_decay=True,
                                degenerated_to_sgd=False)
    p.grad = torch.full((3,), 2.0)
    optimizer.step()
    assert torch.equal(p.detach(), torch.ones(3))
    assert torch.allclose(optimizer.state[p]["exp_avg"], torch.full((3,), 0.2))


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "RAdam"])
@pytest.mark.parametrize("direction", ["torch->rectified", "rectified->torch"])
def test_checkpoints_interchange_with_torch_optim(name, direction, amsgrad):
    """A checkpoint of one library's optimizer continues identically in the other's."""
    kwargs = {"lr": 0.01, "weight_decay": 0.05}
    if name != "RAdam":
        kwargs["amsgrad"] = amsgrad
    elif amsgrad:
        pytest.skip("RAdam has no amsgrad")
    source_cls, target_cls = getattr(torch.optim, name), getattr(rectified, name)
    if direction == "rectified->torch":
        source_cls, target_cls = target_cls, source_cls
    sequence = gradient_sequence(make_params(), 20, frozen=())

    def steps(optimizer, params, grads):
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            optimizer.step()

    reference_params = make_params()
    reference = source_cls(reference_params, **kwargs)
    steps(reference, reference_params, sequence)

    params = make_params()
    source = source_cls(params, **kwargs)
    steps(source, params, sequence[:10])
    checkpoint = roundtrip(source.state_dict())
    target = target_cls(params, **kwargs)
    target.load_state_dict(checkpoint)
    steps(target, params, sequence[10:])
    assert_close_relative(params, reference_params, rtol=1e-12)
    assert target.state_dict()["param_groups"][0]["lr"] == 0.01
