"""Checkpoints, for every configuration of torch's database: ``state_dict()`` is unchanged by
loading it back, carries every key torch's carries, and checkpoints move both ways between
torch's class and rectified's, after which both follow the same trajectory."""

from __future__ import annotations

import io

import pytest
import torch

from tests.torch_suite.cases import (
    all_configurations,
    assert_close,
    case_id,
    clone_params,
    configurations,
    fresh,
    gradients,
    make_params,
    ours_class,
    step_through,
    torch_class,
)

CASES = all_configurations()
PRIME, CONTINUE = 3, 3


def _primed(cls, kwargs, base):
    params = clone_params(base)
    optimizer = cls(params, **fresh(kwargs))
    step_through(optimizer, params, gradients(params, PRIME))
    return optimizer, params


def _through_disk(state_dict):
    """torch.save then torch.load(weights_only=True), as a checkpoint file would be."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same_structure(actual, expected, where="state_dict"):
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: not a dict"
        assert sorted(map(str, actual)) == sorted(map(str, expected)), (
            f"{where}: keys {sorted(map(str, actual))} != {sorted(map(str, expected))}"
        )
        for key in expected:
            _assert_same_structure(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), f"{where}: length"
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_same_structure(a, e, f"{where}[{i}]")
    elif torch.is_tensor(expected):
        assert torch.is_tensor(actual) and actual.dtype == expected.dtype, f"{where}: dtype"
        assert torch.equal(actual, expected), f"{where}: values"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_unchanged_by_loading_it(case):
    """Loading an optimizer's own state_dict, into itself or into a fresh twin, gives back the
    same state_dict: no key added, none dropped, no value changed."""
    name, index = case
    kwargs = configurations(name)[index]
    base = make_params()
    optimizer, _ = _primed(ours_class(name), kwargs, base)
    before = fresh(optimizer.state_dict())
    optimizer.load_state_dict(fresh(before))
    _assert_same_structure(optimizer.state_dict(), before)
    twin = ours_class(name)(clone_params(base), **fresh(kwargs))
    twin.load_state_dict(_through_disk(before))
    _assert_same_structure(twin.state_dict(), before)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_group_keys_cover_torch(case):
    """Every param-group key torch's class saves is saved by rectified's with the same value
    (rectified may save more, e.g. RAdam's ``threshold``)."""
    name, index = case
    kwargs = configurations(name)[index]
    base = make_params()
    theirs = _primed(torch_class(name), kwargs, base)[0].state_dict()["param_groups"]
    ours = _primed(ours_class(name), kwargs, base)[0].state_dict()["param_groups"]
    for mine, group in zip(ours, theirs):
        missing = sorted(set(group) - set(mine))
        assert not missing, f"{name} groups lack torch's keys {missing}"
        for key, value in group.items():
            if torch.is_tensor(value):
                assert torch.equal(torch.as_tensor(mine[key]), value), key
            else:
                assert mine[key] == value, f"{key}: {mine[key]!r} != torch's {value!r}"


def _continue_both(name, kwargs, first, second, base):
    """Prime ``first`` (a class), load its checkpoint into ``second``, then step both on the same
    gradients and compare."""
    optimizer, params = _primed(first, kwargs, base)
    other_params = clone_params([p.detach() for p in params])
    other = second(other_params, **fresh(kwargs))
    other.load_state_dict(_through_disk(optimizer.state_dict()))
    sequence = gradients(params, CONTINUE, seed=5)
    step_through(optimizer, params, sequence)
    step_through(other, other_params, sequence)
    for i, (p, q) in enumerate(zip(other_params, params)):
        assert_close(p, q, f"{name}: parameter {i} after the loaded run")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_torch_checkpoint_loads_into_rectified(case):
    name, index = case
    _continue_both(name, configurations(name)[index], torch_class(name), ours_class(name),
                   make_params())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rectified_checkpoint_loads_into_torch(case):
    name, index = case
    _continue_both(name, configurations(name)[index], ours_class(name), torch_class(name),
                   make_params())
