"""Lookahead composed with itself and with parameter lists that repeat a parameter, against
Lookahead worked out by hand, for every wrapped optimizer on every engine."""

from __future__ import annotations

import warnings

import pytest
import torch

import rectified
from tests.helpers import gradient_sequence, make_params
from tests.wrappers.support import ENGINES, ByHand, close, feed, inner_and_schedule, table

OUTER_K, OUTER_ALPHA, STEPS = 2, 0.7, 13


def groups_of(params, lr):
    return [{"params": params[:2]}, {"params": params[2:], "lr": lr * 0.5}]


def test_nested_lookahead_hand_computed_trajectory():
    """f(x) = x^2 / 2 from x = 1, SGD lr 0.1 (x <- 0.9 x); inner k = 2, alpha = 0.5; outer
    k = 3, alpha = 0.5. Worked out: 0.9; 0.81 -> inner slow 0.905; 0.8145 -> outer slow
    1 + 0.5 (0.8145 - 1) = 0.90725; 0.816525 -> inner slow 0.905 + 0.5 (0.816525 - 0.905)."""
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = rectified.Lookahead(rectified.Lookahead(torch.optim.SGD([x], lr=0.1), k=2), k=3)
    expected = [0.9, 0.905, 0.90725, 0.8607625]
    for value in expected:
        x.grad = x.detach().clone()
        opt.step()
        assert x.item() == pytest.approx(value, rel=1e-14)
    group = opt.param_groups[0]
    assert (group["lookahead_k"], group["lookahead2_k"]) == (2, 3)
    assert group["lookahead_step"] == group["lookahead2_step"] == 4


@table()
def test_lookahead_of_lookahead_is_two_independent_levels(case, engine):
    make_inner, k, alpha = inner_and_schedule(case)
    kwargs = {**case.kwargs, **ENGINES[engine]}
    params, twins = make_params(), make_params()
    nested = rectified.Lookahead(case.build(groups_of(params, kwargs["lr"]), **kwargs),
                                 k=OUTER_K, alpha=OUTER_ALPHA)
    hand = ByHand(make_inner(groups_of(twins, kwargs["lr"]), **kwargs),
                  [(k, alpha), (OUTER_K, OUTER_ALPHA)])
    for grads in gradient_sequence(params, STEPS):
        feed(params, grads)
        feed(twins, grads)
        nested.step()
        hand.step()
    close(params, twins)
    for group in nested.param_groups:
        assert (group["lookahead_k"], group["lookahead_alpha"]) == (k, alpha)
        assert (group["lookahead2_k"], group["lookahead2_alpha"]) == (OUTER_K, OUTER_ALPHA)
        assert group["lookahead_step"] == group["lookahead2_step"] == STEPS
    assert nested.defaults["lookahead2_k"] == OUTER_K and nested.defaults["lookahead_k"] == k


@pytest.mark.parametrize("where", ["same group", "two groups"])
@table()
def test_a_parameter_listed_twice_gets_one_slow_weight_update(case, engine, where):
    """The inner optimizer steps a repeated parameter as it always does (torch.optim warns);
    its slow weights move once per sync, on every engine."""
    make_inner, k, alpha = inner_and_schedule(case)
    kwargs = {**case.kwargs, **ENGINES[engine]}

    def build(params, constructor):
        groups = groups_of(params, kwargs["lr"])
        if where == "same group":
            groups[0]["params"] = [params[0], params[1], params[0]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.optim's duplicate warning
            optimizer = constructor(groups, **kwargs)
        if where == "two groups":  # torch.optim refuses it at construction, not after
            optimizer.param_groups[1]["params"].append(params[0])
        return optimizer

    params, twins = make_params(), make_params()
    wrapped = build(params, case.build)
    hand = ByHand(build(twins, make_inner), [(k, alpha)])
    for grads in gradient_sequence(params, 2 * k + 1):
        feed(params, grads)
        feed(twins, grads)
        wrapped.step()
        hand.step()
    close(params, twins)
