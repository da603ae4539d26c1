"""Lookahead: slow weights that follow the fast weights of any inner optimizer.

Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back"
(arXiv 1907.08610). With slow weights φ and fast weights θ (the model's parameters):

    φ_0 = θ_0
    every step:   θ <- A(θ)                           (the inner optimizer's update)
    every k-th:   φ <- φ + α (θ - φ);   θ <- φ        (interpolate, then reset the fast weights)

so the slow weights are an exponential moving average of the fast weights at the end of each
inner loop. φ is taken from the parameters at the first step (not at construction), so weights
loaded after building the optimizer are the ones followed.

Nesting works: ``Lookahead(Lookahead(opt))`` is two independent Lookaheads, each with its own
keys (:mod:`rectified.wrappers.keys`). A parameter listed more than once (torch.optim warns
about it) is stepped as the inner optimizer steps it, but its slow weights are updated once per
sync, by the first group that lists it. The slow weights follow their parameter's dtype and
device (``model.to(torch.float64)`` mid-run): they are cast, as torch.optim casts state on load.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, repeat
from operator import contains
from typing import Any

import torch
from torch import Tensor

from rectified.engines import Stepper
from rectified.engines.identity import same_objects
from rectified.optim.checkpoints import detached_copy
from rectified.optim.eager import eager_step
from rectified.wrappers.checkpoint import check_lookahead_checkpoint
from rectified.wrappers.keys import LookaheadKeys, check_alpha, check_k, keys_for

# The keys of a Lookahead that wraps a plain optimizer (level 1).
K, ALPHA, COUNTER, SLOW = "lookahead_k", "lookahead_alpha", "lookahead_step", "slow_param"


class LookaheadState(defaultdict):
    """Lookahead's per-parameter state: the slow weights, ``{slow: tensor}``.

    Code written for ordinary optimizers may assign a parameter's whole saved entry (inner
    moments and slow weights together), as ``ZeroRedundancyOptimizer.load_state_dict`` does
    with ``optimizer.state[p] = saved``; such an entry is split, and every key but the slow
    weights goes to the inner optimizer's state. It refers to the inner optimizer, never to the
    wrapper, so a wrapper is freed by reference counting alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, slow: str = SLOW,
                 items: Iterable[tuple[Tensor, dict[str, Any]]] = ()) -> None:
        super().__init__(dict)
        self.optimizer, self.slow = optimizer, slow
        for param, entry in items:
            self[param] = entry

    def __setitem__(self, param: Tensor, entry: dict[str, Any]) -> None:
        if isinstance(entry, dict) and any(key != self.slow for key in entry):
            inner = {key: value for key, value in entry.items() if key != self.slow}
            self.optimizer.state[param] = inner
            entry = {key: value for key, value in entry.items() if key == self.slow}
        super().__setitem__(param, entry)

    def __reduce__(self):
        return (type(self), (self.optimizer, self.slow), None, None, iter(self.items()))


