"""Lookahead: slow weights that follow the fast weights of any inner optimizer.

Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back"
(arXiv 1907.08610). With slow weights φ and fast weights θ (the model's parameters):

    φ_0 = θ_0
    every step:   θ <- A(θ)                           (the inner optimizer's update)
    every k-th:   φ <- φ + α (θ - φ);   θ <- φ        (interpolate, then reset the fast weights)

so the slow weights are an exponential moving average of the fast weights at the end of each
inner loop. φ is taken from the parameters at the first step (not at construction), so weights
loaded after building the optimizer are the ones followed.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from itertools import chain, repeat
from operator import contains, is_
from typing import Any

import torch
from torch import Tensor

from rectified.engines import Stepper
from rectified.optim.checkpoints import check_state_dict, detached_copy

# Group keys (prefixed: inner optimizers have their own ``alpha``, e.g. RMSprop).
K, ALPHA, COUNTER = "lookahead_k", "lookahead_alpha", "lookahead_step"
SLOW = "slow_param"


def check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Invalid k value: {k} (expected an integer >= 1)")


def check_alpha(alpha: Any) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Invalid alpha value: {alpha} (expected 0 <= alpha <= 1)")


class LookaheadState(defaultdict):
    """Lookahead's per-parameter state: the slow weights, ``{SLOW: tensor}``.

    Code written for ordinary optimizers may assign a parameter's whole saved entry (inner
    moments and slow weights together), as ``ZeroRedundancyOptimizer.load_state_dict`` does
    with ``optimizer.state[p] = saved``; such an entry is split, and every key but the slow
    weights goes to the inner optimizer's state.
    """

    def __init__(self, wrapper: Lookahead) -> None:
        super().__init__(dict)
        self.wrapper = wrapper

    def __setitem__(self, param: Tensor, entry: dict[str, Any]) -> None:
        if isinstance(entry, dict) and any(key != SLOW for key in entry):
            inner = {key: value for key, value in entry.items() if key != SLOW}
            self.wrapper.optimizer.state[param] = inner
            entry = {key: value for key, value in entry.items() if key == SLOW}
        super().__setitem__(param, entry)

    def __reduce__(self):
        return (type(self), (self.wrapper,), None, None, iter(self.items()))


class Lookahead(torch.optim.Optimizer):
    """Lookahead around any ``torch.optim.Optimizer`` (``rectified``'s or torch's).

    ``param_groups`` are the inner optimizer's own list, so schedulers, ``add_param_group`` and
    hyperparameter changes reach both. Each group carries ``lookahead_k``, ``lookahead_alpha``
    (so groups may differ) and its sync counter ``lookahead_step``. ``state_dict`` holds the inner
    optimizer's state plus each parameter's slow weights (``slow_param``) and the counters, and
    ``load_state_dict`` restores all of them. Steps that move nothing (skipped for non-finite
    gradients, or with lr = 0 everywhere) do not count towards ``k``.

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
        self.defaults = {K: k, ALPHA: alpha}
        self.state: LookaheadState = LookaheadState(self)
        self._stepper = Stepper()
        self._init_hooks()
        for group in self.param_groups:
            self._prepare_group(group)

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
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        check_k(group[K])
        check_alpha(group[ALPHA])
        group.setdefault(COUNTER, 0)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        check_k(param_group.get(K, self.defaults[K]))
        check_alpha(param_group.get(ALPHA, self.defaults[ALPHA]))
        self.optimizer.add_param_group(param_group)
        self._prepare_group(self.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.compiler.disable(reason="rectified optimizers step eagerly")  # see RuleOptimizer
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step; every ``k``-th step of a group also moves its slow weights.

        A step the inner optimizer skipped (``skip_nonfinite``) or one with lr = 0 in every
        group (it moves nothing, e.g. the state initialisation of
        ``torch.distributed.checkpoint``) does not count towards ``k``.
        """
        for group in self.param_groups:
            self._prepare_group(group)  # validates k and alpha before anything moves
        self._take_slow_weights()
        skips = [group.get("nonfinite_skips", 0) for group in self.param_groups]
        loss = self.optimizer.step(closure)
        skipped = skips != [group.get("nonfinite_skips", 0) for group in self.param_groups]
        if skipped or all(float(group["lr"]) == 0.0 for group in self.param_groups):
            return loss
        for group in self.param_groups:
            group[COUNTER] += 1
            if group[COUNTER] % group[K] == 0:
                self._sync_(group)
        return loss

    def _take_slow_weights(self) -> None:
        """Copy the slow weights φ of every parameter that has none yet.

        Looking each parameter up costs a Python call per parameter (a tensor's hash), about
        0.4 ms a step for 1,000 parameters; so the parameters and the state's entries are
        remembered, and while both are the same objects and every entry still holds its slow
        weights, nothing is looked up.
        """
        params = [p for group in self.param_groups for p in group["params"]]
        known = getattr(self, "_slow_weights_known", None)
        if known is not None:
            known_params, known_entries = known
            entries = self.state.values()
            if (
                len(params) == len(known_params)
                and all(map(is_, params, known_params))
                and len(entries) == len(known_entries)
                and all(map(is_, entries, known_entries))
                and all(map(contains, known_entries, repeat(SLOW)))
            ):
                return
        for p in params:
            if SLOW not in self.state[p]:
                self.state[p][SLOW] = p.detach().clone()
        self._slow_weights_known = (tuple(params), tuple(self.state.values()))

    def _sync_(self, group: Mapping[str, Any]) -> None:
        """φ <- φ + α (θ - φ); θ <- φ, for every parameter of the group at once (one pass over
        each pair on the fused engine)."""
        if not group["params"]:
            return
        slots = [[self.state[p][SLOW] for p in group["params"]], list(group["params"])]
        alpha = float(group[ALPHA])

        def sync(ops: Any, slows: Any, params: Any) -> None:
            ops.lookahead_sync_(slows, params, alpha)

        self._stepper.elementwise(group, sync, slots)

    # -- state_dict ----------------------------------------------------------------------------
    def _param_ids(self) -> dict[int, int]:
        """Parameter -> index, numbered as torch.optim.Optimizer.state_dict numbers them."""
        ids: dict[int, int] = {}
        for p in chain.from_iterable(g["params"] for g in self.param_groups):
            ids.setdefault(id(p), len(ids))
        return ids

    def state_dict(self) -> dict[str, Any]:
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        inner = self.optimizer.state_dict()
        state = {index: dict(entry) for index, entry in inner["state"].items()}
        ids = self._param_ids()
        for p in chain.from_iterable(g["params"] for g in self.param_groups):
            if SLOW in self.state.get(p, {}):
                state.setdefault(ids[id(p)], {})[SLOW] = self.state[p][SLOW]
        state_dict = {**inner, "state": state}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        check_state_dict(self, state_dict)
        inner_state, slow = {}, {}
        for index, entry in state_dict["state"].items():
            entry = dict(entry)
            if SLOW in entry:
                slow[index] = entry.pop(SLOW)
            if entry:  # copied: torch.optim's own load keeps the caller's tensors
                inner_state[index] = detached_copy(entry)
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        by_id = dict(zip(saved_ids, params))
        self.optimizer.load_state_dict({**state_dict, "state": inner_state})
        self.state = LookaheadState(self)
        for index, tensor in slow.items():
            param = by_id[index]
            self.state[param][SLOW] = tensor.detach().to(param.device, param.dtype, copy=True)
        for group in self.param_groups:
            self._prepare_group(group)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "defaults": self.defaults, "state": self.state}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._stepper = Stepper()
        self._init_hooks()

    def __repr__(self) -> str:
        k, alpha = self.defaults[K], self.defaults[ALPHA]
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        return f"{type(self).__name__}(k={k}, alpha={alpha},\n{inner}\n)"
