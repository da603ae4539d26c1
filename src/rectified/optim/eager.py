"""Optimizer steps run eagerly under ``torch.compile``, without importing the compiler early.

``torch.compiler.disable`` applied at class definition imports ``torch._dynamo``, almost a
second at ``import rectified`` for programs that never compile. :func:`eager_step` wraps a
step so that the disabled version is made at its first call instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

Step = TypeVar("Step", bound=Callable[..., Any])

REASON = "rectified optimizers step eagerly"


def eager_step(step: Step) -> Step:
    """``step`` as a graph break under ``torch.compile``: it runs eagerly (its per-step scalars
    are Python numbers of the step count, which would recompile every step if traced, and the
    fused kernel is already one pass over the tensors), while the code around it is compiled."""
    disabled: Callable[..., Any] | None = None

    @functools.wraps(step)
    def run(*args: Any, **kwargs: Any) -> Any:
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(step, reason=REASON)
        return disabled(*args, **kwargs)

    return run  # type: ignore[return-value]
