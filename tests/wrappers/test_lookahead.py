"""Lookahead against a trajectory computed by hand, and its bookkeeping; Ranger's defaults."""

from __future__ import annotations

import pytest
import torch

import rectified
from tests.helpers import gradient_sequence, make_params


def test_lookahead_sgd_hand_computed_trajectory():
    """f(x) = x^2 / 2 from x = 1, SGD lr 0.1 (x <- 0.9 x), k = 2, alpha = 0.5."""
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    optimizer = rectified.Lookahead(torch.optim.SGD([x], lr=0.1), k=2, alpha=0.5)
    slow, fast = 1.0, 1.0
    expected = []
    for step in range(1, 9):
        fast = fast - 0.1 * fast
        if step % 2 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow
        expected.append(fast)
    # the first two values, worked out: 0.9, then 0.81 -> slow 1 + 0.5 (0.81 - 1) = 0.905
    assert expected[:2] == pytest.approx([0.9, 0.905])
    for value in expected:
        optimizer.zero_grad()
        (0.5 * x.square()).sum().backward()
        optimizer.step()
        assert x.item() == pytest.approx(value, rel=1e-15)
    assert optimizer.state[x]["slow_param"].item() == pytest.approx(expected[-1], rel=1e-15)


def test_param_groups_are_the_inner_optimizers():
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    inner = rectified.SGD([p], lr=0.1)
    wrapped = rectified.Lookahead(inner, k=3)
    assert wrapped.param_groups is inner.param_groups
    scheduler = torch.optim.lr_scheduler.StepLR(wrapped, step_size=1, gamma=0.5)
    p.grad = torch.ones(2)
    wrapped.step()
    scheduler.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.05)
    wrapped.add_param_group({"params": [q], "lr": 0.2})
    assert len(inner.param_groups) == 2 and inner.param_groups[1]["lookahead_k"] == 3


def test_state_dict_holds_slow_weights_and_counters():
    params = make_params()
    optimizer = rectified.Lookahead(rectified.Adam(params, lr=0.1), k=4, alpha=0.25)
    for grads in gradient_sequence(params, 6, frozen=()):
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
    saved = optimizer.state_dict()
    assert saved["param_groups"][0]["lookahead_step"] == 6
    assert all("slow_param" in saved["state"][i] for i in range(len(params)))
    fresh = [p.detach().clone().requires_grad_() for p in params]
    other = rectified.Lookahead(rectified.Adam(fresh, lr=0.1), k=4, alpha=0.25)
    other.load_state_dict(saved)
    assert other.param_groups[0]["lookahead_step"] == 6
    for p, q in zip(params, fresh):
        assert torch.equal(other.state[q]["slow_param"], optimizer.state[p]["slow_param"])
        inner, saved_inner = other.optimizer.state[q], optimizer.optimizer.state[p]
        assert torch.equal(inner["exp_avg"], saved_inner["exp_avg"])


def test_lookahead_rejects_non_optimizers():
    with pytest.raises(TypeError, match=r"wraps a torch\.optim\.Optimizer"):
        rectified.Lookahead([torch.zeros(1)])


def test_ranger_is_lookahead_around_radam_with_rangers_defaults():
    params = make_params()
    ranger = rectified.Ranger(params)
    assert isinstance(ranger.optimizer, rectified.RAdam)
    group = ranger.param_groups[0]
    assert (group["lookahead_k"], group["lookahead_alpha"]) == (6, 0.5)
    assert group["betas"] == (0.95, 0.999) and group["eps"] == 1e-5
    same = make_params()
    manual = rectified.Lookahead(rectified.RAdam(same, betas=(0.95, 0.999), eps=1e-5), k=6,
                                 alpha=0.5)
    for grads in gradient_sequence(params, 14, frozen=()):
        for p, q, g in zip(params, same, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ranger.step()
        manual.step()
    assert all(torch.equal(p, q) for p, q in zip(params, same))


@pytest.mark.parametrize("change", ["slow weights dropped", "entry replaced", "param appended"])
def test_slow_weights_are_taken_again_whenever_missing(change):
    """The wrapper remembers that every parameter has slow weights; any change to the state or
    the parameters must make it look again."""
    params = [torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)]
    opt = rectified.Lookahead(rectified.SGD(params, lr=0.1), k=100, alpha=0.5)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    target = params[0]
    if change == "slow weights dropped":
        opt.state[target].pop("slow_param")
    elif change == "entry replaced":
        opt.state[target] = {}
    else:
        target = torch.randn(4, requires_grad=True)
        opt.param_groups[0]["params"].append(target)
        params.append(target)
    before = target.detach().clone()
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(opt.state[target]["slow_param"], before)