class Lookahead(torch.optim.Optimizer):
    """Lookahead around any ``torch.optim.Optimizer`` (``rectified``'s or torch's, or another
    Lookahead).

    ``param_groups`` are the inner optimizer's own list, and ``defaults`` hold the inner
    optimizer's defaults too, so schedulers (momentum cycling of ``OneCycleLR`` and ``CyclicLR``
    included), ``add_param_group`` and hyperparameter changes reach both. Each group carries
    ``lookahead_k``, ``lookahead_alpha`` (so groups may differ) and its sync counter
    ``lookahead_step`` (``lookahead2_k``, ... for a Lookahead around a Lookahead). ``state_dict``
    holds the inner optimizer's state plus each parameter's slow weights (``slow_param``) and the
    counters; ``load_state_dict`` checks all of it before restoring any. Steps that move nothing
    (skipped for non-finite gradients, or with lr = 0 everywhere) do not count towards ``k``.

    Args:
        optimizer: the inner optimizer A.
        k (int): inner steps between two slow-weight updates (default 5).
        alpha (float): slow-weight step size α in [0, 1] (default 0.5).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        check_k(k)
        check_alpha(alpha)
        self.optimizer = optimizer
        self.level: int = optimizer.level + 1 if isinstance(optimizer, Lookahead) else 1
        keys = self.keys
        self.defaults = {**optimizer.defaults, keys.k: k, keys.alpha: alpha}
        self.state: LookaheadState = LookaheadState(optimizer, keys.slow)
        self._stepper = Stepper()
        self._init_hooks()
        for group in self.param_groups:
            self._prepare_group(group)

    @property
    def keys(self) -> LookaheadKeys:
        """This wrapper's group and state keys (its level of nesting)."""
        return keys_for(self.level)

    def _init_hooks(self) -> None:
        # What torch.optim.Optimizer.__init__ sets up; its param bookkeeping is the inner one's.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    def _prepare_group(self, group: dict[str, Any]) -> None:
        keys = self.keys
        group.setdefault(keys.k, self.defaults[keys.k])
        group.setdefault(keys.alpha, self.defaults[keys.alpha])
        check_k(group[keys.k])
        check_alpha(group[keys.alpha])
        group.setdefault(keys.counter, 0)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        keys = self.keys
        check_k(param_group.get(keys.k, self.defaults[keys.k]))
        check_alpha(param_group.get(keys.alpha, self.defaults[keys.alpha]))
        self.optimizer.add_param_group(param_group)
        self._prepare_group(self.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @eager_step  # see RuleOptimizer.step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every ``k``-th step of a group also moves its slow weights.

        A step the inner optimizer skipped (``skip_nonfinite``) or one with lr = 0 in every
        group (it moves nothing, e.g. the state initialisation of
        ``torch.distributed.checkpoint``) does not count towards ``k``. At a step that syncs,
        the slow weights are checked against their parameters before the inner step.
        """
        keys, groups = self.keys, self.param_groups
        for group in groups:
            self._prepare_group(group)  # validates k and alpha before anything moves
        owned = self._take_slow_weights()
        for index, group in enumerate(groups):
            if (group[keys.counter] + 1) % group[keys.k] == 0:
                self._fit_slow_weights(index, group["params"])
        skips = [group.get("nonfinite_skips", 0) for group in groups]
        loss = self.optimizer.step(closure)
        skipped = skips != [group.get("nonfinite_skips", 0) for group in groups]
        if skipped or all(float(group["lr"]) == 0.0 for group in groups):
            return loss
        for group, params in zip(groups, owned):
            group[keys.counter] += 1
            if group[keys.counter] % group[keys.k] == 0:
                self._sync_(group, params)
        return loss

    def _take_slow_weights(self) -> list[list[Tensor]]:
        """Copy the slow weights φ of every parameter that has none yet; return, per group, the
        parameters whose slow weights it syncs (each parameter once, in the first group and
        position that lists it).

        Looking each parameter up costs a Python call per parameter (a tensor's hash), about
        0.4 ms a step for 1,000 parameters; so the parameters and the state's entries are
        remembered, and while both are the same objects and every entry still holds its slow
        weights, nothing is looked up.
        """
        slow, groups = self.keys.slow, self.param_groups
        params = [p for group in groups for p in group["params"]]
        sizes = tuple(len(group["params"]) for group in groups)
        known = self.__dict__.get("_slow_weights_known")
        if known is not None:
            known_params, known_sizes, known_entries, owned = known
            entries = self.state.values()
            if (
                sizes == known_sizes
                and same_objects(params, known_params)
                and same_objects(entries, known_entries)
                and all(map(contains, known_entries, repeat(slow)))
            ):
                return owned
        for p in params:
            if slow not in self.state[p]:
                self.state[p][slow] = p.detach().clone()
        seen: set[int] = set()
        owned = []
        for group in groups:
            mine = []
            for p in group["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    mine.append(p)
            owned.append(mine)
        self._slow_weights_known = (tuple(params), sizes, tuple(self.state.values()), owned)
        return owned

    def _fit_slow_weights(self, index: int, params: list[Tensor]) -> None:
        """Cast slow weights to their parameter's dtype and device where the parameter moved;
        refuse (before anything moves) a parameter whose shape changed."""
        slow = self.keys.slow
        for position, p in enumerate(params):
            entry = self.state[p]
            weights = entry[slow]
            if weights.shape != p.shape:
                raise ValueError(
                    f"{type(self).__name__}: parameter {position} of group {index} has shape "
                    f"{tuple(p.shape)}, its slow weights {tuple(weights.shape)}; a parameter's "
                    "shape cannot change during training")
            if weights.dtype != p.dtype or weights.device != p.device:
                entry[slow] = weights.to(device=p.device, dtype=p.dtype)

    def _sync_(self, group: Mapping[str, Any], params: list[Tensor]) -> None:
        """φ <- φ + α (θ - φ); θ <- φ, for the parameters ``params`` of ``group`` at once (one
        pass over each pair on the fused engine)."""
        if not params:
            return
        slow = self.keys.slow
        slots = [[self.state[p][slow] for p in params], list(params)]
        alpha = float(group[self.keys.alpha])

        def sync(ops: Any, slows: Any, params: Any) -> None:
            ops.lookahead_sync_(slows, params, alpha)

        self._stepper.elementwise(group, sync, slots)

    # -- state_dict ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        inner = self.optimizer.state_dict()
        state = {index: dict(entry) for index, entry in inner["state"].items()}
        slow = self.keys.slow
        # Numbered as the inner optimizer numbered them (torch.optim's rule, duplicates too).
        saved = chain.from_iterable(g["params"] for g in inner["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for p, index in zip(params, saved):
            if slow in self.state.get(p, {}):
                state.setdefault(index, {})[slow] = self.state[p][slow]
        state_dict = {**inner, "state": state}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a checkpoint of this wrapper, after checking all of it against the parameters
        (:mod:`rectified.wrappers.checkpoint`): a refused checkpoint changes nothing."""
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        keys = self.keys
        check_lookahead_checkpoint(self, keys, state_dict)
        inner_state, slow = {}, {}
        for index, entry in state_dict["state"].items():
            entry = dict(entry)
            if keys.slow in entry:
                slow[index] = entry.pop(keys.slow)
            if entry:  # copied: torch.optim's own load keeps the caller's tensors
                inner_state[index] = detached_copy(entry)
        own = [{key: group[key] for key in keys.group_keys} for group in state_dict["param_groups"]]
        inner_groups = [{key: value for key, value in group.items() if key not in keys.group_keys}
                        for group in state_dict["param_groups"]]
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        by_id = dict(zip(saved_ids, params))
        self.optimizer.load_state_dict(
            {**state_dict, "state": inner_state, "param_groups": inner_groups})
        self.state = LookaheadState(self.optimizer, keys.slow)
        self.__dict__.pop("_slow_weights_known", None)
        for index, tensor in slow.items():
            param = by_id[index]
            self.state[param][keys.slow] = tensor.detach().to(param.device, param.dtype, copy=True)
        for group, values in zip(self.param_groups, own):
            group.update(values)
            self._prepare_group(group)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "defaults": self.defaults, "state": self.state,
                "level": self.level}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("level", 1)
        # Rebuilt: a state pickled before it stopped referring to the wrapper holds the wrapper.
        self.state = LookaheadState(self.optimizer, self.keys.slow, self.state.items())
        self._stepper = Stepper()
        self._init_hooks()

    def __repr__(self) -> str:
        keys = self.keys
        k, alpha = self.defaults[keys.k], self.defaults[keys.alpha]
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        return f"{type(self).__name__}(k={k}, alpha={alpha},\n{inner}\n)"
