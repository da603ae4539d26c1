"""torch's momentum-cycling schedulers (``OneCycleLR``, ``CyclicLR`` with ``cycle_momentum``)
drive Lookahead and Ranger: they find the inner optimizer's ``momentum`` or ``betas`` in
``defaults`` and their writes reach the inner optimizer. Held against torch.optim's own
optimizer under the same schedule, with the slow-weight sync worked out by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import rectified
from tests.helpers import gradient_sequence, make_params
from tests.wrappers.support import ENGINES, ByHand, close, feed

STEPS = 14


def one_cycle(optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.05, total_steps=STEPS, base_momentum=0.8, max_momentum=0.95)


def cyclic(optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=0.01, max_lr=0.05, step_size_up=3, base_momentum=0.8,
        max_momentum=0.9)


# name: (the wrapper, torch.optim's optimizer it must match, k, alpha)
RANGER_TORCH = {"betas": (0.95, 0.999), "eps": 1e-5, "decoupled_weight_decay": True}
OPTIMIZERS: dict[str, tuple[Callable[..., Any], Callable[..., Any], int, float]] = {
    "Lookahead(SGD)": (
        lambda p, **e: rectified.Lookahead(rectified.SGD(p, lr=0.01, momentum=0.9, **e), k=3),
        lambda p, **e: torch.optim.SGD(p, lr=0.01, momentum=0.9, **e), 3, 0.5),
    "Lookahead(Adam)": (
        lambda p, **e: rectified.Lookahead(rectified.Adam(p, lr=0.01, **e), k=4, alpha=0.3),
        lambda p, **e: torch.optim.Adam(p, lr=0.01, **e), 4, 0.3),
    "Ranger": (
        lambda p, **e: rectified.Ranger(p, lr=0.01, weight_decay=0.01, **e),
        lambda p, **e: torch.optim.RAdam(p, lr=0.01, weight_decay=0.01, **RANGER_TORCH, **e),
        6, 0.5),
}


def momentum_of(group: dict[str, Any]) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("schedule", [one_cycle, cyclic], ids=["OneCycleLR", "CyclicLR"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_momentum_cycling_reaches_the_inner_optimizer(name, schedule, engine):
    build, torch_build, k, alpha = OPTIMIZERS[name]
    params, twins = make_params(), make_params()
    wrapped = build(params, **ENGINES[engine])
    hand = ByHand(torch_build(twins, foreach=False), [(k, alpha)])
    scheduler, torch_scheduler = schedule(wrapped), schedule(hand.inner)
    momenta = []
    for grads in gradient_sequence(params, STEPS - 1):
        feed(params, grads)
        feed(twins, grads)
        wrapped.step()
        hand.step()
        scheduler.step()
        torch_scheduler.step()
        group, torch_group = wrapped.param_groups[0], hand.inner.param_groups[0]
        assert momentum_of(group) == momentum_of(torch_group)
        assert group["lr"] == torch_group["lr"]
        momenta.append(momentum_of(group))
    assert len(set(momenta)) > 3  # the momentum did cycle
    close(params, twins, rtol=1e-10)
