"""AdaBound against the update of Luo et al. written out per element, and its bounds."""

from __future__ import annotations

import math

import pytest
import torch

import rectified
from rectified.rules.adabound import adabound_bounds


def adabound_by_hand(theta, grads, lrs, final_lr, gamma, beta1, beta2, eps, amsbound):
    theta = list(theta)
    m, v, v_max = [0.0] * len(theta), [0.0] * len(theta), [0.0] * len(theta)
    base_lr = lrs[0]
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        final = final_lr * lr / base_lr
        lower = final * (1 - 1 / (gamma * t + 1))
        upper = final * (1 + 1 / (gamma * t))
        for i, gi in enumerate(g):
            m[i] = beta1 * m[i] + (1 - beta1) * gi
            v[i] = beta2 * v[i] + (1 - beta2) * gi * gi
            v_max[i] = max(v_max[i], v[i])
            second = v_max[i] if amsbound else v[i]
            step = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) / (math.sqrt(second) + eps)
            theta[i] -= min(max(step, lower), upper) * m[i]
    return theta


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("amsbound", [False, True])
def test_matches_hand_written_update_under_a_scheduler(amsbound, foreach):
    """lr halves every 10 steps; the bounds must follow (final_lr scaled by lr / base_lr)."""
    generator = torch.Generator().manual_seed(7)
    start = torch.randn(5, dtype=torch.float64, generator=generator)
    grads = [torch.randn(5, dtype=torch.float64, generator=generator) for _ in range(30)]
    lrs = [0.01 * 0.5 ** (t // 10) for t in range(30)]
    expected = adabound_by_hand(start.tolist(), [g.tolist() for g in grads], lrs, 0.1, 0.05,
                                0.9, 0.999, 1e-8, amsbound)
    theta = start.clone().requires_grad_()
    optimizer = rectified.AdaBound([theta], lr=0.01, final_lr=0.1, gamma=0.05,
                                   amsbound=amsbound, foreach=foreach)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)
    for g in grads:
        theta.grad = g.clone()
        optimizer.step()
        scheduler.step()
    assert theta.detach().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bounds_close_in_on_final_lr():
    lower, upper = adabound_bounds(1, 0.1, 1e-3)
    assert lower == pytest.approx(0.1 * (1 - 1 / 1.001)) and upper == pytest.approx(100.1)
    lower, upper = adabound_bounds(10**7, 0.1, 1e-3)
    assert lower == pytest.approx(0.1, rel=1e-3) and upper == pytest.approx(0.1, rel=1e-3)


def test_base_lr_is_saved_with_the_groups():
    p = torch.zeros(2, requires_grad=True)
    optimizer = rectified.AdaBound([p], lr=0.02)
    assert optimizer.state_dict()["param_groups"][0]["base_lr"] == 0.02
