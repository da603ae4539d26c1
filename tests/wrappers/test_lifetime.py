"""A Lookahead (and Ranger) holds no reference cycle: when the last reference goes, the model,
its gradients and the optimizer's state are freed at once, by reference counting alone."""

from __future__ import annotations

import gc
import weakref

import torch

import rectified
from tests.helpers import gradient_sequence
from tests.wrappers.support import ENGINES, feed, inner_and_schedule, table


def train_and_drop(case, engine, nested):
    """Train a small model a few steps; return weak references to what must be freed."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model.double()
    kwargs = {**case.kwargs, **ENGINES[engine]}
    optimizer = case.build(model.parameters(), **kwargs)
    if nested:
        optimizer = rectified.Lookahead(optimizer, k=2)
    params = list(model.parameters())
    _, k, _ = inner_and_schedule(case)
    for grads in gradient_sequence(params, k + 1, frozen=()):
        feed(params, grads)
        optimizer.step()
    refs = [weakref.ref(model), weakref.ref(optimizer), weakref.ref(params[0].grad)]
    refs += [weakref.ref(t) for entry in optimizer.state.values() for t in entry.values()
             if isinstance(t, torch.Tensor)]
    inner = optimizer.optimizer
    refs += [weakref.ref(inner)]
    refs += [weakref.ref(t) for entry in inner.state.values() for t in entry.values()
             if isinstance(t, torch.Tensor)]
    return refs


@table()
def test_everything_is_freed_by_reference_counting(case, engine):
    # A first optimizer in a process makes torch import modules lazily, and one of those
    # imports keeps its callers' frames; that happens once, with the collector on.
    train_and_drop(case, engine, nested=True)
    gc.collect()
    gc.disable()
    try:
        for nested in (False, True):
            refs = train_and_drop(case, engine, nested)
            alive = [r() for r in refs if r() is not None]
            assert not alive, f"still alive without the garbage collector: {alive[:3]}"
    finally:
        gc.enable()
