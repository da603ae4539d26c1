"""Checking a checkpoint against a Lookahead before anything of it is loaded.

A Lookahead checkpoint is the inner optimizer's, plus, per level of nesting, the keys of
:mod:`rectified.wrappers.keys` in every group and the slow weights in the state. Refused, with
the group, parameter and key named: a checkpoint that lacks this level's group keys (a plain
optimizer's, or one saved with fewer levels of Lookahead), one with keys of deeper levels (saved
with more), bad values of k, alpha or the counter, slow weights that are not a tensor of the
parameter's shape and kind, state for a parameter index no group lists, and a parameter with
inner state but no slow weights (slow weights are taken before any inner step, so a real
checkpoint never has the one without the other).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from rectified.optim.checkpoints import check_state_dict
from rectified.wrappers.keys import (
    LookaheadKeys,
    check_alpha,
    check_counter,
    check_k,
    level_of_key,
)

CHECKS = {"k": check_k, "alpha": check_alpha, "counter": check_counter}


def check_lookahead_checkpoint(optimizer: torch.optim.Optimizer, keys: LookaheadKeys,
                               state_dict: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if ``state_dict`` is not a checkpoint of ``optimizer`` (a
    Lookahead at ``keys.level``); changes nothing."""
    name = type(optimizer).__name__
    state = state_dict.get("state", {})
    if not isinstance(state, Mapping):
        raise ValueError(f"{name} checkpoint: 'state' is a {type(state).__name__}, expected a "
                         "mapping of parameter index to state")
    for saved, entry in state.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"{name} checkpoint: state for parameter index {saved!r} is a "
                             f"{type(entry).__name__}, expected a mapping")
    check_state_dict(optimizer, state_dict)
    for index, group in enumerate(state_dict["param_groups"]):
        for field, key in zip(CHECKS, keys.group_keys):
            if key not in group:
                raise ValueError(
                    f"{name} checkpoint: parameter group {index} has no {key!r}; it was not "
                    f"saved by a Lookahead nested {keys.level} deep")
            try:
                CHECKS[field](group[key])
            except ValueError as error:
                raise ValueError(
                    f"{name} checkpoint: parameter group {index}, {key!r}: {error}") from None
        _refuse_deeper(name, keys, group, f"parameter group {index}")
    _check_state(name, keys, state_dict)


def _refuse_deeper(name: str, keys: LookaheadKeys, entry: Mapping[str, Any], where: str) -> None:
    for key in entry:
        level = level_of_key(key)
        if level is not None and level > keys.level:
            raise ValueError(
                f"{name} checkpoint: {where} has {key!r}, saved by a Lookahead nested {level} "
                f"deep; this one is nested {keys.level} deep")


def _check_state(name: str, keys: LookaheadKeys, state_dict: Mapping[str, Any]) -> None:
    groups = state_dict["param_groups"]
    where_of = {saved: (g, position) for g, group in enumerate(groups)
                for position, saved in enumerate(group["params"])}
    for saved, entry in state_dict["state"].items():
        if saved not in where_of:
            raise ValueError(
                f"{name} checkpoint: state for parameter index {saved!r}, which no parameter "
                "group lists")
        group, position = where_of[saved]
        where = f"state of parameter {position} in group {group}"
        _refuse_deeper(name, keys, entry, where)
        if keys.slow in entry:
            if not isinstance(entry[keys.slow], Tensor):
                raise ValueError(
                    f"{name} checkpoint: {where}, {keys.slow!r} is a "
                    f"{type(entry[keys.slow]).__name__}, expected a tensor")
        elif entry:
            raise ValueError(
                f"{name} checkpoint: {where} has inner state ({', '.join(map(repr, entry))}) "
                f"but no {keys.slow!r}")
