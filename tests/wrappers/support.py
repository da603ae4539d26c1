"""The tables the wrapper tests run over, and Lookahead worked out by hand to compare with.

``WRAPPED``: every optimizer of the registry inside a Lookahead, plus the registry's own
wrappers (Lookahead around torch's Adam, Ranger). ``ENGINES``: the constructor arguments that
pick each engine. :func:`by_hand` is Lookahead written out with plain tensor ops around a plain
inner optimizer, independent of :mod:`rectified.wrappers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

import rectified
from tests.registry import CASES, Case

ENGINES: dict[str, dict[str, Any]] = {
    "reference": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}

K, ALPHA = 3, 0.4  # the Lookahead put around the registry's plain optimizers


def _wrap(case: Case) -> Case:
    def build(params: Any, **kwargs: Any):  # every kwarg is the inner's (RMSprop has an alpha)
        return rectified.Lookahead(case.build(params, **kwargs), k=K, alpha=ALPHA)

    return Case(f"Lookahead around {case.name}", build, case.kwargs, wrapper=True,
                extra={"inner": case, "k": K, "alpha": ALPHA})


def _inner_of_wrapper(case: Case) -> tuple[Callable[..., torch.optim.Optimizer], int, float]:
    """(inner optimizer's constructor, k, alpha) of a registry wrapper."""
    if case.name == "Ranger":
        def radam(params: Any, **kwargs: Any) -> torch.optim.Optimizer:
            return rectified.RAdam(params, **{"betas": (0.95, 0.999), "eps": 1e-5,
                                              "decoupled_weight_decay": True, **kwargs})
        return radam, 6, 0.5
    if case.name == "Lookahead(SGD)":
        return rectified.SGD, 3, 0.5
    if case.name == "Lookahead(torch Adam)":
        return torch.optim.Adam, 4, 0.3
    raise KeyError(case.name)


WRAPPED: tuple[Case, ...] = (
    *(_wrap(case) for case in CASES if not case.wrapper),
    *(case for case in CASES if case.wrapper),
)


def inner_and_schedule(case: Case) -> tuple[Callable[..., torch.optim.Optimizer], int, float]:
    """The plain inner optimizer's constructor, k and alpha of a ``WRAPPED`` case."""
    if "inner" in case.extra:
        return case.extra["inner"].build, case.extra["k"], case.extra["alpha"]
    return _inner_of_wrapper(case)


def table(cases: Sequence[Case] = WRAPPED) -> Any:
    """pytest parameters: every case on every engine."""
    return pytest.mark.parametrize(
        ("case", "engine"),
        [(case, engine) for case in cases for engine in ENGINES],
        ids=[f"{case.name}-{engine}" for case in cases for engine in ENGINES],
    )


def unique(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return list({id(p): p for p in params}.values())


class ByHand:
    """Lookahead levels written out around a plain inner optimizer: level 1 syncs first.

    ``levels`` are (k, alpha) pairs, innermost first. The slow weights of each parameter (once,
    however often it is listed) are taken at the first step and follow its dtype and device.
    """

    def __init__(self, inner: torch.optim.Optimizer, levels: Sequence[tuple[int, float]]):
        self.inner, self.levels = inner, list(levels)
        self.slow: list[dict[int, torch.Tensor]] = [{} for _ in levels]
        self.count = 0

    @property
    def params(self) -> list[torch.Tensor]:
        return unique([p for g in self.inner.param_groups for p in g["params"]])

    @torch.no_grad()
    def step(self) -> None:
        for slow in self.slow:
            for p in self.params:
                slow.setdefault(id(p), p.detach().clone())
        self.inner.step()
        self.count += 1
        for (k, alpha), slow in zip(self.levels, self.slow):
            if self.count % k:
                continue
            for p in self.params:
                phi = slow[id(p)].to(p.dtype)
                phi = phi + alpha * (p - phi)
                slow[id(p)] = phi
                p.copy_(phi)


def feed(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
    for p, g in zip(params, grads):
        p.grad = None if g is None else g.clone().to(p.dtype)


def close(actual: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
          rtol: float = 1e-12) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.detach(), e.detach(), rtol=rtol, atol=rtol)
