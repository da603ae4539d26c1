"""Checkpoints of Lookahead and Ranger (nested ones too): ``state_dict`` after a load equals
the one loaded and training resumes bit-exactly; a tampered or foreign checkpoint is refused,
naming the key, before anything changes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import rectified
from tests.helpers import gradient_sequence, make_params, roundtrip
from tests.registry import CASES
from tests.wrappers.support import ENGINES, WRAPPED, feed, inner_and_schedule, table


def assert_same(a: Any, b: Any, where: str = "state_dict") -> None:
    """Equal structure and values; tensors equal in dtype, shape and every bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def groups_of(params, lr):
    return [{"params": params[:2]}, {"params": params[2:], "lr": lr * 0.5}]


def trained(case, engine, nested: bool, params=None, steps: int | None = None):
    """The case's optimizer (inside one more Lookahead if ``nested``) after some steps."""
    kwargs = {**case.kwargs, **ENGINES[engine]}
    params = make_params() if params is None else params
    optimizer = case.build(groups_of(params, kwargs["lr"]), **kwargs)
    if nested:
        optimizer = rectified.Lookahead(optimizer, k=2, alpha=0.7)
    _, k, _ = inner_and_schedule(case)
    for grads in gradient_sequence(params, k + 2 if steps is None else steps, frozen=()):
        feed(params, grads)
        optimizer.step()
    return optimizer, params


def plain(case, engine):
    """The case's inner optimizer alone, after some steps."""
    make_inner, k, _ = inner_and_schedule(case)
    kwargs = {**case.kwargs, **ENGINES[engine]}
    params = make_params()
    optimizer = make_inner(groups_of(params, kwargs["lr"]), **kwargs)
    for grads in gradient_sequence(params, k + 2, frozen=()):
        feed(params, grads)
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("nested", [False, True], ids=["", "nested"])
@table()
def test_load_gives_back_the_same_state_dict_and_resumes_bit_exactly(case, engine, nested):
    optimizer, params = trained(case, engine, nested)
    saved = optimizer.state_dict()
    twins = [p.detach().clone().requires_grad_() for p in params]
    other, _ = trained(case, engine, nested, params=twins, steps=0)
    other.load_state_dict(roundtrip(saved))
    assert_same(other.state_dict(), saved)
    optimizer.load_state_dict(roundtrip(saved))  # into the optimizer that saved it
    assert_same(optimizer.state_dict(), saved)
    for grads in gradient_sequence(params, 7, seed=5, frozen=()):
        feed(params, grads)
        feed(twins, grads)
        optimizer.step()
        other.step()
    assert all(torch.equal(p, q) for p, q in zip(params, twins))


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict], None]:
    def tamper(state_dict: dict) -> None:
        *parents, last = path
        target = state_dict
        for key in parents:
            target = target[key]
        target[last] = value
    return tamper


def _drop(path: tuple[Any, ...]) -> Callable[[dict], None]:
    def tamper(state_dict: dict) -> None:
        *parents, last = path
        target = state_dict
        for key in parents:
            target = target[key]
        del target[last]
    return tamper


def _foreign_level(nested_by: int) -> Callable[[dict], None]:
    def tamper(state_dict: dict) -> None:
        key = "lookahead2_k" if nested_by == 2 else "lookahead3_k"
        state_dict["param_groups"][1][key] = 2
    return tamper


# (id, tamper of a saved state dict, the message)
TAMPERS = [
    ("counter -1", _set(("param_groups", 0, "lookahead_step"), -1),
     r"group 0, 'lookahead_step': Invalid step counter: -1"),
    ("counter nan", _set(("param_groups", 1, "lookahead_step"), math.nan),
     r"group 1, 'lookahead_step': Invalid step counter: nan"),
    ("counter string", _set(("param_groups", 0, "lookahead_step"), "3"),
     r"group 0, 'lookahead_step': Invalid step counter: '3'"),
    ("counter tensor", _set(("param_groups", 0, "lookahead_step"), torch.zeros(2)),
     r"group 0, 'lookahead_step': Invalid step counter"),
    ("k 0", _set(("param_groups", 1, "lookahead_k"), 0), r"'lookahead_k': Invalid k value: 0"),
    ("alpha 2", _set(("param_groups", 0, "lookahead_alpha"), 2.0),
     r"'lookahead_alpha': Invalid alpha value: 2.0"),
    ("no counter", _drop(("param_groups", 0, "lookahead_step")),
     r"group 0 has no 'lookahead_step'"),
    ("slow weights of another shape", _set(("state", 0, "slow_param"), torch.zeros(3, 4)),
     r"'slow_param' of parameter 0 in group 0 has shape \(3, 4\)"),
    ("slow weights not a tensor", _set(("state", 2, "slow_param"), [0.0] * 4),
     r"parameter 0 in group 1, 'slow_param' is a list"),
    ("slow weights missing", _drop(("state", 3, "slow_param")),
     r"parameter 1 in group 1 has inner state .* but no 'slow_param'"),
    ("state of no parameter", _set(("state", 99), {"slow_param": torch.zeros(1)}),
     r"state for parameter index 99, which no parameter group lists"),
    ("saved one level deeper", _foreign_level(2),
     r"group 1 has 'lookahead2_k', saved by a Lookahead nested 2 deep; this one is nested 1"),
    ("slow weights of a deeper level", _set(("state", 0, "slow_param3"), torch.zeros(4, 3)),
     r"parameter 0 in group 0 has 'slow_param3', saved by a Lookahead nested 3 deep"),
]

# The wrappers whose inner optimizer keeps state for every parameter (so "slow weights
# missing" is a tampering): the registry's, on every engine.
REGISTRY_WRAPPERS = tuple(case for case in WRAPPED if case in CASES)


@pytest.mark.parametrize(("tamper", "message"), [t[1:] for t in TAMPERS],
                         ids=[t[0] for t in TAMPERS])
@table(REGISTRY_WRAPPERS)
def test_a_tampered_checkpoint_is_refused_before_anything_changes(case, engine, tamper,
                                                                  message):
    optimizer, params = trained(case, engine, nested=False)
    saved = roundtrip(optimizer.state_dict())
    tamper(saved)
    before = optimizer.state_dict()
    values = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(saved)
    assert_same(optimizer.state_dict(), before)
    assert all(torch.equal(p, v) for p, v in zip(params, values))


@pytest.mark.parametrize("source", ["plain inner", "nested", "single"])
@table(REGISTRY_WRAPPERS)
def test_a_foreign_checkpoint_is_refused(case, engine, source):
    """A plain optimizer's checkpoint, or one saved with another depth of Lookahead."""
    nested = source == "single"  # the optimizer loading it
    optimizer, _ = trained(case, engine, nested=nested)
    if source == "plain inner":
        foreign, message = plain(case, engine).state_dict(), r"group 0 has no 'lookahead_k'"
    elif source == "nested":
        foreign = trained(case, engine, nested=True)[0].state_dict()
        message = r"has 'lookahead2_k', saved by a Lookahead nested 2 deep"
    else:
        foreign = trained(case, engine, nested=False)[0].state_dict()
        message = r"group 0 has no 'lookahead2_k'; it was not saved by a Lookahead nested 2"
    before = optimizer.state_dict()
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(roundtrip(foreign))
    assert_same(optimizer.state_dict(), before)
